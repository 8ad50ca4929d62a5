"""The client address that log-in throttling counts: REMOTE_ADDR, or the trusted proxy's X-Forwarded-For."""

from django.contrib.auth.models import User

from tests.conftest import PASSWORD

PROXY = "10.0.0.1"


def _attempt(client, password, forwarded_for=None, remote_addr=PROXY):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    return client.post("/login/", {"username": "ana", "password": password}, REMOTE_ADDR=remote_addr, **headers)


def test_without_a_trusted_proxy_a_forged_x_forwarded_for_is_ignored(client, db, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    settings.LOGIN_FAILURE_LIMIT = 3
    User.objects.create_user("ana", password=PASSWORD)
    for forged in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        assert _attempt(client, "wrong", forged, remote_addr="203.0.113.5").status_code == 200
    assert _attempt(client, PASSWORD, "198.51.100.4", remote_addr="203.0.113.5").status_code == 429


def test_behind_one_proxy_two_clients_are_counted_apart(client, db, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.LOGIN_FAILURE_LIMIT = 3
    User.objects.create_user("ana", password=PASSWORD)
    for _ in range(3):
        assert _attempt(client, "wrong", "203.0.113.5").status_code == 200

    assert _attempt(client, PASSWORD, "198.51.100.7").status_code == 302
    client.logout()
    # What the client put in front of the proxy's own entry is not believed.
    assert _attempt(client, PASSWORD, "198.51.100.7, 203.0.113.5").status_code == 429


def test_client_ip_takes_the_nth_address_from_the_right(rf, settings):
    from accounts.throttle import client_ip

    request = rf.get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.5, 10.0.0.9")
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_ip(request) == PROXY
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_ip(request) == "10.0.0.9"
    settings.TRUSTED_PROXY_COUNT = 2
    assert client_ip(request) == "203.0.113.5"


def test_a_request_that_bypassed_the_proxy_counts_by_its_own_address(rf, settings):
    from accounts.throttle import client_ip

    settings.TRUSTED_PROXY_COUNT = 1
    assert client_ip(rf.get("/", REMOTE_ADDR="203.0.113.5")) == "203.0.113.5"
    assert client_ip(rf.get("/", REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="not an address")) == "203.0.113.5"
