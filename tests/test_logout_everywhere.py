""""Log out everywhere": a user ends all of their own sessions; an Admin ends anyone's."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import SessionEpoch

from tests.conftest import PASSWORD


@pytest.fixture
def phone(db):
    """A second browser, logged in as the same user as the test client."""
    return Client()


def test_a_user_logs_out_everywhere_and_every_session_ends(client, login, phone):
    user = login("viewer")
    phone.force_login(user)
    assert phone.get("/").status_code == 200

    response = client.post("/account/logout-everywhere/")

    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 302
    assert phone.get("/").status_code == 302
    assert phone.get("/", HTTP_HX_REQUEST="true")["HX-Redirect"].startswith("/login/")


def test_logging_in_again_afterwards_works(client, login, phone):
    user = login("viewer")
    client.post("/account/logout-everywhere/")
    assert client.post("/login/", {"username": user.username, "password": PASSWORD}).status_code == 302
    assert client.get("/").status_code == 200


def test_the_account_page_offers_it(client, login):
    login("norole")
    page = client.get("/account/")
    assert page.status_code == 200 and b"Log out everywhere" in page.content


def test_an_admin_logs_another_user_out_everywhere_from_the_admin(client, login, phone):
    login("admin")
    victim = User.objects.create_user("ana", password=PASSWORD)
    bystander = User.objects.create_user("bob", password=PASSWORD)
    phone.force_login(victim)
    third = Client()
    third.force_login(bystander)

    response = client.post("/admin/auth/user/", {"action": "logout_everywhere", "_selected_action": [victim.pk]})

    assert response.status_code == 302
    assert phone.get("/account/").status_code == 302
    assert third.get("/account/").status_code == 200
    assert client.get("/admin/").status_code == 200  # the Admin's own session goes on
    epoch = SessionEpoch.objects.get(user=victim)
    assert epoch.epoch == 1 and epoch.changed_by == "admin" and epoch.changed_at is not None


def test_the_admin_action_needs_change_user(client, roles, phone):
    from django.contrib.auth.models import Permission

    staff = User.objects.create_user("helper", password=PASSWORD, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_user"))
    client.force_login(staff)
    victim = User.objects.create_user("ana", password=PASSWORD)
    phone.force_login(victim)

    client.post("/admin/auth/user/", {"action": "logout_everywhere", "_selected_action": [victim.pk]})

    assert phone.get("/account/").status_code == 200
