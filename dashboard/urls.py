from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("accounts.urls")),
    path("", include("batches.urls")),
    path("", include("teams.urls")),
    path("", include("notifications.urls")),
    path("", include("usage.urls")),
]

handler403 = "accounts.views.permission_denied"
