"""Who may do what: every route × role × method against an explicit table of expected statuses.

A route added to the URL configuration without a row here fails test_every_route_has_a_decision.
"""

import pytest
from django.urls import get_resolver, reverse

from tests.conftest import ROLES

HX = {"HTTP_HX_REQUEST": "true"}
# name -> {method: (anonymous, no role, viewer, operator, admin)}
MATRIX = {
    "batch-list": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-detail": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-files": {"GET": (302, 403, 200, 200, 200)},
    "batch-download": {"GET": (302, 403, 403, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-cancel": {"GET": (302, 403, 403, 200, 200), "POST": (302, 403, 403, 302, 302)},
    "batch-refresh": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 403, 302, 302)},
    # retries and uploads need submit_batch (and request content): Operators and Admins. The batch here has one
    # indexed request and no archived input, so a retry file answers 409, and an empty upload 400.
    "batch-retry": {"GET": (302, 403, 403, 200, 200), "POST": (302, 403, 403, 302, 302)},
    "batch-retry-file": {"GET": (302, 403, 403, 409, 409), "POST": (302, 405, 405, 405, 405)},
    "batch-lineage": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-merged-results": {"GET": (302, 403, 403, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-new": {"GET": (302, 403, 403, 200, 200), "POST": (302, 403, 403, 400, 400)},
    "batch-requests": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-request": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    # the JSONL export is content (view_request_content); the CSV one (".csv": the same route) is not
    "batch-requests-export": {"GET": (302, 403, 403, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-requests-export.csv": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "healthz": {"GET": (200, 200, 200, 200, 200), "POST": (405, 405, 405, 405, 405)},
    # Public, but verified: without a signature every role gets the same 400 (a session counts for nothing).
    "openai-webhook": {"GET": (405, 405, 405, 405, 405), "POST": (400, 400, 400, 400, 400)},
    # Off (404) unless METRICS_TOKEN or METRICS_ALLOWED_IPS is set; then only the token or address lets in:
    # METRICS_MATRIX.
    "metrics": {"GET": (404, 404, 404, 404, 404), "POST": (405, 405, 405, 405, 405)},
    "login": {"GET": (200, 302, 302, 302, 302)},
    "logout": {"GET": (405, 405, 405, 405, 405), "POST": (302, 302, 302, 302, 302)},
    "account": {"GET": (302, 200, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "logout-everywhere": {"GET": (302, 405, 405, 405, 405), "POST": (302, 302, 302, 302, 302)},
    "admin:index": {"GET": (302, 302, 302, 302, 200)},
    # Single sign-on: off (404) without OIDC_ISSUER; with it, OIDC_MATRIX.
    "oidc_authentication_init": {"GET": (404, 404, 404, 404, 404), "POST": (405, 405, 405, 405, 405)},
    "oidc_authentication_callback": {"GET": (404, 404, 404, 404, 404), "POST": (405, 405, 405, 405, 405)},
    "access": {"GET": (302, 403, 403, 403, 200), "POST": (302, 405, 405, 405, 405)},
    # alert channels: Admins (change_channel). An empty form is a 400; "delete" comes last, as the team test
    # below walks these rows in order with one channel (an email one: the test backend, nothing leaves).
    "channel-list": {"GET": (302, 403, 403, 403, 200), "POST": (302, 405, 405, 405, 405)},
    "channel-new": {"GET": (302, 403, 403, 403, 200), "POST": (302, 403, 403, 403, 400)},
    "channel-detail": {"GET": (302, 403, 403, 403, 200), "POST": (302, 403, 403, 403, 400)},
    "channel-test": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 403, 403, 302)},
    "channel-delete": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 403, 403, 302)},
    # usage: the page and its CSV tables to every role (scoped); prices and budgets to Admins (an empty form is a
    # 400); each "delete" after the rows that need the price or budget.
    "usage": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "usage-export": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "usage-prices": {"GET": (302, 403, 403, 403, 200), "POST": (302, 403, 403, 403, 400)},
    "usage-price": {"GET": (302, 403, 403, 403, 200), "POST": (302, 403, 403, 403, 400)},
    "usage-price-delete": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 403, 403, 302)},
    "usage-budgets": {"GET": (302, 403, 403, 403, 200), "POST": (302, 403, 403, 403, 400)},
    "usage-budget": {"GET": (302, 403, 403, 403, 200), "POST": (302, 403, 403, 403, 400)},
    "usage-budget-delete": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 403, 403, 302)},
}
PUBLIC = {"healthz", "login", "logout", "openai-webhook", "metrics", "oidc_authentication_init",
          "oidc_authentication_callback"}  # the allow-list: everything else needs a login


ODD_CUSTOM_ID = "a/b c ✓"


def _channel(batch):
    """The channel of the channel routes: email, for the batch's connection (so a team that cannot see the
    batch cannot manage the channel either)."""
    from notifications.models import Channel

    channel = Channel.objects.filter(name="Matrix").first()
    if channel is None:
        channel = Channel(name="Matrix", kind="email", events=["batch.failed"])
        channel.set_target("ops@example.com")
        channel.save()
        channel.connections.set([batch.connection])
    return channel


def _price():
    from usage.models import ModelPrice

    return ModelPrice.objects.get_or_create(model="matrix-model", valid_from="2026-01-01", defaults={
        "input": 1, "cached_input": 1, "output": 1})[0]


def _budget(batch):
    """The budget of the budget routes: on the batch's connection (so a team that cannot see the batch cannot see
    the budget either)."""
    from usage.models import Budget

    return Budget.objects.get_or_create(name="Matrix", defaults={"amount_usd": 10,
                                                                 "connection": batch.connection})[0]


def _url(name: str, batch) -> str:
    if name in ("channel-detail", "channel-test", "channel-delete"):
        return reverse(name, kwargs={"pk": _channel(batch).pk})
    if name in ("usage-price", "usage-price-delete"):
        return reverse(name, kwargs={"pk": _price().pk})
    if name in ("usage-budget", "usage-budget-delete"):
        return reverse(name, kwargs={"pk": _budget(batch).pk})
    if name == "usage-export":
        return reverse(name, kwargs={"kind": "cost"})
    name, _, kind = name.partition(".")
    kwargs = {"slug": batch.connection.slug, "batch_id": batch.batch_id}
    if name == "batch-download":
        kwargs["kind"] = "input"
    if name == "batch-merged-results":
        kwargs["kind"] = "output"
    if name == "batch-requests-export":
        kwargs["kind"] = kind or "jsonl"
    if name == "batch-request":
        kwargs["custom_id"] = ODD_CUSTOM_ID
    if name.startswith("batch-") and name not in ("batch-list", "batch-new"):
        return reverse(name, kwargs=kwargs)
    if name == "openai-webhook":
        return reverse(name, kwargs={"slug": batch.connection.slug})
    return reverse(name)


def _index(batch):
    """One indexed request of `batch`, for the request routes."""
    from batches.models import BatchRequest

    BatchRequest.objects.create(batch=batch, custom_id=ODD_CUSTOM_ID, outcome=2, status_code=400,
                                error_code="invalid_request", preview="the prompt said…")
    return batch


CASES = [(name, method, role, expected[ROLES.index(role)])
         for name, methods in MATRIX.items() for method, expected in methods.items() for role in ROLES]


@pytest.mark.parametrize("name,method,role,expected", CASES)
def test_the_permission_matrix(client, login, synced_batch, name, method, role, expected):
    _index(synced_batch)
    login(role)
    response = getattr(client, method.lower())(_url(name, synced_batch))
    assert response.status_code == expected
    if expected == 302 and role == "anonymous" and name not in PUBLIC:
        assert response["Location"].startswith("/login/") or response["Location"].startswith("/admin/login/")
    if expected == 403:
        assert b"Not allowed" in response.content  # a readable page, not a bare status


@pytest.mark.parametrize("role", ROLES)
def test_the_matrix_holds_for_a_batch_whose_id_is_path_like(client, login, synced_batch, role):
    from batches.store import store_batch

    odd, _ = store_batch(synced_batch.connection, {**synced_batch.raw, "id": "gw/batch/../42"})
    _index(odd)
    login(role)
    for name, methods in MATRIX.items():
        if name.startswith("batch-") and name not in ("batch-list", "batch-new"):
            for method, expected in methods.items():
                response = getattr(client, method.lower())(_url(name, odd))
                assert response.status_code == expected[ROLES.index(role)], (name, method)


# The matrix with two connections and two teams: Red may use "sim" up to operator, Blue "other" up to viewer.
# (the user's team, the batch's connection) -> the batch routes' rows; every other route answers as in MATRIX.
ANOTHER_TEAMS_BATCH = {  # a batch of a connection the user cannot see: 404, so ids do not leak
    "batch-detail": {"GET": (302, 403, 404, 404, 404), "POST": (302, 405, 405, 405, 405)},
    "batch-files": {"GET": (302, 403, 404, 404, 404)},
    "batch-download": {"GET": (302, 403, 404, 404, 404), "POST": (302, 405, 405, 405, 405)},
    "batch-cancel": {"GET": (302, 403, 404, 404, 404), "POST": (302, 403, 404, 404, 404)},
    "batch-refresh": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 404, 404, 404)},
    "batch-retry": {"GET": (302, 403, 404, 404, 404), "POST": (302, 403, 404, 404, 404)},
    "batch-retry-file": {"GET": (302, 403, 404, 404, 404), "POST": (302, 405, 405, 405, 405)},
    "batch-lineage": {"GET": (302, 403, 404, 404, 404), "POST": (302, 405, 405, 405, 405)},
    "batch-merged-results": {"GET": (302, 403, 404, 404, 404), "POST": (302, 405, 405, 405, 405)},
    "batch-requests": {"GET": (302, 403, 404, 404, 404), "POST": (302, 405, 405, 405, 405)},
    "batch-request": {"GET": (302, 403, 404, 404, 404), "POST": (302, 405, 405, 405, 405)},
    "batch-requests-export": {"GET": (302, 403, 404, 404, 404), "POST": (302, 405, 405, 405, 405)},
    "batch-requests-export.csv": {"GET": (302, 403, 404, 404, 404), "POST": (302, 405, 405, 405, 405)},
}
VIEWER_CEILING = {  # the team's grant caps every role at viewer: read, nothing else
    "batch-detail": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-files": {"GET": (302, 403, 200, 200, 200)},
    "batch-download": {"GET": (302, 403, 403, 403, 403), "POST": (302, 405, 405, 405, 405)},
    "batch-cancel": {"GET": (302, 403, 403, 403, 403), "POST": (302, 403, 403, 403, 403)},
    "batch-refresh": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 403, 403, 403)},
    "batch-retry": {"GET": (302, 403, 403, 403, 403), "POST": (302, 403, 403, 403, 403)},
    "batch-retry-file": {"GET": (302, 403, 403, 403, 403), "POST": (302, 405, 405, 405, 405)},
    "batch-lineage": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-merged-results": {"GET": (302, 403, 403, 403, 403), "POST": (302, 405, 405, 405, 405)},
    "batch-new": {"GET": (302, 403, 403, 403, 403), "POST": (302, 403, 403, 403, 403)},  # no connection to send to
    "batch-requests": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-request": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
    "batch-requests-export": {"GET": (302, 403, 403, 403, 403), "POST": (302, 405, 405, 405, 405)},
    "batch-requests-export.csv": {"GET": (302, 403, 200, 200, 200), "POST": (302, 405, 405, 405, 405)},
}
ANOTHER_TEAMS_CHANNEL = {  # a channel for the batch's connection, which Red does not see: 404 to their Admin
    "channel-detail": {"GET": (302, 403, 403, 403, 404), "POST": (302, 403, 403, 403, 404)},
    "channel-test": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 403, 403, 404)},
    "channel-delete": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 403, 403, 404)},
}
ANOTHER_TEAMS_BUDGET = {  # a budget on the batch's connection, which Red does not see: 404 to their Admin
    "usage-budget": {"GET": (302, 403, 403, 403, 404), "POST": (302, 403, 403, 403, 404)},
    "usage-budget-delete": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 403, 403, 404)},
}
PRICES_ARE_EVERYONES = {  # an Admin limited to their team's connections may not change every team's prices
    "usage-prices": {"GET": (302, 403, 403, 403, 403), "POST": (302, 403, 403, 403, 403)},
    "usage-price": {"GET": (302, 403, 403, 403, 403), "POST": (302, 403, 403, 403, 403)},
    "usage-price-delete": {"GET": (302, 405, 405, 405, 405), "POST": (302, 403, 403, 403, 403)},
}
TEAM_MATRIX = {("Red", "sim"): {**MATRIX, **PRICES_ARE_EVERYONES},
               ("Red", "other"): {**ANOTHER_TEAMS_BATCH, **ANOTHER_TEAMS_CHANNEL, **ANOTHER_TEAMS_BUDGET,
                                  **PRICES_ARE_EVERYONES},
               ("Blue", "other"): {**VIEWER_CEILING, **PRICES_ARE_EVERYONES}}


@pytest.mark.parametrize("team,slug", TEAM_MATRIX)
@pytest.mark.parametrize("role", ROLES)
def test_the_matrix_with_two_teams_and_two_connections(client, login, synced_batch, two_teams, team, slug, role):
    from batches.store import store_batch

    other, _ = store_batch(two_teams[1].grants.get().connection, {**synced_batch.raw, "id": "batch_of_other"})
    _index(synced_batch)
    _index(other)
    batch = synced_batch if slug == "sim" else other
    user = login(role, team=team)
    wrong = []
    for name, methods in MATRIX.items():
        for method, expected in TEAM_MATRIX[team, slug].get(name, methods).items():
            if user:  # log in again each time, afresh: the log-out routes end the session (or all of them)
                client.force_login(type(user).objects.get(pk=user.pk))
            response = getattr(client, method.lower())(_url(name, batch))
            if response.status_code != expected[ROLES.index(role)]:
                wrong.append((name, method, response.status_code, expected[ROLES.index(role)]))
            if name == "batch-list" and response.status_code == 200:
                page = response.content.decode()
                seen = {"sim": synced_batch.batch_id in page, "other": "batch_of_other" in page}
                if seen != {"sim": team == "Red", "other": team == "Blue"}:
                    wrong.append((name, "shows", seen))
            if response.status_code == 404 and batch.batch_id in response.content.decode():
                wrong.append((name, method, "404 names the id"))
    assert not wrong, wrong


@pytest.mark.parametrize("role", ROLES)
def test_metrics_let_in_the_token_or_address_only_whatever_the_role(client, login, settings, db, role):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "scrape-token", ["192.0.2.1"]
    login(role)
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1").status_code == 200


def test_every_route_has_a_decision():
    names = set()
    for pattern in get_resolver().url_patterns:
        if getattr(pattern, "namespace", None) == "admin":
            names.add("admin:index")
        elif hasattr(pattern, "url_patterns"):
            names.update(p.name for p in pattern.url_patterns)
        else:
            names.add(pattern.name)
    decided = {name.partition(".")[0] for name in MATRIX}  # "name.csv": a second row for one route
    assert names == decided, f"routes without a row in MATRIX: {names - decided}"


def test_forbidden_buttons_are_not_shown_to_viewers(client, login, synced_batch):
    login("viewer")
    page = client.get(_url("batch-detail", synced_batch)).content.decode()
    assert "Cancel batch" not in page and "Refresh now" not in page and "Download input" not in page
    client.logout()
    login("operator")
    page = client.get(_url("batch-detail", synced_batch)).content.decode()
    assert "Cancel batch" in page and "Refresh now" in page and "Download input" in page


# What shows request content, and the marker each shows it by (the indexed preview, here).
CONTENT_PAGES = {"batch-requests": "the prompt said", "batch-request": "the prompt said",
                 "batch-requests-export.csv": "the prompt said"}


@pytest.mark.parametrize("team,slug", [("Red", "sim"), ("Blue", "other")])
@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_only_view_request_content_shows_content(client, login, synced_batch, two_teams, team, slug, role):
    """The role's view_request_content, capped by the team's grant: an Operator or Admin in a team granted a
    connection as viewer sees no content there either."""
    from batches.store import store_batch

    other, _ = store_batch(two_teams[1].grants.get().connection, {**synced_batch.raw, "id": "batch_of_other"})
    batch = _index(synced_batch if slug == "sim" else other)
    login(role, team=team)
    content = role != "viewer" and team == "Red"
    for name, marker in CONTENT_PAGES.items():
        response = client.get(_url(name, batch))
        assert response.status_code == 200, name
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert (marker in body.decode()) == content, (name, role, team)


def test_login_refuses_an_open_redirect(client, db):
    from django.contrib.auth.models import User

    User.objects.create_user("eve", password="pw-for-tests-only-123")
    response = client.post("/login/?next=https://evil.example/", {
        "username": "eve", "password": "pw-for-tests-only-123", "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/"


def test_login_follows_a_local_next(client, db):
    from django.contrib.auth.models import User

    User.objects.create_user("eve", password="pw-for-tests-only-123")
    response = client.post("/login/", {"username": "eve", "password": "pw-for-tests-only-123",
                                       "next": "/batches/sim/batch_x/"})
    assert response["Location"] == "/batches/sim/batch_x/"


# With single sign-on on: anyone may start a log-in (off to the provider); a callback without the provider's answer
# goes back to the log-in page and logs nobody out.
OIDC_MATRIX = {
    "oidc_authentication_init": {"GET": (302, 302, 302, 302, 302), "POST": (405, 405, 405, 405, 405)},
    "oidc_authentication_callback": {"GET": (302, 302, 302, 302, 302), "POST": (405, 405, 405, 405, 405)},
}


@pytest.mark.parametrize("role", ROLES)
def test_the_single_sign_on_routes_when_configured(client, login, oidc, role):
    from django.contrib.auth import get_user

    user = login(role)
    for name, methods in OIDC_MATRIX.items():
        for method, expected in methods.items():
            response = getattr(client, method.lower())(reverse(name))
            assert response.status_code == expected[ROLES.index(role)], (name, method)
            if response.status_code == 302:
                target = oidc.issuer if name == "oidc_authentication_init" else "/login/"
                assert response["Location"].startswith(target), (name, response["Location"])
    assert get_user(client).is_authenticated == (user is not None)
