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
    actions = ["logout_everywhere"]

    @admin.action(description="Log out everywhere (end every session)", permissions=["change"])
    def logout_everywhere(self, request, queryset):
        for user in queryset:
            sessions.logout_everywhere(user, by=request.user)
        self.message_user(request, f"Logged {len(queryset)} user(s) out everywhere.")
