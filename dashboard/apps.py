from django.contrib.admin.apps import AdminConfig


class BatchboardAdminConfig(AdminConfig):
    """django.contrib.admin with our site as `admin.site` (Django's documented way to replace the default site)."""

    default_site = "dashboard.admin.BatchboardAdminSite"
