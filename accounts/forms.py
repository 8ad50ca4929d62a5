from datetime import timedelta

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from batches.templatetags.batchboard import duration

from . import identities, throttle


class LoginForm(AuthenticationForm):
    """Django's log-in form, counted by the throttle before the password is checked."""

    retry_after = 0  # seconds, when refused

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if not username or not password:
            return super().clean()
        ip = throttle.client_ip(self.request)
        self.retry_after = throttle.reserve_attempt(username=username, ip=ip)
        if self.retry_after:
            raise ValidationError(f"Too many failed log-ins. Try again in {duration(timedelta(seconds=self.retry_after))}.",
                                  code="throttled")
        try:
            cleaned = super().clean()
        finally:
            if self.user_cache is not None:  # the password was right (even if the user may not log in here)
                throttle.release_attempt(username=username, ip=ip)
        # With LOCAL_LOGIN=0 the answer is the same as for a wrong password: the form tells nobody whose password
        # was right.
        if not identities.password_login_allowed(self.user_cache, request=self.request):
            raise self.get_invalid_login_error()
        return cleaned


def may_use_admin(user) -> bool:
    """The admin site admits staff, and anyone whose role may change connections (the Admin group)."""
    return user.is_active and (user.is_staff or user.has_perm("batches.change_connection"))


class AdminLoginForm(LoginForm, AdminAuthenticationForm):
    """The admin's log-in form (dashboard/admin.py), counted by the same throttle, admitting by permission."""

    def confirm_login_allowed(self, user):
        if not may_use_admin(user):
            super().confirm_login_allowed(user)  # raises Django's own "inactive" or "not staff" error
