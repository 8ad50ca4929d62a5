from django.contrib import admin

from .forms import AdminLoginForm
from .models import LoginThrottle

admin.site.login_form = AdminLoginForm


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

