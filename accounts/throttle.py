"""Log-in throttling, shared by every log-in form (ours and the admin's, see forms.py).

Each attempt is counted *before* its password is checked, in one transaction that locks the counter
rows, so attempts arriving together cannot all slip under a limit. Three counters, each over
LOGIN_FAILURE_WINDOW seconds from its first failure:

1. the client address, any username: LOGIN_IP_FAILURE_LIMIT failures (password spraying), then
   refused until the window ends;
2. the username, any address: after LOGIN_USERNAME_FAILURE_LIMIT failures each further attempt
   waits twice as long as the one before (1 s, 2 s, 4 s, ... at most LOGIN_MAX_DELAY). A slow-down,
   never a lock, so nobody can lock a user out by failing on their name;
3. the username at this address: LOGIN_FAILURE_LIMIT failures, then refused until the window ends.

A refused attempt counts nowhere. A correct password gives its count back and clears counter 3.
"""

import logging
import math
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from ipware import get_client_ip

from .models import LoginThrottle

log = logging.getLogger(__name__)


def client_ip(request) -> str:
    """The address to count: REMOTE_ADDR, or behind TRUSTED_PROXY_COUNT proxies the address the
    outermost one saw, the Nth entry from the right of X-Forwarded-For. Entries further left were
    written by the client and are never believed."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        # ipware expects the proxy that connected to us in the header too; a proxy appends its
        # peer's address, not its own, so N proxies leave N - 1 proxy entries after the client's.
        ip, _ = get_client_ip(request, proxy_count=proxies - 1, request_header_order=["HTTP_X_FORWARDED_FOR"],
                              strict=False)
        if ip:
            return ip
    ip, _ = get_client_ip(request, request_header_order=["REMOTE_ADDR"])
    return ip or "unknown"


def _counters(username: str, ip: str) -> list[tuple[str, str, int, bool]]:
    """(username, address, limit, whether the wait grows) in the order rows are locked: always the
    same order, so two transactions never wait for each other in a circle."""
    return [
        ("", ip, settings.LOGIN_IP_FAILURE_LIMIT, False),
        (username, "", settings.LOGIN_USERNAME_FAILURE_LIMIT, True),
        (username, ip, settings.LOGIN_FAILURE_LIMIT, False),
    ]


def _normal(username: str) -> str:
    return username.strip().lower()[:150]


def _locked_row(username: str, ip: str, now: datetime) -> LoginThrottle:
    window_ends = now + timedelta(seconds=settings.LOGIN_FAILURE_WINDOW)
    row, _ = LoginThrottle.objects.select_for_update().get_or_create(
        username=username, ip=ip, defaults={"window_ends": window_ends})
    if row.window_ends <= now:  # an ended window starts over
        row.failures, row.window_ends, row.retry_at = 0, window_ends, None
    return row


def _refused_until(row: LoginThrottle, limit: int, grows: bool, now: datetime) -> datetime | None:
    if row.failures < limit:
        return None
    if grows:
        return now + timedelta(seconds=min(2 ** min(row.failures - limit, 30), settings.LOGIN_MAX_DELAY))
    return row.window_ends


def reserve_attempt(*, username: str, ip: str) -> int:
    """Count one attempt before its password is checked. Returns 0 to go on, or the seconds to wait
    (the attempt is then refused and not counted)."""
    username, now = _normal(username), timezone.now()
    with transaction.atomic():
        rows = [(_locked_row(name, address, now), limit, grows)
                for name, address, limit, grows in _counters(username, ip)]
        waits = [(row.retry_at - now).total_seconds() for row, _, _ in rows if row.retry_at and row.retry_at > now]
        if waits:
            wait = math.ceil(max(waits))
            log.warning("log-in refused for %s s: too many failures from %s or for the username", wait, ip)
            return wait
        for row, limit, grows in rows:
            row.failures += 1
            row.retry_at = _refused_until(row, limit, grows, now)
            row.save()
    return 0


def release_attempt(*, username: str, ip: str) -> None:
    """The password was right: give the attempt's count back and forget this username's failures at
    this address."""
    username = _normal(username)
    with transaction.atomic():
        for name, address, limit, _ in _counters(username, ip)[:2]:
            row = LoginThrottle.objects.select_for_update().filter(username=name, ip=address).first()
            if row and row.failures:
                row.failures -= 1
                if row.failures < limit:
                    row.retry_at = None
                row.save(update_fields=["failures", "retry_at"])
        LoginThrottle.objects.filter(username=username, ip=ip).delete()


def forget_ended_windows() -> int:
    """Delete counters whose window has ended (they would start over anyway); run hourly. Rows a
    log-in holds right now are skipped, so this never waits for one (nor it for this)."""
    with transaction.atomic():
        ended = list(LoginThrottle.objects.select_for_update(skip_locked=True)
                     .filter(window_ends__lte=timezone.now()).values_list("pk", flat=True))
        deleted, _ = LoginThrottle.objects.filter(pk__in=ended).delete()
    return deleted
