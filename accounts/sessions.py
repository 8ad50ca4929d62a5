"""Session limits: an idle timeout, an absolute lifetime, and "log out everywhere".

A session stores when it logged in, when it was last active and the user's session epoch at log-in.
Activity is written at most once a minute and never by a live poll, so open pages do not keep a
session alive and polls never write the session.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import backends, get_user_model
from django.contrib.auth.models import Permission
from django.db.models import F, Q
from django.utils import timezone
from django.utils.timesince import timesince

from batches import audit

from .models import SessionEpoch

log = logging.getLogger(__name__)

LOGIN_AT, SEEN_AT, EPOCH = "login_at", "seen_at", "session_epoch"
ACTIVITY_RESOLUTION = 60  # seconds between writes of SEEN_AT


def _now() -> int:
    return int(timezone.now().timestamp())


class ModelBackend(backends.ModelBackend):
    """Django's, with fewer queries per request: a session's user is loaded together with its session epoch,
    and a user's permissions (their own and their groups') are read in one query, not two."""

    def get_user(self, user_id):
        user = get_user_model()._default_manager.select_related("session_epoch").filter(pk=user_id).first()
        return user if user and self.user_can_authenticate(user) else None

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            perms = Permission.objects.all()
            if not user_obj.is_superuser:
                perms = perms.filter(Q(user=user_obj) | Q(group__user=user_obj))
            user_obj._perm_cache = {f"{app}.{codename}" for app, codename in
                                    perms.values_list("content_type__app_label", "codename").distinct()}
        return user_obj._perm_cache


def current_epoch(user) -> int:
    try:
        return user.session_epoch.epoch
    except SessionEpoch.DoesNotExist:
        return 0


def start_session(sender, request, user, **kwargs) -> None:
    """user_logged_in receiver: every log-in (any form, the admin's too) starts the clocks."""
    now = _now()
    request.session.update({LOGIN_AT: now, SEEN_AT: now, EPOCH: current_epoch(user)})


def ended(request) -> str:
    """Why the session of this logged-in request is over, or "" while it is not."""
    session, now = request.session, _now()
    session.setdefault(LOGIN_AT, now)  # a session from before these limits: they start now
    session.setdefault(SEEN_AT, now)
    if now - session[SEEN_AT] > settings.SESSION_IDLE_SECONDS:
        idle = timesince(timezone.now() - timedelta(seconds=settings.SESSION_IDLE_SECONDS))
        return f"You were logged out after {idle} without activity."
    if now - session[LOGIN_AT] > settings.SESSION_COOKIE_AGE:
        return "Your session reached its maximum age. Please log in again."
    if session.get(EPOCH, 0) != current_epoch(request.user):
        return "Your session was ended by “log out everywhere”. Please log in again."
    return ""


def note_activity(request) -> None:
    now = _now()
    if now - request.session[SEEN_AT] >= ACTIVITY_RESOLUTION:
        request.session[SEEN_AT] = now


def logout_everywhere(user, *, by) -> None:
    """End every session of `user`, on every device (this request's own too, at its next request)."""
    SessionEpoch.objects.get_or_create(user=user)
    SessionEpoch.objects.filter(user=user).update(epoch=F("epoch") + 1, changed_at=timezone.now(),
                                                  changed_by=by.get_username())
    log.info("%s logged %s out everywhere", by.get_username(), user.get_username())
    audit.record("logout_everywhere", actor=by, target=user.get_username())
