"""The pages in Chromium, for people: live list updates that leave the reader alone, every page at phone width,
axe-core in light and dark, and the main flows by keyboard. One browser for the module; rows are stored directly
(no worker), so each change is exactly one."""

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from batches.models import Batch
from batches.store import store_batch
from tests import payloads
from tests.browser import SHOTS, log_in, open_page

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _running(i: int, done: int = 10) -> dict:
    return payloads.batch(id=f"batch_row{i:02d}", status="in_progress", created_at=payloads.CREATED + i,
                          metadata={"description": f"nightly eval {i}"},
                          request_counts={"total": 100, "completed": done, "failed": 0})


@pytest.fixture
def site(live_server, settings, login, connection):
    """50 running batches, a failed one and one completed with errors; a Viewer and an Operator."""
    from django.core.cache import cache

    cache.clear()  # the database cache is no model table, so earlier tests' entries (stream slots) outlive them
    settings.LIVE_POLL_SECONDS = 1
    settings.LIST_PAGE_SIZE = 50
    for i in range(50):
        store_batch(connection, _running(i))
    store_batch(connection, payloads.VALIDATION_FAILED | {"id": "batch_invalid", "created_at": payloads.CREATED - 5,
                                                          "metadata": {"description": "prompts v2"}})
    store_batch(connection, payloads.batch(
        id="batch_mixed", status="completed", created_at=payloads.CREATED - 9, completed_at=payloads.CREATED + 900,
        in_progress_at=payloads.CREATED + 30, finalizing_at=payloads.CREATED + 800, output_file_id="file-out",
        error_file_id="file-err", metadata={"description": "weekly digest"},
        request_counts={"total": 400, "completed": 371, "failed": 29}))
    _as_if_the_files_queue_read(Batch.objects.get(batch_id="batch_mixed"))
    login("viewer")
    login("operator")
    return live_server.url


def _as_if_the_files_queue_read(batch) -> None:
    """What the files worker caches after reading the batch's files (no worker runs in this module)."""
    from django.core.cache import cache

    from batches import files

    for kind in ("input", "output", "error"):
        cache.set(files._cache_key("file-meta", batch.connection_id, batch.file_id(kind)),
                  {"bytes": 48_000, "expires_at": payloads.CREATED + 30 * 86400}, 3600)
    example = {"custom_id": "req-17", "message": "Rate limit reached for requests"}
    cache.set(files._summary_key(batch), {"groups": [
        {"status": 429, "code": "rate_limit_exceeded", "count": 21, "examples": [example]},
        {"status": 400, "code": "context_length_exceeded", "count": 8, "examples": [
            {"custom_id": "req-3", "message": "This model's maximum context length is 128000 tokens"}]}],
        "lines": 29, "unreadable": 0, "truncated": False, "cut": "", "bytes_read": 9000}, 3600)


def test_a_row_update_keeps_focus_scroll_selection_and_open_details(site, browser, connection):
    page, errors = open_page(browser)
    log_in(page, site, "viewer")
    pk = Batch.objects.get(batch_id="batch_row40").pk
    row = page.locator(f"#row-{pk}")
    expect(row).to_contain_text("10 / 100")
    assert page.locator("details[data-fold]").evaluate("d => d.open")
    page.mouse.wheel(0, 600)
    page.wait_for_function("() => window.scrollY > 0")
    scroll = page.evaluate("window.scrollY")
    row.locator("a").first.focus()
    page.evaluate("""() => { const cell = document.querySelector('#row-%d .name bdi');
        const range = document.createRange(); range.selectNodeContents(cell);
        getSelection().removeAllRanges(); getSelection().addRange(range); }""" % pk)
    sizes = []
    page.on("response", lambda r: "rows=" in r.url and r.status == 200 and sizes.append(len(r.body())))

    store_batch(connection, _running(40, done=70))
    expect(row).to_contain_text("70 / 100")
    expect(row).to_have_class("row-in_progress changed")
    expect(page.locator("#live-announce")).to_have_text("1 batch changed")
    assert page.evaluate(f"document.activeElement.closest('tr').id") == f"row-{pk}"
    assert page.evaluate("window.scrollY") == scroll
    assert page.evaluate("getSelection().toString()") == "nightly eval 40"
    assert page.locator("details[data-fold]").evaluate("d => d.open")
    assert sizes and max(sizes) < 5000, sizes
    assert page.locator("table.batches[aria-live], table.batches [aria-live]").count() == 0

    store_batch(connection, _running(60))  # a new row: the body is morphed, focus stays on its link
    expect(page.locator("table.batches tbody tr").first).to_contain_text("nightly eval 60")
    assert page.evaluate(f"document.activeElement.closest('tr').id") == f"row-{pk}"
    expect(page.locator("[data-freshness]")).to_contain_text("updated")
    page.evaluate("Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
                  "document.dispatchEvent(new Event('visibilitychange'))")
    expect(page.locator("[data-freshness]")).to_have_text("paused")
    assert errors == []
    page.context.close()


def _pages() -> dict:
    return {"list": "/", "failed": "/batches/sim/batch_invalid/", "mixed": "/batches/sim/batch_mixed/",
            "running": "/batches/sim/batch_row07/", "account": "/account/"}


def test_every_page_fits_a_phone_and_passes_axe_in_light_and_dark(site, browser):
    axe = Axe()
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for scheme in ("light", "dark"):
        for width, height in ((1280, 800), (390, 844)):
            page, errors = open_page(browser, viewport={"width": width, "height": height}, color_scheme=scheme)
            log_in(page, site, "operator")
            for name, path in _pages().items():
                page.goto(site + path)
                page.wait_for_load_state("networkidle")
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                if overflow > 0:
                    problems.append(f"{path} at {width} px is {overflow} px too wide")
                results = axe.run(page)
                for violation in results.response["violations"]:
                    if violation["impact"] in ("serious", "critical"):
                        targets = [n["target"] for n in violation["nodes"]][:3]
                        problems.append(f"{scheme} {width} {path}: {violation['id']} {targets}")
                if name in ("failed", "mixed") and width == 1280:
                    reason = page.locator("#batch-outcome .reason").first
                    expect(reason).to_be_visible()
                    assert reason.bounding_box()["y"] + reason.bounding_box()["height"] < height, "below the fold"
                page.screenshot(path=str(SHOTS / f"{name}-{width}-{scheme}.png"))
            assert errors == []
            page.context.close()
    assert problems == [], "\n".join(problems)


def test_filter_open_cancel_and_download_by_keyboard(site, browser, synced_batch):
    simulator_batch = synced_batch.batch_id
    page, errors = open_page(browser)
    log_in(page, site, "operator")
    page.locator("input[name=status][value=in_progress]").focus()
    page.keyboard.press("Space")  # applies at once, no Apply click
    page.wait_for_url("**/?status=in_progress")
    page.locator(f"a[title='{simulator_batch}']").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#batch-status")).to_have_text("in progress")
    page.locator("#cancel-batch").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-cancel")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#batch-status")).to_have_text("cancelling")
    # the live parts follow the cancel; press Enter on the link as it is once they have settled
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")
    expect(page.locator("#download-input")).to_be_visible()
    with page.expect_download() as download:
        page.locator("#download-input").press("Enter")
    assert download.value.suggested_filename == f"{simulator_batch}_input.jsonl"
    assert errors == []
    page.context.close()
