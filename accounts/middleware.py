from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import resolve_url
from django_htmx.http import HttpResponseClientRedirect

from . import sessions

POLL_HEADER = "X-Batchboard-Poll"  # set by static/batchboard/app.js on requests of [data-poll] elements


class SessionLimitsMiddleware:
    """Ends sessions that are idle, too old or logged out everywhere (sessions.py), and notes activity.

    An htmx request sent to the log-in page gets `HX-Redirect` instead of a redirect: htmx would
    follow a redirect itself and swap the log-in form into the page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            reason = sessions.ended(request)
            if reason:
                logout(request)
                messages.info(request, reason)
            elif request.headers.get(POLL_HEADER) != "1":
                sessions.note_activity(request)
        response = self.get_response(request)
        if request.htmx and response.status_code == 302 and _is_login(response["Location"]):
            return HttpResponseClientRedirect(redirect_to_login(request.htmx.current_url_abs_path or "/").url)
        return response


def _is_login(location: str) -> bool:
    return location.split("?")[0] == resolve_url(settings.LOGIN_URL)
