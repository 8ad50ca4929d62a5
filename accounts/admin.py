from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth.models import User

from . import sessions
from .models import LoginThrottle

@admin.register(LoginThrottle)
class LoginThrottleAdmin(admin.ModelAdmin):
    """Who is being refused right now. Deleting a row lifts its refusal."""

    list_display = ("username", "ip", "failures", "window_ends", "retry_at")
    search_fields = ("username", "ip")
    ordering = ("-window_ends",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


admin.site.unregister(User)


@admin.register(User)
class UserAdmin(auth_admin.UserAdmin):
    """Admins give roles (groups); only superusers grant superuser status or single permissions, and only
    they change, delete or log out a superuser."""

    actions = ["logout_everywhere"]

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return fields if request.user.is_superuser else [*fields, "is_superuser", "user_permissions"]

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and _may_touch(request.user, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and _may_touch(request.user, obj)

    @admin.action(description="Log out everywhere (end every session)", permissions=["change"])
    def logout_everywhere(self, request, queryset):
        users = [user for user in queryset if _may_touch(request.user, user)]
        for user in users:
            sessions.logout_everywhere(user, by=request.user)
        skipped = f" Skipped {len(queryset) - len(users)} superuser(s)." if len(users) < len(queryset) else ""
        self.message_user(request, f"Logged {len(users)} user(s) out everywhere.{skipped}")


def _may_touch(actor, user) -> bool:
    return user is None or not user.is_superuser or actor.is_superuser
