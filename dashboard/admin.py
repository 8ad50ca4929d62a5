"""The admin site, opened by permission: staff, or anyone whose role may change connections (the Admin group).

Views check permissions, not group names or flags; Django's own site admits `is_staff` users only.
"""

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm

ADMIN_PERMISSION = "batches.change_connection"


def may_use_admin(user) -> bool:
    return user.is_active and (user.is_staff or user.has_perm(ADMIN_PERMISSION))


class AdminLoginForm(AdminAuthenticationForm):
    def confirm_login_allowed(self, user):
        if not may_use_admin(user):
            super().confirm_login_allowed(user)  # raises Django's own "inactive" or "not staff" error


class BatchboardAdminSite(admin.AdminSite):
    site_header = "Batchboard administration"
    site_title = "Batchboard admin"
    login_form = AdminLoginForm

    def has_permission(self, request):
        return may_use_admin(request.user)
