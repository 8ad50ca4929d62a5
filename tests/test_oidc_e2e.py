"""Single sign-on in Chromium: our log-in page, the real test provider's log-in and consent, our callback, and the
dashboard with the role and team the provider's groups map to."""

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from teams.models import Team, TeamGrant
from tests.browser import open_page
from tests.oidc_provider import PASSWORD

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_person_logs_in_with_the_provider_and_gets_the_mapped_role_and_team(
        live_server, oidc, connection, other_connection, browser):
    from batches.store import store_batch
    from tests import payloads

    red, blue = Team.objects.create(name="Red"), Team.objects.create(name="Blue")
    TeamGrant.objects.create(team=red, connection=connection, role="operator")
    TeamGrant.objects.create(team=blue, connection=other_connection, role="viewer")
    store_batch(connection, payloads.batch(id="batch_red_1", metadata={"description": "red team job"}))
    store_batch(other_connection, payloads.batch(id="batch_blue_1", metadata={"description": "blue team job"}))
    # A name no other test signs in with: the provider remembers consent (per user) for the whole session.
    oidc.add_user("olivia", email="olivia@example.com", groups=["batch-operators"], name="Olivia")
    # The provider registered http://127.0.0.1/oidc/callback/ (any port, RFC 8252), so the browser uses 127.0.0.1.
    base = live_server.url.replace("localhost", "127.0.0.1")

    page, errors = open_page(browser)
    page.goto(base + "/")
    expect(page).to_have_url(f"{base}/login/?next=/")
    page.screenshot(path=str(DOCS / "sso-login.png"))
    page.click("text=Log in with Test IdP")
    page.wait_for_url(f"{oidc.url}/login/**")  # the provider's own log-in page
    page.fill("#id_username", "olivia")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#authorizationForm")).to_contain_text("Authorize Batchboard?")  # its consent screen
    page.click("input[name=allow]")
    page.wait_for_url(f"{base}/")

    expect(page.locator("table.batches")).to_contain_text("red team job")
    expect(page.locator("table.batches")).not_to_contain_text("blue team job")
    user = User.objects.get(username="olivia@example.com")
    assert [g.name for g in user.groups.all()] == ["Operator"]
    assert [t.name for t in user.teams.all()] == ["Red"]
    page.goto(base + "/account/")
    expect(page.locator("main")).to_contain_text("olivia@example.com")
    assert not [e for e in errors if base in e or "Content Security Policy" in e], errors
    page.context.close()
