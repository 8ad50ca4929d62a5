"""The admin site, opened by permission: staff, or anyone whose role may change connections (the Admin group).

Views check permissions, not group names or flags; Django's own site admits `is_staff` users only.
"""

from django.contrib import admin

from accounts.forms import AdminLoginForm, may_use_admin


class BatchboardAdminSite(admin.AdminSite):
    site_header = "Batchboard administration"
    site_title = "Batchboard admin"
    login_form = AdminLoginForm

    def has_permission(self, request):
        return may_use_admin(request.user)
