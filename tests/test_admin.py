"""The admin site: who gets in (by permission, not is_staff), and what it shows of a connection's key."""

import re

import pytest
from django.contrib.auth.models import Group, User

from batches.models import Connection
from tests.conftest import PASSWORD


def _member(group: str) -> User:
    user = User.objects.create_user(group.lower(), password=PASSWORD)
    user.groups.add(Group.objects.get(name=group))
    return user


def test_an_admin_group_member_without_is_staff_logs_in_to_the_admin(client, roles):
    assert not _member("Admin").is_staff
    response = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": PASSWORD,
                                                           "next": "/admin/"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/batches/connection/").status_code == 200
    assert client.get("/admin/auth/user/").status_code == 200


@pytest.mark.parametrize("group", ["Viewer", "Operator"])
def test_other_roles_are_refused_by_the_admin_login(client, roles, group):
    _member(group)
    response = client.post("/admin/login/", {"username": group.lower(), "password": PASSWORD})
    assert response.status_code == 200 and b"correct username and password for a staff account" in response.content
    assert client.get("/admin/")["Location"].startswith("/admin/login/")


def test_a_deactivated_admin_is_refused(client, roles):
    user = _member("Admin")
    client.force_login(user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert client.get("/admin/").status_code == 302


def test_an_unreadable_key_says_so_in_the_admin(client, login, connection, lost_key):
    login("admin")
    listing = client.get("/admin/batches/connection/").content.decode()
    assert Connection.objects.get().api_key_hint in listing
    form = client.get(f"/admin/batches/connection/{connection.pk}/change/").content.decode()
    assert lost_key in form


def test_the_admin_is_titled_batchboard_and_shows_dates_as_the_app_does(client, login, connection):
    from batches.models import AuditEvent

    login("admin")
    AuditEvent.objects.create(action="login", username="ana", result="ok")
    page = client.get("/admin/batches/auditevent/").content.decode()
    assert "Batchboard" in page.split("<title>", 1)[1].split("</title>", 1)[0]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)
