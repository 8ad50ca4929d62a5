"""Sessions end when idle or too old; live polls are not activity and never write the session."""

import time

import pytest
from django.contrib.sessions.models import Session

POLL = {"HTTP_HX_REQUEST": "true", "HTTP_X_BATCHBOARD_POLL": "1", "HTTP_HX_CURRENT_URL": "http://testserver/?q=x"}


def _move_back(client, **seconds):
    """Pretend the log-in (login_at) or the last activity (seen_at) was this many seconds ago."""
    session = client.session
    for key, ago in seconds.items():
        session[key] = int(time.time()) - ago
    session.save()


def _stored(client):
    row = Session.objects.get(session_key=client.session.session_key)
    return row.session_data, row.expire_date


@pytest.fixture
def viewer(client, login, settings):
    settings.SESSION_IDLE_SECONDS = 3600
    settings.SESSION_COOKIE_AGE = 86400
    return login("viewer")


def test_a_session_idle_for_longer_than_the_idle_timeout_ends(client, viewer):
    _move_back(client, seen_at=3601)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/"
    assert "_auth_user_id" not in client.session
    assert b"logged out after 1\xc2\xa0hour without activity" in client.get("/login/").content


def test_activity_keeps_a_session_alive(client, viewer):
    _move_back(client, seen_at=3500)
    assert client.get("/").status_code == 200
    _move_back(client, login_at=3600)  # keeps seen_at as the request above wrote it
    assert client.get("/").status_code == 200


def test_a_session_ends_session_cookie_age_after_log_in_however_active(client, viewer):
    _move_back(client, login_at=86401, seen_at=10)
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert "_auth_user_id" not in client.session


def test_a_live_poll_is_not_activity_and_does_not_write_the_session(client, viewer):
    _move_back(client, seen_at=3500)
    before = _stored(client)
    assert client.get("/?v=stale", **POLL).status_code == 200
    assert _stored(client) == before
    _move_back(client, seen_at=3601)  # the poll above did not reset the idle clock: the next one is out
    assert client.get("/", **POLL)["HX-Redirect"].startswith("/login/")


def test_activity_is_written_at_most_once_a_minute(client, viewer):
    before = _stored(client)
    client.get("/")
    assert _stored(client) == before
    _move_back(client, seen_at=61)
    before = _stored(client)
    client.get("/")
    assert _stored(client) != before


def test_an_ended_session_answers_an_htmx_poll_with_hx_redirect_to_the_login(client, viewer):
    _move_back(client, seen_at=3601)
    response = client.get("/?v=stale", **POLL)
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=/%3Fq%3Dx"  # back to the page, not to the poll URL
    assert response.content == b""


def test_an_htmx_request_without_a_session_gets_hx_redirect_instead_of_the_login_page(client, db):
    response = client.get("/", HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver/")
    assert response.status_code == 200 and response["HX-Redirect"] == "/login/?next=/"


def test_the_idle_and_absolute_limits_are_settings_with_defaults():
    from dashboard import settings as production

    assert production.SESSION_IDLE_SECONDS == 12 * 3600
    assert production.SESSION_COOKIE_AGE == 14 * 24 * 3600
    assert production.SESSION_SAVE_EVERY_REQUEST is False
