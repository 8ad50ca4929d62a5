from django.urls import path

from . import views

urlpatterns = [
    path("usage/", views.usage_page, name="usage"),
    path("usage/<str:kind>.csv", views.usage_export, name="usage-export"),
    path("usage/prices/", views.price_list, name="usage-prices"),
    path("usage/prices/<int:pk>/", views.price_edit, name="usage-price"),
    path("usage/prices/<int:pk>/delete/", views.price_delete, name="usage-price-delete"),
    path("usage/budgets/", views.budget_list, name="usage-budgets"),
    path("usage/budgets/<int:pk>/", views.budget_edit, name="usage-budget"),
    path("usage/budgets/<int:pk>/delete/", views.budget_delete, name="usage-budget-delete"),
]
