import time

from django.contrib.auth.models import User

from tests.conftest import PASSWORD


def _attempt(client, password, ip="10.0.0.1", username="ana"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_the_login_page_is_clean_and_public(client, db):
    response = client.get("/login/")
    assert response.status_code == 200 and b"Log in" in response.content


def test_repeated_failures_are_throttled_even_with_the_right_password(client, db, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    User.objects.create_user("ana", password=PASSWORD)
    for _ in range(3):
        assert _attempt(client, "wrong").status_code == 200
    blocked = _attempt(client, PASSWORD)
    assert blocked.status_code == 429 and b"Too many failed log-ins" in blocked.content
    assert int(blocked["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
    assert _attempt(client, PASSWORD, ip="10.0.0.2").status_code == 302  # another address is not blocked


def test_a_refused_attempt_never_reaches_the_password_check(client, db, settings, password_checks):
    settings.LOGIN_FAILURE_LIMIT = 2
    User.objects.create_user("ana", password=PASSWORD)
    for _ in range(5):
        _attempt(client, "wrong")
    assert len(password_checks) == 2


def test_a_success_resets_the_count(client, db, settings):
    settings.LOGIN_FAILURE_LIMIT = 2
    User.objects.create_user("ana", password=PASSWORD)
    _attempt(client, "wrong")
    assert _attempt(client, PASSWORD).status_code == 302
    client.logout()
    _attempt(client, "wrong")
    assert _attempt(client, PASSWORD).status_code == 302


def test_spraying_one_password_over_many_usernames_is_refused_per_address(client, db, settings):
    settings.LOGIN_IP_FAILURE_LIMIT = 4
    User.objects.create_user("ana", password=PASSWORD)
    for name in ("bob", "cy", "dee", "ed"):
        assert _attempt(client, "Summer2026!", username=name).status_code == 200

    refused = _attempt(client, PASSWORD)

    assert refused.status_code == 429 and b"Too many failed log-ins" in refused.content
    assert _attempt(client, PASSWORD, ip="10.0.0.2").status_code == 302


def test_a_username_failing_from_many_addresses_is_slowed_by_growing_delays_not_locked(client, db, settings):
    settings.LOGIN_USERNAME_FAILURE_LIMIT = 3
    User.objects.create_user("ana", password=PASSWORD)
    for i in range(3):
        assert _attempt(client, "wrong", ip=f"10.1.0.{i}").status_code == 200

    first = _attempt(client, PASSWORD, ip="10.9.9.9")
    assert first.status_code == 429 and first["Retry-After"] == "1"
    time.sleep(1.05)
    assert _attempt(client, "wrong", ip="10.1.0.9").status_code == 200
    second = _attempt(client, PASSWORD, ip="10.9.9.9")
    assert second.status_code == 429 and second["Retry-After"] == "2"  # each failure doubles the wait

    time.sleep(2.05)
    assert _attempt(client, PASSWORD, ip="10.9.9.9").status_code == 302  # the delay passes: never a lock


def test_the_growing_delay_on_a_username_is_capped(client, db, settings):
    settings.LOGIN_USERNAME_FAILURE_LIMIT = 1
    settings.LOGIN_MAX_DELAY = 1
    User.objects.create_user("ana", password=PASSWORD)
    for i in range(3):
        assert _attempt(client, "wrong", ip=f"10.1.0.{i}").status_code == 200
        time.sleep(1.05)
    assert _attempt(client, PASSWORD, ip="10.9.9.9").status_code == 302


def test_an_attacker_at_one_address_cannot_lock_the_user_out(client, db, settings):
    settings.LOGIN_FAILURE_LIMIT = 5
    User.objects.create_user("ana", password=PASSWORD)
    for _ in range(20):
        _attempt(client, "wrong", ip="203.0.113.9")
    assert _attempt(client, PASSWORD, ip="10.0.0.2").status_code == 302



def test_ended_windows_are_forgotten_and_current_ones_kept(client, db, settings):
    from accounts.models import LoginThrottle
    from accounts.throttle import forget_ended_windows

    settings.LOGIN_FAILURE_WINDOW = 1
    _attempt(client, "wrong", ip="10.0.0.1")  # counts for the address, the username, the username there
    time.sleep(1.05)
    _attempt(client, "wrong", ip="10.0.0.2")  # the username's window starts over
    assert forget_ended_windows() == 2
    assert sorted(LoginThrottle.objects.values_list("username", "ip")) == [
        ("", "10.0.0.2"), ("ana", ""), ("ana", "10.0.0.2")]
