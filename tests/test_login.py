from django.contrib.auth.models import User

from tests.conftest import PASSWORD


def _attempt(client, password, ip="10.0.0.1"):
    return client.post("/login/", {"username": "ana", "password": password}, REMOTE_ADDR=ip)


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
    assert "_auth_user_id" not in client.session
    assert _attempt(client, PASSWORD, ip="10.0.0.2").status_code == 302  # another address is not blocked


def test_the_count_lives_in_the_shared_cache_not_in_process_memory(client, db, settings):
    from django.core.cache import cache

    settings.LOGIN_FAILURE_LIMIT = 2
    User.objects.create_user("ana", password=PASSWORD)
    _attempt(client, "wrong")
    _attempt(client, "wrong")
    assert settings.CACHES["default"]["BACKEND"].endswith(("DatabaseCache", "RedisCache"))
    cache.clear()  # what another web process would see after the window: a fresh count
    assert _attempt(client, PASSWORD).status_code == 302


def test_a_success_resets_the_count(client, db, settings):
    settings.LOGIN_FAILURE_LIMIT = 2
    User.objects.create_user("ana", password=PASSWORD)
    _attempt(client, "wrong")
    assert _attempt(client, PASSWORD).status_code == 302
    client.logout()
    _attempt(client, "wrong")
    assert _attempt(client, PASSWORD).status_code == 302
