"""LOCAL_LOGIN=0: passwords log in only break-glass superusers, on /login/ and /admin/login/; the commands that link
an identity and mark break-glass accounts; the single sign-on settings."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user
from django.contrib.auth.models import Group, User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from accounts.models import BreakGlass, OIDCIdentity
from batches.models import AuditEvent
from dashboard.settings import parse_group_map
from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def local_login_off(settings, db):
    settings.LOCAL_LOGIN = False
    settings.OIDC_ISSUER, settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = "https://idp.example.com", "c", "s"


def _post(client, path: str, username: str, password: str = PASSWORD):
    return client.post(path, {"username": username, "password": password, "next": "/admin/"})


@pytest.mark.parametrize("path", ["/login/", "/admin/login/?next=/admin/"])
def test_local_login_off_refuses_passwords_as_if_they_were_wrong(client, local_login_off, roles, path):
    admin = User.objects.create_user("ada", password=PASSWORD, is_staff=True)
    admin.groups.add(Group.objects.get(name="Admin"))
    User.objects.create_superuser("root", "root@example.com", PASSWORD)  # a superuser, but not break-glass
    wrong = _post(client, path, "ada", "not-the-password").content.decode()
    for username in ("ada", "root"):
        response = _post(client, path, username)
        assert response.status_code == 200 and not get_user(client).is_authenticated
        assert "correct username and password" in response.content.decode()
    assert "correct username and password" in wrong  # the same answer: nobody learns the password was right
    assert AuditEvent.objects.filter(action="login_refused", ok=False).count() == 2


@pytest.mark.parametrize("path", ["/login/", "/admin/login/?next=/admin/"])
def test_a_break_glass_superuser_still_logs_in_and_is_audited(client, local_login_off, path):
    root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    call_command("break_glass", "root", stdout=open("/dev/null", "w"))
    response = _post(client, path, "root")
    assert response.status_code == 302 and get_user(client).pk == root.pk
    event = AuditEvent.objects.get(action="break_glass_login")
    assert event.username == "root" and "LOCAL_LOGIN=0" in event.detail
    assert AuditEvent.objects.filter(action="break_glass_on", target="root", username="manage.py").exists()


def test_the_login_page_hides_the_password_form_behind_break_glass(client, local_login_off):
    page = client.get("/login/").content.decode()
    assert "Log in with single sign-on" in page
    assert "<summary>Break-glass log-in (administrators only)</summary>" in page
    admin_page = client.get("/admin/login/").content.decode()
    assert 'id="oidc-login"' in admin_page and "break-glass" in admin_page


def test_with_local_login_on_passwords_work_and_break_glass_is_still_audited(client, db):
    User.objects.create_user("bea", password=PASSWORD)
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    call_command("break_glass", "root", stdout=open("/dev/null", "w"))
    assert _post(client, "/login/", "bea").status_code == 302
    client.logout()
    assert _post(client, "/login/", "root").status_code == 302
    assert AuditEvent.objects.filter(action="break_glass_login", username="root").count() == 1


def test_only_superusers_can_be_break_glass(db):
    User.objects.create_user("bea", password=PASSWORD)
    with pytest.raises(CommandError, match="Only a superuser"):
        call_command("break_glass", "bea")
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    call_command("break_glass", "root", stdout=open("/dev/null", "w"))
    call_command("break_glass", "root", "--off", stdout=open("/dev/null", "w"))
    assert not BreakGlass.objects.exists()
    assert AuditEvent.objects.filter(action="break_glass_off", target="root").exists()


def test_a_break_glass_mark_on_a_demoted_superuser_counts_for_nothing(client, local_login_off):
    root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    call_command("break_glass", "root", stdout=open("/dev/null", "w"))
    User.objects.filter(pk=root.pk).update(is_superuser=False)
    assert _post(client, "/login/", "root").status_code == 200 and not get_user(client).is_authenticated


def test_link_oidc_links_unlinks_and_refuses_a_subject_already_in_use(db):
    User.objects.create_user("bea")
    User.objects.create_user("cal")
    out = open("/dev/null", "w")
    call_command("link_oidc", "bea", "https://idp.example.com/", "sub-1", stdout=out)
    identity = OIDCIdentity.objects.get()
    assert (identity.user.username, identity.issuer, identity.linked_by) == (
        "bea", "https://idp.example.com", "manage.py")
    with pytest.raises(CommandError, match="already logs in as bea"):
        call_command("link_oidc", "cal", "https://idp.example.com", "sub-1", stdout=out)
    call_command("link_oidc", "bea", "https://idp.example.com", "sub-1", "--unlink", stdout=out)
    assert not OIDCIdentity.objects.exists()
    assert list(AuditEvent.objects.order_by("pk").values_list("action", flat=True)) == ["oidc_linked", "oidc_unlinked"]
    with pytest.raises(CommandError, match="No user named"):
        call_command("link_oidc", "nobody", "https://idp.example.com", "sub-2")


@pytest.mark.parametrize("raw,message", [
    ("[1]", "must be a JSON object"),
    ('{"g": {"role": "Owner"}}', "role must be one of Viewer, Operator, Admin"),
    ('{"g": {"teams": "Red"}}', "teams must be a list"),
    ('{"g": {"rol": "Admin"}}', "must be an object with"),
    ("{not json", "not valid JSON"),
])
def test_a_bad_group_map_names_the_problem(raw, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_group_map(raw)


def test_a_good_group_map_is_kept_as_written():
    raw = '{"batch-admins": {"role": "Admin"}, "red": {"teams": ["Red", "Blue"]}}'
    assert parse_group_map(raw) == {"batch-admins": {"role": "Admin"}, "red": {"teams": ["Red", "Blue"]}}


def _start(**env) -> subprocess.CompletedProcess:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("OIDC_", "LOCAL_LOGIN", "DJANGO_SETTINGS"))}
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**base, "DJANGO_SETTINGS_MODULE": "dashboard.settings",
                                                      "SECRET_KEY": "x", "BATCHBOARD_ENCRYPTION_KEYS":
                                                      "dGVzdC1vbmx5LWtleS10ZXN0LW9ubHkta2V5LTAwMDA=", **env})


def test_settings_refuse_an_incomplete_or_unsafe_single_sign_on():
    full = {"OIDC_ISSUER": "https://idp.example.com/realms/acme", "OIDC_CLIENT_ID": "batchboard",
            "OIDC_CLIENT_SECRET": "s3cret", "OIDC_ALLOWED_EMAIL_DOMAINS": "example.com"}
    assert _start(**full).returncode == 0  # and nothing is fetched: idp.example.com does not exist
    for env, message in [({**full, "OIDC_CLIENT_SECRET": ""}, "OIDC_CLIENT_SECRET"),
                         ({**full, "OIDC_ISSUER": "http://idp.example.com"}, "https://"),
                         ({**full, "OIDC_ALLOWED_EMAIL_DOMAINS": ""}, "OIDC_ALLOWED_EMAIL_DOMAINS"),
                         ({"LOCAL_LOGIN": "0"}, "LOCAL_LOGIN=0 needs OIDC_ISSUER")]:
        started = _start(**env)
        assert started.returncode != 0 and message in started.stderr, (env, started.stderr[-300:])
        assert "s3cret" not in started.stderr
