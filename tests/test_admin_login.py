"""/admin/login/ is throttled by the same counts as /login/."""

from django.contrib.auth.models import User

from tests.conftest import PASSWORD


def _admin_attempt(client, password, ip="10.0.0.1"):
    return client.post("/admin/login/?next=/admin/", {"username": "root", "password": password, "next": "/admin/"},
                       REMOTE_ADDR=ip)


def test_the_admin_login_refuses_after_the_limit_without_checking_the_password(
        client, db, settings, password_checks):
    settings.LOGIN_FAILURE_LIMIT = 3
    User.objects.create_user("root", password=PASSWORD, is_staff=True, is_superuser=True)
    for _ in range(3):
        assert b"Please enter the correct username" in _admin_attempt(client, "wrong").content

    refused = _admin_attempt(client, PASSWORD)

    assert b"Too many failed log-ins" in refused.content
    assert "_auth_user_id" not in client.session
    assert len(password_checks) == 3


def test_failures_on_the_site_login_count_on_the_admin_login_too(client, db, settings):
    settings.LOGIN_FAILURE_LIMIT = 2
    User.objects.create_user("root", password=PASSWORD, is_staff=True)
    for _ in range(2):
        client.post("/login/", {"username": "root", "password": "wrong"}, REMOTE_ADDR="10.0.0.1")

    assert b"Too many failed log-ins" in _admin_attempt(client, PASSWORD).content
    assert _admin_attempt(client, PASSWORD, ip="10.0.0.2").status_code == 302  # another address logs in
