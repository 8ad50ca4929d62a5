"""What /healthz answers: can this node reach its database and broker, and is the data fresh.

Never an error text or a secret; slugs, health states and ages only for callers with HEALTHZ_TOKEN.
"""

import hmac

from django.conf import settings
from django.db import connection as db_connection
from django.utils import timezone

from .models import Connection

# Per kombu driver, the options that bound each socket operation (a broker that accepts but never answers).
_BROKER_TIMEOUT_OPTIONS = {
    "redis": ("socket_connect_timeout", "socket_timeout"),
    "amqp": ("read_timeout", "write_timeout"),
}


def token_matches(authorization: str) -> bool:
    """`Authorization: Bearer <HEALTHZ_TOKEN>`; nothing matches while HEALTHZ_TOKEN is empty."""
    expected = settings.HEALTHZ_TOKEN
    scheme, _, given = authorization.partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.encode())


def database_is_up() -> bool:
    try:
        with db_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - the answer is the boolean
        return False
    return True


def broker_is_up() -> bool:
    """One connection attempt, over within about HEALTHZ_BROKER_TIMEOUT seconds; no retry after a pause."""
    from dashboard.celery import app

    timeout = settings.HEALTHZ_BROKER_TIMEOUT
    try:
        with app.connection_for_read(settings.CELERY_BROKER_URL, connect_timeout=timeout) as conn:
            for option in _BROKER_TIMEOUT_OPTIONS.get(conn.transport.driver_type, ()):
                conn.transport_options[option] = timeout
            conn.ensure_connection(max_retries=0)
    except Exception:  # noqa: BLE001
        return False
    return True


def report(*, detailed: bool) -> dict:
    """status (up: database and broker answer), and stale: some enabled connection's data is older than its
    schedule allows (Connection.is_stale; a connection that never synced counts). A failing connection is
    not stale until its data is overdue. `detailed` adds each connection's slug, health and age."""
    database, broker = database_is_up(), broker_is_up()
    answer = {"status": "up" if database and broker else "down", "database": database, "broker": broker,
              "stale": None, "connections": None}
    if not database:
        return answer
    now = timezone.now()
    connections = list(Connection.objects.filter(enabled=True).order_by("slug"))
    answer["stale"] = any(c.is_stale(now) for c in connections)
    answer["connections"] = len(connections)
    if detailed:
        answer["details"] = [
            {"slug": c.slug, "health": c.health(now), "stale": c.is_stale(now),
             "last_success_age_s": round((now - c.last_success_at).total_seconds()) if c.last_success_at else None}
            for c in connections
        ]
    return answer
