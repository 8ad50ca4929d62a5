"""The batch page in Chromium, live: the cancel panel, and a batch that finishes while someone watches it.
One browser for the module; the simulator's clock moves only when a test says so, and the test runs the sync and
the files queue's read itself (no worker), so each step is exact."""

import pytest
from playwright.sync_api import expect

from batches import files
from batches.sync import sync_connection
from tests.browser import log_in, open_page

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def watched(live_server, settings, login, synced_batch, browser):
    """An Operator's page on an in-progress batch, polling every second; console errors collected."""
    from django.core.cache import cache

    cache.clear()  # the database cache is no model table: earlier tests' entries (stream slots) outlive them
    settings.LIVE_POLL_SECONDS = 1
    login("operator")
    page, errors = open_page(browser, permissions=["clipboard-read", "clipboard-write"])
    log_in(page, live_server.url, "operator")
    page.goto(f"{live_server.url}/batches/sim/{synced_batch.batch_id}/")
    expect(page.locator("#batch-status")).to_have_text("in progress")
    page.evaluate("window.notReloaded = true")
    # Start right after a poll has come back and settled, so a loaded machine does not put a swap of the
    # live region in the middle of a keystroke (a click then in flight would follow the link's plain href).
    page.wait_for_event("response", predicate=lambda r: "?v=" in r.url, timeout=15000)
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")
    yield page, errors
    assert page.evaluate("window.notReloaded === true"), "the page reloaded"
    page.context.close()


def _focused_id(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def test_the_cancel_panel_takes_focus_closes_on_escape_and_after_confirming(watched):
    page, errors = watched
    page.focus("#cancel-batch")
    page.keyboard.press("Enter")
    expect(page.locator("#cancel-confirm")).to_be_visible()
    page.wait_for_function("() => document.getElementById('action-panel').contains(document.activeElement)")
    page.keyboard.press("Escape")
    expect(page.locator("#cancel-confirm")).to_have_count(0)
    assert _focused_id(page) == "cancel-batch"

    page.keyboard.press("Enter")
    expect(page.locator("#confirm-cancel")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#batch-status")).to_have_text("cancelling")
    expect(page.locator("#cancel-confirm")).to_have_count(0)
    expect(page.locator("#action-notice .message.success")).to_contain_text("Cancel requested")
    expect(page.locator("#batch-status")).to_be_focused()  # the button that opened the panel is gone
    page.wait_for_timeout(1500)  # a poll or two after the action
    assert [e for e in errors if "htmx" in e or "oob" in e.lower()] == []


def test_a_batch_that_finishes_while_watched_shows_downloads_files_and_request_errors(watched, synced_batch,
                                                                                       simulator):
    page, errors = watched
    expect(page.locator("#download-input")).to_be_visible()
    assert page.locator("#download-output").count() == 0
    simulator.advance(48 * 3600)
    sync_connection(connection_id=synced_batch.connection_id)
    files.read_batch_files(synced_batch.pk)  # what the files queue's worker does

    expect(page.locator("#batch-status")).to_have_text("completed", timeout=10_000)
    expect(page.locator("#download-output")).to_be_visible()
    expect(page.locator("#download-error")).to_be_visible()
    expect(page.locator("#batch-files table").first).to_contain_text("output", timeout=10_000)
    expect(page.locator("#batch-files table.errors")).to_be_visible()
    expect(page.locator("#batch-outcome .reason")).to_contain_text("×")
    assert errors == []


def test_copy_buttons_say_copied_and_select_the_id_without_a_clipboard_api(watched, synced_batch):
    page, errors = watched
    button = page.locator("#batch-head .copy")
    button.click()
    expect(button).to_contain_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == synced_batch.batch_id
    page.evaluate("() => Object.defineProperty(navigator, 'clipboard', {value: undefined})")  # a plain-HTTP host
    button.click()
    expect(button).to_contain_text("Selected")
    assert page.evaluate("() => getSelection().toString()") == synced_batch.batch_id
    assert errors == []
