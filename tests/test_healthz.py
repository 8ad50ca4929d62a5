"""/healthz: public up/down and freshness in aggregate; each connection's health only with HEALTHZ_TOKEN."""

import json
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from batches.models import Connection
from tests.conftest import SIM_KEY

TOKEN = "healthz-token-for-tests-0123456789"


def _synced(connection, *, seconds_ago: float, interval: float = 60, **fields):
    Connection.objects.filter(pk=connection.pk).update(
        last_success_at=timezone.now() - timedelta(seconds=seconds_ago), sync_interval=interval,
        last_full_walk_at=timezone.now(), **fields)


def _get(client, token=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    response = client.get("/healthz", **headers)
    return response, json.loads(response.content)


def test_the_public_answer_is_up_and_fresh_without_slugs_ages_or_error_text(client, connection, settings):
    settings.HEALTHZ_TOKEN = TOKEN
    _synced(connection, seconds_ago=10, last_error="secret detail")
    response, data = _get(client)
    assert response.status_code == 200
    assert data == {"status": "up", "database": True, "broker": True, "stale": False, "connections": 1}
    assert b"sim" not in response.content and b"secret detail" not in response.content
    assert "Authorization" in response["Vary"] and "no-store" in response["Cache-Control"]


def test_with_the_token_it_shows_each_connections_health_and_age(client, connection, settings):
    settings.HEALTHZ_TOKEN = TOKEN
    _synced(connection, seconds_ago=120, interval=300, last_error="secret detail", warning="list looked odd")
    response, data = _get(client, TOKEN)
    assert response.status_code == 200 and data["status"] == "up" and data["connections"] == 1
    [row] = data["details"]
    assert row.keys() == {"slug", "health", "stale", "last_success_age_s"}
    assert row["slug"] == "sim" and row["health"] == "degraded" and row["stale"] is False
    assert 120 <= row["last_success_age_s"] <= 130
    for secret in (b"secret detail", b"list looked odd", SIM_KEY.encode(), TOKEN.encode()):
        assert secret not in response.content


@pytest.mark.parametrize("authorization", [
    "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ", f"bearer{TOKEN}"])
def test_a_wrong_or_missing_token_gets_the_public_answer(client, connection, settings, authorization):
    settings.HEALTHZ_TOKEN = TOKEN
    _synced(connection, seconds_ago=10)
    response = client.get("/healthz", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 200 and "details" not in json.loads(response.content)


def test_without_a_configured_token_no_token_shows_details(client, connection, settings):
    settings.HEALTHZ_TOKEN = ""
    _synced(connection, seconds_ago=10)
    assert "details" not in _get(client, "")[1] and "details" not in client.get(
        "/healthz", HTTP_AUTHORIZATION="Bearer ").json()


def test_data_older_than_its_schedule_allows_is_stale_and_still_200_by_default(client, connection, settings):
    settings.HEALTHZ_TOKEN = TOKEN
    _synced(connection, seconds_ago=3600, interval=60)
    response, data = _get(client)
    assert response.status_code == 200 and data["status"] == "up" and data["stale"] is True
    [row] = _get(client, TOKEN)[1]["details"]
    assert row["health"] == "stale" and row["stale"] is True


def test_stale_data_is_a_503_with_healthz_stale_is_error(client, connection, settings):
    settings.HEALTHZ_STALE_IS_ERROR = True
    _synced(connection, seconds_ago=3600, interval=60)
    response, data = _get(client)
    assert response.status_code == 503 and data["status"] == "up" and data["stale"] is True
    _synced(connection, seconds_ago=10, interval=60)
    assert _get(client)[0].status_code == 200


def test_a_connection_that_never_synced_is_stale(client, connection, settings):
    settings.HEALTHZ_STALE_IS_ERROR = True
    assert _get(client)[0].status_code == 503


def test_a_failing_connection_is_stale_only_once_its_data_is_overdue(client, connection, settings):
    settings.HEALTHZ_TOKEN = TOKEN
    settings.HEALTHZ_STALE_IS_ERROR = True
    _synced(connection, seconds_ago=10, interval=60, consecutive_failures=2, last_error="HTTP 500")
    response, data = _get(client, TOKEN)
    assert response.status_code == 200 and data["stale"] is False and data["details"][0]["health"] == "failing"
    _synced(connection, seconds_ago=600, interval=60, consecutive_failures=5)
    assert _get(client)[0].status_code == 503


def test_disabled_connections_are_neither_counted_nor_stale(client, connection, settings):
    settings.HEALTHZ_TOKEN = TOKEN
    settings.HEALTHZ_STALE_IS_ERROR = True
    Connection.objects.filter(pk=connection.pk).update(enabled=False)
    response, data = _get(client, TOKEN)
    assert response.status_code == 200 and data["stale"] is False
    assert data["connections"] == 0 and data["details"] == []


def test_healthz_is_503_when_the_broker_is_unreachable(client, db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    started = time.monotonic()
    response, data = _get(client)
    assert response.status_code == 503 and data["status"] == "down"
    assert data["broker"] is False and data["database"] is True
    assert time.monotonic() - started < 1  # one attempt, no retry after a pause


@pytest.fixture
def silent_broker():
    """A TCP port that accepts connections and never answers; it hangs up on each after 3 seconds."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    held = []

    def serve():
        while not stop.is_set():
            try:
                held.append((listener.accept()[0], time.monotonic()))
            except TimeoutError:
                pass
            while held and time.monotonic() - held[0][1] > 3:
                held.pop(0)[0].close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for conn, _ in held:
        conn.close()
    listener.close()


def test_the_broker_check_gives_up_after_healthz_broker_timeout(client, db, settings, silent_broker):
    settings.CELERY_BROKER_URL = silent_broker
    settings.HEALTHZ_BROKER_TIMEOUT = 0.5
    started = time.monotonic()
    response, data = _get(client)
    assert response.status_code == 503 and data["broker"] is False
    assert time.monotonic() - started < 0.5 + 1
