"""Single sign-on against a real OpenID Connect provider (tests/oidc_provider/): the log-in, and each way the provider
or the person can be refused. Our app is driven by Django's test client, the provider by requests."""

import logging

import pytest
from django.contrib.auth.models import User

from accounts.models import OIDCIdentity
from batches.models import AuditEvent
from teams.models import ProviderMembership, Team
from tests.oidc_provider import authorize_params


def _logged_in_user(client):
    from django.contrib.auth import get_user

    user = get_user(client)
    return user if user.is_authenticated else None


def _refusal(response) -> str:
    from django.contrib.messages import get_messages

    assert response.status_code == 302 and response["Location"] == "/login/", response
    return " ".join(str(m) for m in get_messages(response.wsgi_request))


@pytest.fixture
def red_and_blue(db):
    return Team.objects.create(name="Red"), Team.objects.create(name="Blue")


def test_first_log_in_creates_the_user_with_the_mapped_role_and_teams(client, oidc, sso_log_in, red_and_blue):
    oidc.add_user("alice", email="Alice@example.com", groups=["batch-operators", "blue-team", "unmapped"],
                  name="Alice")
    response = sso_log_in("alice", next="/access/")
    assert response.status_code == 302 and response["Location"] == "/access/"
    user = _logged_in_user(client)
    assert user.username == "alice@example.com" and user.email == "Alice@example.com"
    assert not user.has_usable_password()
    assert [g.name for g in user.groups.all()] == ["Operator"]
    assert sorted(t.name for t in user.teams.all()) == ["Blue", "Red"]
    assert ProviderMembership.objects.filter(user=user).count() == 2
    identity = OIDCIdentity.objects.get(user=user)
    assert identity.issuer == oidc.issuer and identity.subject.isdigit()  # the provider's sub, not the e-mail
    actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    assert {"user_created", "role_changed", "member_add", "login"} <= set(actions)
    assert client.get("/").status_code == 200  # an Operator in Red (no grants yet: sees no batch, but may look)


def test_the_authorization_request_uses_pkce_and_a_nonce_and_checks_the_state(client, oidc, sso_log_in):
    oidc.add_user("bob", email="bob@example.com", groups=["batch-viewers"])
    start = client.get("/oidc/authenticate/")
    params = authorize_params(start["Location"])
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) >= 43
    assert len(params["nonce"]) >= 32 and len(params["state"]) >= 32
    assert params["scope"] == "openid email profile" and params["client_id"] == oidc.client_id
    assert "secret" not in start["Location"]
    back = oidc.sign_in(start["Location"], "bob").removeprefix("http://testserver")
    assert client.get(back).status_code == 302 and _logged_in_user(client).username == "bob@example.com"
    assert client.get(back).status_code == 400  # a state is good once: a replayed callback is refused
    client.logout()
    assert "did not complete" in _refusal(client.get(back))  # and in another session it was never known
    assert _logged_in_user(client) is None


def test_a_later_log_in_finds_the_user_by_subject_not_by_email(client, oidc, sso_log_in):
    oidc.add_user("carol", email="carol@example.com", groups=["batch-viewers"])
    sso_log_in("carol")
    first = _logged_in_user(client)
    client.logout()
    oidc.change_user("carol", email="carol.new@example.com")
    sso_log_in("carol")
    assert _logged_in_user(client).pk == first.pk
    assert User.objects.count() == 1


@pytest.mark.parametrize("knob,value", [("audience", "someone-else"), ("expired", True),
                                        ("issuer", "https://impostor.example")])
def test_an_id_token_not_for_us_expired_or_from_another_issuer_is_refused(client, oidc, sso_log_in, knob, value,
                                                                          caplog):
    oidc.add_user("dave", email="dave@example.com", groups=["batch-admins"])
    oidc.set_knobs(**{knob: value})
    with caplog.at_level(logging.INFO):
        message = _refusal(sso_log_in("dave"))
    assert "could not be verified" in message
    assert _logged_in_user(client) is None and not User.objects.exists()
    refused = AuditEvent.objects.get(action="oidc_refused")
    assert not refused.ok and {"audience": "Audience", "expired": "expired", "issuer": "issuer"}[knob] in refused.detail
    assert oidc.client_secret not in caplog.text and "eyJ" not in caplog.text  # neither the secret nor a token


def test_an_unverified_email_is_refused(client, oidc, sso_log_in):
    oidc.add_user("erin", email="erin@example.com", groups=["batch-admins"], email_verified=False)
    assert "not verified" in _refusal(sso_log_in("erin"))
    assert _logged_in_user(client) is None and not User.objects.exists()


@pytest.mark.parametrize("email", ["frank@elsewhere.org", "frank@example.com.evil.org", "frank@sub.example.com"])
def test_an_email_outside_the_allowed_domains_is_refused(client, oidc, sso_log_in, email):
    oidc.add_user("frank", email=email, groups=["batch-admins"])
    assert "not in a domain allowed" in _refusal(sso_log_in("frank"))
    assert _logged_in_user(client) is None and not User.objects.exists()


def test_a_leading_dot_allows_subdomains(client, oidc, sso_log_in, settings):
    settings.OIDC_ALLOWED_EMAIL_DOMAINS = [".example.com"]
    oidc.add_user("gina", email="gina@eu.example.com", groups=["batch-viewers"])
    sso_log_in("gina")
    assert _logged_in_user(client).email == "gina@eu.example.com"


def test_an_existing_superuser_is_not_taken_over_by_email_until_linked(client, oidc, sso_log_in):
    boss = User.objects.create_superuser("boss", "boss@example.com", "pw-for-tests-only-123")
    oidc.add_user("mallory", email="BOSS@example.com", groups=["batch-admins"])
    message = _refusal(sso_log_in("mallory"))
    assert "already exists" in message and "link_oidc" in message
    assert _logged_in_user(client) is None
    assert not OIDCIdentity.objects.exists() and User.objects.count() == 1
    refused = AuditEvent.objects.get(action="oidc_refused").detail
    assert "matches an existing local account; not linked" in refused

    # The administrator, sure it is the same person, links the provider account by its subject (from the audit).
    from django.core.management import call_command

    subject = refused.rpartition("(sub ")[2].partition(" at ")[0]
    call_command("link_oidc", "boss", oidc.issuer, subject, stdout=open("/dev/null", "w"))
    sso_log_in("mallory")
    assert _logged_in_user(client).pk == boss.pk
    assert AuditEvent.objects.filter(action="oidc_linked", target="boss").exists()


def test_an_existing_username_is_not_taken_over_either(client, oidc, sso_log_in):
    User.objects.create_user("hank@example.com", email="", password="pw-for-tests-only-123")
    oidc.add_user("hank", email="hank@example.com")
    assert "already exists" in _refusal(sso_log_in("hank"))


def test_a_deactivated_user_cannot_log_in(client, oidc, sso_log_in):
    oidc.add_user("ivy", email="ivy@example.com", groups=["batch-viewers"])
    sso_log_in("ivy")
    User.objects.filter(username="ivy@example.com").update(is_active=False)
    client.logout()
    assert "deactivated" in _refusal(sso_log_in("ivy"))
    assert _logged_in_user(client) is None


def test_refusing_consent_at_the_provider_logs_nobody_in(client, oidc, sso_log_in):
    oidc.add_user("jack", email="jack@example.com")
    assert "did not log you in (access_denied)" in _refusal(sso_log_in("jack", consent=False))
    assert _logged_in_user(client) is None


def test_the_login_page_offers_the_provider_only_when_configured(client, db, settings):
    settings.OIDC_ISSUER = ""
    page = client.get("/login/").content.decode()
    assert "Log in with" not in page and 'name="password"' in page
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404
    settings.OIDC_ISSUER, settings.OIDC_PROVIDER_NAME = "https://idp.example.com/realms/acme", "Acme Keycloak"
    settings.OIDC_CLIENT_SECRET = "must-never-be-shown"
    page = client.get("/login/?next=/access/").content.decode()
    assert "Log in with Acme Keycloak" in page and "/oidc/authenticate/?next=/access/" in page
    assert "must-never-be-shown" not in page


def test_a_provider_that_is_down_sends_back_to_the_login_page(client, db, settings):
    """Discovery happens at the first log-in, not at start-up: the app runs while the provider is down."""
    from accounts import oidc

    oidc.forget_discovery()
    settings.OIDC_ISSUER, settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = "http://127.0.0.1:1/realm", "c", "s"
    assert client.get("/login/").status_code == 200
    assert "cannot be reached" in _refusal(client.get("/oidc/authenticate/"))
    oidc.forget_discovery()


def test_a_password_form_never_reaches_the_provider(client, oidc, login):
    """The backend acts only on our callback (nonce and PKCE verifier from the session), never on ?code= in a
    password log-in's URL."""
    from tests.conftest import PASSWORD

    User.objects.create_user("kim", password=PASSWORD)
    response = client.post("/login/?code=abc&state=def", {"username": "kim", "password": PASSWORD})
    assert response.status_code == 302
    assert _logged_in_user(client).username == "kim"
    assert not AuditEvent.objects.filter(action="oidc_refused").exists()


def test_a_forged_error_link_to_the_callback_logs_nobody_out(client, oidc, login):
    """/oidc/callback/?error=… that answers no log-in of ours (no state we issued) is shown and does nothing."""
    login("viewer")
    response = client.get("/oidc/callback/?error=access_denied")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 200  # still logged in
    response = client.get("/oidc/callback/?error=access_denied&state=not-ours")
    assert client.get("/").status_code == 200


def test_a_discovery_document_naming_its_issuer_oddly_is_refused(db, settings):
    from accounts.oidc import ProviderUnavailable, _check_discovery

    settings.OIDC_ALLOW_HTTP = False
    endpoints = {key: f"https://sso.example.com/{key}" for key in ("authorization_endpoint", "token_endpoint",
                                                                  "jwks_uri")}
    _check_discovery({"issuer": "https://sso.example.com/", **endpoints}, "https://sso.example.com")  # a slash: fine
    for issuer in (5, None, ["https://sso.example.com"], "https://other.example.com"):
        with pytest.raises(ProviderUnavailable):
            _check_discovery({"issuer": issuer, **endpoints}, "https://sso.example.com")
