"""The results explorer in Chromium: from a batch's page to one failed request's error body, the explorer's poll
while the index is being built, and its pages at phone width with axe-core, light and dark. Rows and archived
files are written directly (no indexer runs), so each step is exact."""

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.utils import timezone
from playwright.sync_api import expect

from batches.models import ArchivedFile
from batches.store import store_batch
from tests import payloads
from tests.browser import SHOTS, log_in, open_page
from tests.requestindex import Req, index_batch

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _requests() -> list[Req]:
    questions = ["Summarise ticket #{n}: the parcel arrived damaged and the customer wants a refund.",
                 "Translate to French: 'Your order #{n} has shipped.'",
                 "Classify the sentiment of review #{n}: 'Fast delivery, but the box was crushed.'"]
    answers = ["Damaged parcel; the customer asks for a refund. Suggest: apologise, offer a replacement or refund.",
               "Votre commande #{n} a été expédiée.", "Mixed: positive about speed, negative about packaging."]
    reqs = []
    for n in range(1, 31):
        question, answer = questions[n % 3].format(n=n), answers[n % 3].format(n=n)
        if n in (4, 11, 23):
            reqs.append(Req(f"ticket-{n:03d}", outcome="failed", question=question, status_code=400,
                            error_code="context_length_exceeded",
                            message="This model's maximum context length is 128000 tokens. However, your messages "
                                    "resulted in 131072 tokens. Please reduce the length of the messages."))
        elif n == 17:
            reqs.append(Req(f"ticket-{n:03d}", outcome="failed", question=question, status_code=429,
                            error_code="rate_limit_exceeded",
                            message="Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 500."))
        else:
            reqs.append(Req(f"ticket-{n:03d}", question=question, answer=answer, tokens=(40 + n, 12 + n % 7)))
    return reqs


@pytest.fixture
def site(live_server, settings, login, connection, archive_dir):
    """A finished batch of 30 requests (4 failed), archived and indexed; an Operator and a Viewer."""
    from django.core.cache import cache

    cache.clear()  # the database cache is no model table: earlier tests' entries (stream slots) outlive them
    settings.LIVE_POLL_SECONDS = 1
    batch = store_batch(connection, payloads.batch(
        id="batch_support", status="completed", created_at=payloads.CREATED, in_progress_at=payloads.CREATED + 30,
        finalizing_at=payloads.CREATED + 800, completed_at=payloads.CREATED + 900, output_file_id="file-out",
        error_file_id="file-err", metadata={"description": "support triage"},
        request_counts={"total": 30, "completed": 26, "failed": 4},
        usage={"input_tokens": 1800, "output_tokens": 400, "total_tokens": 2200}))[0]
    index_batch(batch, _requests())
    login("viewer")
    login("operator")
    return live_server.url, batch


def test_open_a_failed_request_from_the_batch_page(site, browser):
    base, batch = site
    SHOTS.mkdir(parents=True, exist_ok=True)
    page, errors = open_page(browser)
    log_in(page, base, "operator")
    page.goto(f"{base}/batches/sim/batch_support/")
    expect(page.locator("#see-failed")).to_have_text("4 failed — see them")
    page.click("#see-failed")
    page.wait_for_url("**/requests/?outcome=failed")
    expect(page.locator("#request-rows tr")).to_have_count(4)
    expect(page.locator("#count-failed")).to_have_class("card stat outcome-failed active")
    expect(page.locator("#request-rows")).to_contain_text("maximum context length")
    page.screenshot(path=str(SHOTS / "explorer.png"), full_page=True)

    page.click("a[title='ticket-011']")
    page.wait_for_url("**/requests/ticket-011/")
    expect(page.locator("#request-outcome")).to_contain_text("failed")
    error = page.locator("#body-error")
    expect(error).to_contain_text('"code": "context_length_exceeded"')
    expect(error.locator("details[open] pre")).to_contain_text("131072 tokens")
    expect(page.locator("#body-input")).to_contain_text("Classify the sentiment of review #11")
    expect(page.locator("#conversation")).to_contain_text("review #11")
    expect(page.locator("#previous-failed")).to_have_attribute("href",
                                                               "/batches/sim/batch_support/requests/ticket-004/")
    page.screenshot(path=str(SHOTS / "request.png"), full_page=True)
    page.click("#next-failed")
    page.wait_for_url("**/requests/ticket-017/")
    expect(page.locator("#body-error")).to_contain_text("rate_limit_exceeded")
    assert errors == []
    page.context.close()


def test_the_explorer_polls_while_indexing_and_stops_when_done(site, browser):
    base, batch = site
    ArchivedFile.objects.filter(batch=batch).update(indexed_at=None, indexed_lines=12)
    page, errors = open_page(browser)
    log_in(page, base, "viewer")
    page.goto(f"{base}/batches/sim/batch_support/requests/")
    expect(page.locator("#indexing")).to_contain_text("Indexing… 36 lines so far")
    polls = []
    page.on("request", lambda r: r.headers.get("x-batchboard-poll") == "1" and polls.append(r.url))
    ArchivedFile.objects.filter(batch=batch).update(indexed_lines=20)
    expect(page.locator("#indexing")).to_contain_text("Indexing… 60 lines so far", timeout=10_000)
    ArchivedFile.objects.filter(batch=batch).update(indexed_at=timezone.now())
    expect(page.locator("#indexing")).to_have_count(0, timeout=10_000)
    assert page.locator("#requests-poll[hx-trigger]").count() == 0
    seen = len(polls)
    page.wait_for_timeout(2500)
    assert len(polls) == seen and seen >= 1  # one poll a tick while indexing, none after
    assert "Paris" not in page.content() and page.locator("th.preview").count() == 0  # a Viewer: no previews
    assert errors == []
    page.context.close()


def test_the_explorer_pages_fit_a_phone_and_pass_axe_in_light_and_dark(site, browser):
    axe = Axe()
    problems = []
    for scheme in ("light", "dark"):
        for width, height in ((1280, 800), (390, 844)):
            page, errors = open_page(browser, viewport={"width": width, "height": height}, color_scheme=scheme)
            log_in(page, base := site[0], "operator")
            for path in ("/batches/sim/batch_support/requests/", "/batches/sim/batch_support/requests/?sort=-tokens",
                         "/batches/sim/batch_support/requests/ticket-004/",
                         "/batches/sim/batch_support/requests/ticket-005/"):
                page.goto(base + path)
                page.wait_for_load_state("networkidle")
                if path.endswith("/requests/"):  # an Operator sees content, after any earlier test's flush too
                    expect(page.locator("th.preview")).to_have_count(1)
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                if overflow > 0:
                    problems.append(f"{path} at {width} px is {overflow} px too wide")
                if path.endswith(("/requests/", "ticket-004/")):  # for people to look at, as the list's are
                    shot = "explorer" if path.endswith("/requests/") else "request"
                    page.screenshot(path=str(SHOTS / f"{shot}-{width}-{scheme}.png"), full_page=True)
                for violation in axe.run(page).response["violations"]:
                    if violation["impact"] in ("serious", "critical"):
                        problems.append(f"{scheme} {width} {path}: {violation['id']} "
                                        f"{[n['target'] for n in violation['nodes']][:3]}")
            assert errors == []
            page.context.close()
    assert problems == [], "\n".join(problems)
