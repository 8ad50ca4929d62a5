"""The user admin as an Admin-group user (not a superuser): roles yes, superuser powers no."""

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from batches.models import AuditEvent
from tests.conftest import PASSWORD


def _form(user, **changes) -> dict:
    """What the admin's change form posts for `user`, with `changes`."""
    data = {"username": user.username, "first_name": "", "last_name": "", "email": "", "is_active": "on",
            "groups": [g.pk for g in user.groups.all()], "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"}
    return {**data, **changes}


@pytest.fixture
def admin(login):
    return login("admin")


@pytest.fixture
def root(db):
    return User.objects.create_superuser("root", password=PASSWORD)


def test_an_admin_cannot_make_themselves_a_superuser(client, admin):
    page = client.get(f"/admin/auth/user/{admin.pk}/change/").content.decode()
    assert 'name="is_superuser"' not in page
    response = client.post(f"/admin/auth/user/{admin.pk}/change/", _form(admin, is_superuser="on"))
    assert response.status_code == 302
    assert not User.objects.get(pk=admin.pk).is_superuser


def test_an_admin_cannot_make_someone_else_a_superuser(client, admin):
    ana = User.objects.create_user("ana", password=PASSWORD)
    client.post(f"/admin/auth/user/{ana.pk}/change/", _form(ana, is_superuser="on"))
    assert not User.objects.get(pk=ana.pk).is_superuser


def test_an_admin_cannot_grant_single_permissions(client, admin):
    perm = Permission.objects.get(codename="change_group")
    client.post(f"/admin/auth/user/{admin.pk}/change/", _form(admin, user_permissions=[perm.pk]))
    assert not User.objects.get(pk=admin.pk).has_perm("auth.change_group")


def test_an_admin_still_gives_ordinary_users_their_roles(client, admin):
    ana = User.objects.create_user("ana", password=PASSWORD)
    operator = Group.objects.get(name="Operator")
    response = client.post(f"/admin/auth/user/{ana.pk}/change/", _form(ana, groups=[operator.pk], is_staff="on"))
    assert response.status_code == 302
    ana = User.objects.get(pk=ana.pk)
    assert list(ana.groups.all()) == [operator] and ana.is_staff


@pytest.mark.parametrize("page", ["change/", "password/", "delete/"])
def test_an_admin_cannot_change_a_superusers_account_or_password_or_delete_it(client, admin, root, page):
    url = f"/admin/auth/user/{root.pk}/{page}"
    form = {"password1": "taken-over-123!", "password2": "taken-over-123!", "usable_password": "true",
            "post": "yes", **_form(root, is_active="", is_superuser="")}
    assert client.post(url, form).status_code == 403
    root = User.objects.get(pk=root.pk)
    assert root.is_superuser and root.is_active and root.check_password(PASSWORD)


def test_an_admin_only_reads_a_superusers_page(client, admin, root):
    page = client.get(f"/admin/auth/user/{root.pk}/change/").content.decode()
    assert 'name="_save"' not in page and 'name="username"' not in page


def test_bulk_deleting_a_superuser_is_refused(client, admin, root):
    ana = User.objects.create_user("ana", password=PASSWORD)
    response = client.post("/admin/auth/user/", {"action": "delete_selected", "_selected_action": [ana.pk, root.pk],
                                                 "post": "yes"})
    assert response.status_code == 403
    assert User.objects.filter(pk__in=[ana.pk, root.pk]).count() == 2


def test_an_admin_cannot_log_a_superuser_out_everywhere(client, admin, root):
    laptop = Client()
    laptop.force_login(root)
    client.post("/admin/auth/user/", {"action": "logout_everywhere", "_selected_action": [root.pk]})
    assert laptop.get("/account/").status_code == 200


def test_a_superuser_grants_and_edits_superuser_status(client, root):
    client.force_login(root)
    ana = User.objects.create_user("ana", password=PASSWORD)
    assert 'name="is_superuser"' in client.get(f"/admin/auth/user/{ana.pk}/change/").content.decode()
    assert client.post(f"/admin/auth/user/{ana.pk}/change/", _form(ana, is_superuser="on")).status_code == 302
    assert User.objects.get(pk=ana.pk).is_superuser


def test_an_admin_deletes_an_ordinary_user_whose_events_stay(client, admin):
    ana = User.objects.create_user("ana", password=PASSWORD)
    AuditEvent.objects.create(action="login", user=ana, username="ana")
    assert client.post(f"/admin/auth/user/{ana.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not User.objects.filter(username="ana").exists()
    assert AuditEvent.objects.filter(username="ana", user=None).exists()
