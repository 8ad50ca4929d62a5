"""Provider groups → role and teams, at every single sign-on log-in and session refresh, against the real test
provider; manual memberships are kept and shown as manual."""

import time

import pytest
import requests
from django.contrib.auth import get_user
from django.contrib.auth.models import User

from batches.models import AuditEvent
from teams import services
from teams.models import ProviderMembership, Team


@pytest.fixture
def teams(db):
    return {name: Team.objects.create(name=name) for name in ("Red", "Blue", "Green")}


def _access(username: str) -> tuple[list[str], list[str]]:
    user = User.objects.get(username=username)
    return sorted(g.name for g in user.groups.all()), sorted(t.name for t in user.teams.all())


def _expire_id_token(client) -> None:
    session = client.session
    session["oidc_id_token_expiration"] = time.time() - 1
    session.save()


def test_removing_groups_at_the_provider_removes_provider_given_access_at_the_next_log_in(
        client, oidc, sso_log_in, teams):
    oidc.add_user("alice", email="alice@example.com", groups=["batch-operators", "blue-team"])
    sso_log_in("alice")
    assert _access("alice@example.com") == (["Operator"], ["Blue", "Red"])
    alice = User.objects.get(username="alice@example.com")
    services.add_member(team=teams["Green"], user=alice)  # by hand, in the app
    client.logout()

    oidc.change_user("alice", groups=["batch-viewers"])
    sso_log_in("alice")
    assert _access("alice@example.com") == (["Viewer"], ["Green"])  # the manual membership stays
    assert not ProviderMembership.objects.filter(user=alice).exists()
    details = set(AuditEvent.objects.filter(username="single sign-on").values_list("action", "detail"))
    assert ("role_changed", "groups +Viewer -Operator (from the provider's groups)") in details
    assert ("member_remove", "left team Red (no longer in provider group batch-operators)") in details
    client.logout()

    oidc.change_user("alice", groups=[])
    sso_log_in("alice")
    assert _access("alice@example.com") == ([], ["Green"])
    assert client.get("/").status_code == 403  # logged in, with no role: nothing to see


def test_a_team_already_joined_by_hand_stays_manual(client, oidc, sso_log_in, teams):
    oidc.add_user("bob", email="bob@example.com", groups=["batch-operators"])
    sso_log_in("bob")
    bob = User.objects.get(username="bob@example.com")
    client.logout()
    services.remove_member(team=teams["Red"], user=bob)  # an admin takes Bob out of the provider's team...
    assert not ProviderMembership.objects.filter(user=bob).exists()
    services.add_member(team=teams["Red"], user=bob)  # ...and puts him back by hand
    oidc.change_user("bob", groups=["batch-viewers"])
    sso_log_in("bob")
    assert _access("bob@example.com") == (["Viewer"], ["Red"])


def test_adding_by_hand_a_member_the_provider_gave_makes_the_membership_manual(client, oidc, sso_log_in, teams):
    oidc.add_user("carol", email="carol@example.com", groups=["batch-operators"])
    sso_log_in("carol")
    carol = User.objects.get(username="carol@example.com")
    client.logout()
    assert services.add_member(team=teams["Red"], user=carol)  # already in Red through the provider
    assert not ProviderMembership.objects.filter(user=carol).exists()
    oidc.change_user("carol", groups=["batch-viewers"])
    sso_log_in("carol")
    assert _access("carol@example.com") == (["Viewer"], ["Red"])
    assert services.add_member(team=teams["Red"], user=carol) is False  # manual already: nothing to do


def test_a_mapped_team_that_does_not_exist_is_not_created(client, oidc, sso_log_in, settings, db):
    oidc.add_user("carl", email="carl@example.com", groups=["batch-operators"])
    sso_log_in("carl")
    assert not Team.objects.exists()  # a first team would hide every connection from everyone
    assert _access("carl@example.com") == (["Operator"], [])


def test_the_access_page_shows_which_memberships_are_manual(client, oidc, sso_log_in, teams, login):
    oidc.add_user("dora", email="dora@example.com", groups=["batch-operators"])
    sso_log_in("dora")
    services.add_member(team=teams["Green"], user=User.objects.get(username="dora@example.com"))
    login("admin")
    page = client.get("/access/").content.decode()
    assert 'Green <span class="small">(manual)</span>, Red <span class="small">(single sign-on)</span>' in page


def test_a_session_refresh_applies_changed_groups_and_returns_to_the_page(client, oidc, sso_log_in, teams):
    browser = requests.Session()  # the same browser, still logged in at the provider
    oidc.add_user("erin", email="erin@example.com", groups=["batch-operators"])
    sso_log_in("erin", browser=browser)
    oidc.change_user("erin", groups=["batch-viewers", "blue-team"])
    assert client.get("/account/").status_code == 200  # the ID token is still fresh: nothing asked
    _expire_id_token(client)

    refresh = client.get("/account/")
    assert refresh.status_code == 302 and refresh["Location"].startswith(oidc.issuer)
    assert "prompt=none" in refresh["Location"]
    back = oidc.sign_in(refresh["Location"], "erin", browser=browser)
    answer = client.get(back.removeprefix("http://testserver"))
    assert answer.status_code == 302 and answer["Location"] == "/account/"
    assert get_user(client).username == "erin@example.com"
    assert _access("erin@example.com") == (["Viewer"], ["Blue"])
    assert not AuditEvent.objects.filter(action="login").exclude(pk=AuditEvent.objects.filter(
        action="login").order_by("pk").first().pk).exists()  # a refresh is not a new log-in


def test_a_refresh_the_provider_refuses_ends_the_session(client, oidc, sso_log_in, teams):
    """Someone removed at the provider (here: no longer logged in there) is logged out at the next refresh."""
    oidc.add_user("fred", email="fred@example.com", groups=["batch-operators"])
    sso_log_in("fred")
    _expire_id_token(client)
    refresh = client.get("/")
    back = oidc.sign_in(refresh["Location"], "fred", browser=requests.Session())  # a browser without their session
    assert "error=login_required" in back
    answer = client.get(back.removeprefix("http://testserver"))
    assert answer["Location"] == "/login/" and not get_user(client).is_authenticated


def test_a_refresh_with_an_email_no_longer_allowed_ends_the_session(client, oidc, sso_log_in, settings, teams):
    browser = requests.Session()
    oidc.add_user("gus", email="gus@example.com", groups=["batch-operators"])
    sso_log_in("gus", browser=browser)
    oidc.change_user("gus", email_verified=False)
    _expire_id_token(client)
    back = oidc.sign_in(client.get("/")["Location"], "gus", browser=browser)
    client.get(back.removeprefix("http://testserver"))
    assert not get_user(client).is_authenticated


def test_an_htmx_request_that_needs_a_refresh_gets_hx_redirect(client, oidc, sso_log_in):
    oidc.add_user("hal", email="hal@example.com", groups=["batch-viewers"])
    sso_log_in("hal")
    _expire_id_token(client)
    response = client.get("/?status=in_progress", HTTP_HX_REQUEST="true",
                          HTTP_HX_CURRENT_URL="http://testserver/?connection=sim")
    assert response.status_code == 200 and response["HX-Redirect"].startswith(oidc.issuer)
    assert "prompt=none" in response["HX-Redirect"]
    assert client.session["oidc_login_next"] == "/?connection=sim"  # back to the page, not to the fragment
    poll = client.get("/", HTTP_X_BATCHBOARD_POLL="1")
    assert poll.status_code == 200 and poll["HX-Redirect"].startswith(oidc.issuer)


def test_password_sessions_are_never_sent_to_the_provider(client, oidc, login):
    login("viewer")
    session = client.session
    session["oidc_id_token_expiration"] = 0
    session.save()
    assert client.get("/").status_code == 200
