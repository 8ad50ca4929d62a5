from datetime import datetime, timedelta, timezone

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views import defaults
from django.views.decorators.http import require_GET, require_POST

from batches import audit

from . import sessions
from .forms import LoginForm


class LoginView(auth_views.LoginView):
    """Django's log-in with the throttled form; a refusal answers 429 with Retry-After."""

    authentication_form = LoginForm
    redirect_authenticated_user = True

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.retry_after:
            response.status_code = 429
            response["Retry-After"] = str(form.retry_after)
        return response


@login_required
@require_GET
def account(request):
    login_at = request.session.get(sessions.LOGIN_AT)
    started = datetime.fromtimestamp(login_at, tz=timezone.utc) if login_at else None
    return render(request, "accounts/account.html", {
        "started": started,
        "ends": started + timedelta(seconds=settings.SESSION_COOKIE_AGE) if started else None,
        "idle": timedelta(seconds=settings.SESSION_IDLE_SECONDS),
    })


@login_required
@require_POST
def logout_everywhere(request):
    sessions.logout_everywhere(request.user, by=request.user)
    logout(request)
    messages.success(request, "You were logged out everywhere, here too.")
    return redirect("login")


def sign_in_options(request):
    """Context processor: what the log-in pages (ours and the admin's) offer."""
    return {"OIDC_ENABLED": bool(settings.OIDC_ISSUER), "OIDC_PROVIDER_NAME": settings.OIDC_PROVIDER_NAME,
            "LOCAL_LOGIN": settings.LOCAL_LOGIN}


def permission_denied(request, exception):
    """handler403: every PermissionDenied, the admin's included, is audited, then Django's own 403 page."""
    audit.record("forbidden", actor=request.user, request=request, ok=False, detail=f"{request.method} {request.path}")
    return defaults.permission_denied(request, exception)
