from django.urls import path, register_converter

from . import converters, views

register_converter(converters.ApiIdConverter, "apiid")
batch = "batches/<slug:slug>/<apiid:batch_id>/"

urlpatterns = [
    path("", views.batch_list, name="batch-list"),
    path(batch, views.batch_detail, name="batch-detail"),
    path(batch + "files/", views.batch_files, name="batch-files"),
    path(batch + "files/<str:kind>/", views.batch_download, name="batch-download"),
    path(batch + "cancel/", views.batch_cancel, name="batch-cancel"),
    path(batch + "refresh/", views.batch_refresh, name="batch-refresh"),
    path("healthz", views.healthz, name="healthz"),
]
