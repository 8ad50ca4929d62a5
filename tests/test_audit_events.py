"""What is audited besides batch actions: log-ins, refusals, connections, keys and roles, each with who did it."""

import csv
import io

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client

from batches.models import AuditEvent, Connection
from tests.conftest import PASSWORD, SIM_KEY

def _events(*actions, fields=("action", "username", "ok", "target", "detail", "ip")) -> list[tuple]:
    return list(AuditEvent.objects.filter(action__in=actions).order_by("pk").values_list(*fields))


WHO_WHAT = ("action", "username", "target", "detail")


def _connection_form(**changes) -> dict:
    data = {"name": "Team", "slug": "team", "base_url": "https://api.openai.com/v1", "api_key": SIM_KEY,
            "organization": "", "project": "", "enabled": "on", "poll_interval": "15"}
    return {**data, **changes}


def test_a_log_in_a_failed_log_in_and_a_log_out_are_audited_with_the_address(client, db):
    User.objects.create_user("ana", password=PASSWORD)
    client.post("/login/", {"username": "ana", "password": "wrong"}, REMOTE_ADDR="192.0.2.7")
    client.post("/login/", {"username": "nobody", "password": "guess"}, REMOTE_ADDR="192.0.2.8")
    client.post("/login/", {"username": "ana", "password": PASSWORD}, REMOTE_ADDR="192.0.2.7")
    client.post("/logout/", REMOTE_ADDR="192.0.2.7")
    assert _events("login", "login_failed", "logout") == [
        ("login_failed", "ana", False, "", "", "192.0.2.7"),
        ("login_failed", "nobody", False, "", "", "192.0.2.8"),
        ("login", "ana", True, "", "", "192.0.2.7"),
        ("logout", "ana", True, "", "", "192.0.2.7"),
    ]
    stored = repr(list(AuditEvent.objects.values()))
    assert "wrong" not in stored and "guess" not in stored


def test_the_admins_log_in_form_is_audited_too(client, roles):
    User.objects.create_user("root", password=PASSWORD, is_superuser=True, is_staff=True)
    client.post("/admin/login/", {"username": "root", "password": "nope"})
    client.post("/admin/login/", {"username": "root", "password": PASSWORD})
    assert _events("login", "login_failed", fields=("action", "username")) == [("login_failed", "root"),
                                                                             ("login", "root")]


def test_a_refusal_is_audited_with_the_user_method_and_path(client, login, synced_batch):
    login("viewer")
    url = f"/batches/sim/{synced_batch.batch_id}/refresh/"
    assert client.post(url, REMOTE_ADDR="192.0.2.9").status_code == 403
    assert _events("forbidden") == [("forbidden", "viewer", False, "", f"POST {url}", "192.0.2.9")]


def test_an_admin_refusal_is_audited_too(client, login):
    root = User.objects.create_superuser("root", password=PASSWORD)
    login("admin")
    assert client.post(f"/admin/auth/user/{root.pk}/delete/", {"post": "yes"}).status_code == 403
    assert _events("forbidden")[0][:2] == ("forbidden", "admin")


def test_connections_created_changed_and_deleted_in_the_admin_are_audited_with_field_names(client, login):
    login("admin")
    client.post("/admin/batches/connection/add/", _connection_form())
    conn = Connection.objects.get()
    # The admin's page also posts the poll interval it showed (the field's default is a callable).
    client.post(f"/admin/batches/connection/{conn.pk}/change/",
                _connection_form(api_key="", name="Team A", poll_interval="30", **{"initial-poll_interval": "15"}))
    client.post(f"/admin/batches/connection/{conn.pk}/change/",
                _connection_form(name="Team A", poll_interval="30", **{"initial-poll_interval": "30"},
                                 api_key="sk-new-key-0123456789", project="proj_2"))
    client.post(f"/admin/batches/connection/{conn.pk}/delete/", {"post": "yes"})
    actions = ("connection_created", "connection_changed", "key_changed", "connection_deleted")
    assert _events(*actions, fields=WHO_WHAT) == [
        ("connection_created", "admin", "team", ""),
        ("connection_changed", "admin", "team", "name, poll_interval"),
        ("connection_changed", "admin", "team", "project"),
        ("key_changed", "admin", "team", ""),
        ("connection_deleted", "admin", "team", "Team A"),
    ]
    assert "sk-new-key" not in repr(list(AuditEvent.objects.values()))


def test_connections_deleted_in_bulk_are_each_audited(client, login):
    login("admin")
    for slug in ("one", "two"):
        client.post("/admin/batches/connection/add/", _connection_form(name=slug, slug=slug))
    selected = list(Connection.objects.values_list("pk", flat=True))
    client.post("/admin/batches/connection/", {"action": "delete_selected", "post": "yes",
                                               "_selected_action": selected})
    assert not Connection.objects.exists()
    assert sorted(_events("connection_deleted", fields=("target",))) == [("one",), ("two",)]


def test_add_connection_is_audited(db, simulator, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SIM_KEY)
    call_command("add_connection", "Team", "--base-url", simulator.url, stdout=io.StringIO())
    monkeypatch.setenv("OPENAI_API_KEY", SIM_KEY + "-rotated")
    call_command("add_connection", "Team", "--base-url", simulator.url, "--project", "p2", "--force",
                 stdout=io.StringIO())
    assert _events("connection_created", "connection_changed", "key_changed", fields=WHO_WHAT) == [
        ("connection_created", "manage.py add_connection", "team", ""),
        ("connection_changed", "manage.py add_connection", "team", "project"),
        ("key_changed", "manage.py add_connection", "team", ""),
    ]


def test_role_changes_in_the_user_admin_are_audited(client, login):
    login("admin")
    ana = User.objects.create_user("ana", password=PASSWORD)
    ana.groups.add(Group.objects.get(name="Viewer"))
    operator = Group.objects.get(name="Operator")
    client.post(f"/admin/auth/user/{ana.pk}/change/", {
        "username": "ana", "first_name": "", "last_name": "", "email": "", "is_active": "on", "is_staff": "on",
        "groups": [operator.pk], "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    assert _events("role_changed", fields=WHO_WHAT) == [("role_changed", "admin", "ana",
                                                         "is_staff on; groups +Operator -Viewer")]


def test_log_out_everywhere_is_audited(client, login):
    login("viewer")
    client.post("/account/logout-everywhere/")
    assert _events("logout_everywhere")[0][:4] == ("logout_everywhere", "viewer", True, "viewer")


def test_every_kind_of_event_is_in_the_csv_export(client, login, synced_batch):
    user = login("admin")
    client.post(f"/batches/sim/{synced_batch.batch_id}/refresh/")
    Client().post("/login/", {"username": "admin", "password": "wrong"})
    client.post("/admin/batches/connection/add/", _connection_form())
    client.post("/account/logout-everywhere/")
    client.force_login(User.objects.get(pk=user.pk))
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get("/admin/batches/auditevent/export.csv")
                                                    .streaming_content).decode())))
    assert {row["action"] for row in rows} >= {"login", "login_failed", "refresh", "connection_created",
                                               "logout_everywhere"}
    assert len(rows) == AuditEvent.objects.count()
