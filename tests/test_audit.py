"""The audit trail: append-only for everyone, in code and in the admin, and exported as streamed CSV."""

import csv
import io

import pytest
from django.contrib.auth.models import Permission, User
from django.db import IntegrityError, transaction

from batches.models import AuditEvent, AuditTrailIsAppendOnly, Connection
from tests.conftest import PASSWORD


@pytest.fixture
def event(db):
    return AuditEvent.objects.create(action="login_failed", username="mallory", ok=False, ip="192.0.2.7")


@pytest.fixture
def root(client, db):
    user = User.objects.create_superuser("root", password=PASSWORD)
    client.force_login(user)
    return user


def _csv(response) -> list[dict]:
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="batchboard-audit.csv"'
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_an_event_is_never_changed_or_deleted_in_code(event):
    event.detail = "covered up"
    with pytest.raises(AuditTrailIsAppendOnly):
        event.save()
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent(pk=event.pk, action="login", username="someone else").save()
    with pytest.raises(AuditTrailIsAppendOnly):
        event.delete()
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(detail="covered up")
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get().username == "mallory" and AuditEvent.objects.get().detail == ""


def test_even_a_superuser_cannot_add_change_or_delete_events_in_the_admin(client, root, event):
    url = f"/admin/batches/auditevent/{event.pk}/"
    assert client.get("/admin/batches/auditevent/add/").status_code == 403
    assert client.post(url + "change/", {"action": "login", "username": "x", "ok": "on"}).status_code == 403
    assert client.post(url + "delete/", {"post": "yes"}).status_code == 403
    client.post("/admin/batches/auditevent/", {"action": "delete_selected", "post": "yes",
                                               "_selected_action": [event.pk]})
    assert AuditEvent.objects.get(pk=event.pk).username == "mallory"


def test_deleting_a_user_or_a_connection_keeps_their_events_by_name(connection):
    ana = User.objects.create_user("ana")
    AuditEvent.objects.create(action="key_changed", user=ana, username="ana", connection=connection, target="sim")
    ana.delete()
    connection.delete()
    assert AuditEvent.objects.values_list("user", "username", "connection", "target").get() == (None, "ana", None,
                                                                                                 "sim")


def test_the_export_streams_every_event_as_csv_newest_first(client, login, connection, event):
    AuditEvent.objects.create(action="connection_changed", username="ana", connection=connection, target="sim",
                              detail="base_url, project")
    login("admin")
    rows = _csv(client.get("/admin/batches/auditevent/export.csv"))
    assert [row["action"] for row in rows] == ["login", "connection_changed", "login_failed"]
    assert rows[1]["connection"] == "sim" and rows[1]["detail"] == "base_url, project" and rows[1]["ok"] == "yes"
    assert rows[2]["username"] == "mallory" and rows[2]["ip"] == "192.0.2.7" and rows[2]["ok"] == "no"
    assert "export.csv" in client.get("/admin/batches/auditevent/").content.decode()


@pytest.mark.parametrize("username", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd"])
def test_the_export_never_hands_a_spreadsheet_a_formula(client, root, username):
    AuditEvent.objects.create(action="login_failed", username=username, ok=False)
    assert _csv(client.get("/admin/batches/auditevent/export.csv"))[0]["username"] == "'" + username


def test_the_export_needs_view_auditevent(client, db):
    staff = User.objects.create_user("helper", password=PASSWORD, is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/batches/auditevent/export.csv").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    assert client.get("/admin/batches/auditevent/export.csv").status_code == 200


def test_a_viewer_gets_no_export(client, login):
    login("viewer")
    assert client.get("/admin/batches/auditevent/export.csv")["Location"].startswith("/admin/login/")
