"""End to end in a real browser: Debian's chromium driven by Playwright, against a live server, a real Celery
worker (with beat) and the simulator, with the production Content-Security-Policy on."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from batches.models import Batch, Connection
from simulator import Simulator, SimulatorServer
from tests.browser import launch, log_in
from tests.conftest import PASSWORD, SIM_KEY
from tests.test_worker import start_worker, stop_worker, wait_for

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "var" / "screenshots"


@pytest.fixture
def stack(live_server, settings, login, monkeypatch):
    """Simulator (real clock, sped up) + a worker with beat syncing every second + the live server."""
    from dashboard.celery import app

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the ORM inside Playwright's sync API

    from django.core.cache import cache

    cache.clear()  # the database cache is no model table: earlier tests' entries (stream slots) outlive them
    settings.LIVE_POLL_SECONDS = 1
    simulator = Simulator(seed=5, speed=100)
    simulator.populate(historical=30)
    active = simulator.add_synthetic("in_progress", lines=3000, fail_share=0.05, processing_seconds=90,
                                     metadata={"description": "e2e batch"})
    server = SimulatorServer(simulator, api_key=SIM_KEY).start()
    connection = Connection(name="Simulator", slug="sim", base_url=server.url, poll_interval=1)
    connection.set_api_key(SIM_KEY)
    connection.save()
    app.control.purge()
    schedule = tempfile.mkdtemp()
    for name, value in (("SYNC_TICK_SECONDS", "1"), ("SYNC_ACTIVE_INTERVAL", "1"), ("SYNC_TRANSITION_INTERVAL", "1"),
                        ("SYNC_IDLE_INTERVAL", "2")):
        monkeypatch.setenv(name, value)  # read by the worker subprocess's settings
    worker = start_worker("-B", "--schedule", os.path.join(schedule, "beat"))
    try:
        assert wait_for(lambda: Batch.objects.filter(batch_id=active["id"]).exists(), 60), "the worker never synced"
        yield {"url": live_server.url, "active": active["id"], "simulator": server}
    finally:
        stop_worker(worker)
        server.stop()
        shutil.rmtree(schedule, ignore_errors=True)


def _count(page, selector: str) -> int:
    return int(page.locator(selector).inner_text().replace(",", ""))


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_operator_watches_cancels_and_downloads_and_a_viewer_cannot(stack, roles, django_user_model):
    from django.contrib.auth.models import Group

    for name in ("operator", "viewer"):
        user = django_user_model.objects.create_user(name, password=PASSWORD)
        user.groups.add(Group.objects.get(name=name.capitalize()))
    SHOTS.mkdir(parents=True, exist_ok=True)
    base, batch_id = stack["url"], stack["active"]
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        csp_errors = []
        page.on("console", lambda m: "Content Security Policy" in m.text and csp_errors.append(m.text))
        polls = []  # requests marked as live polls, which the session's idle timeout does not count
        page.on("request", lambda r: r.headers.get("x-batchboard-poll") == "1" and polls.append(r.url))

        log_in(page, base, "operator")
        expect(page.locator("table.batches tbody tr").first).to_be_visible()
        assert page.locator("table.batches tbody tr").count() >= 20
        page.screenshot(path=str(SHOTS / "list.png"))

        page.check("input[name=status][value=in_progress]")  # applies at once
        page.wait_for_url("**/?status=in_progress")
        expect(page.locator("table.batches tbody tr")).to_have_count(1)
        assert "status=in_progress" in page.url

        page.click(f"a[title='{batch_id}']")
        expect(page.locator("#batch-status")).to_have_text("in progress")
        first = _count(page, "#count-completed")
        page.wait_for_function(
            "n => Number(document.querySelector('#count-completed').textContent.replace(/,/g, '')) > n",
            arg=first, timeout=30_000)  # it moved, and nobody reloaded the page
        # the batch's live region says which version it shows (the files panel, polled while files are read, has none)
        live = [url for url in polls if "/files/" not in url]
        assert live and all("v=" in url for url in live)
        expect(page.locator("#batch-files")).to_contain_text("input")
        page.screenshot(path=str(SHOTS / "detail.png"), full_page=True)

        page.click("#cancel-batch")
        expect(page.locator("#cancel-confirm")).to_contain_text("up to 10 minutes")
        page.click("#confirm-cancel")
        expect(page.locator("#batch-status")).to_have_text("cancelling", timeout=10_000)
        expect(page.locator("#batch-status")).to_have_text("cancelled", timeout=60_000)
        completed = _count(page, "#count-completed")
        assert completed > first

        page.reload()
        with page.expect_download() as download_info:
            page.click("#download-output")
        download = download_info.value
        assert download.suggested_filename == f"{batch_id}_output.jsonl"
        lines = [json.loads(line) for line in Path(download.path()).read_text().splitlines() if line]
        assert len(lines) == completed
        assert all(line["response"]["status_code"] == 200 for line in lines)
        assert csp_errors == []

        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        page.goto(base + "/")
        expect(page.locator("table.batches")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # the page itself does not overflow
        page.screenshot(path=str(SHOTS / "phone.png"))

        viewer = browser.new_page()
        log_in(viewer, base, "viewer")
        viewer.goto(f"{base}/batches/sim/{batch_id}/")
        expect(viewer.locator("#batch-status")).to_be_visible()
        assert viewer.locator("#cancel-batch").count() == 0
        assert viewer.locator("[id^=download-]").count() == 0
        expect(viewer.locator("#operators-only")).to_have_text("Operators can download files.")
        token = next(c["value"] for c in viewer.context.cookies() if c["name"] == "csrftoken")
        forged = viewer.request.post(f"{base}/batches/sim/{batch_id}/cancel/", headers={"X-CSRFToken": token})
        assert forged.status == 403
        browser.close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_team_viewer_sees_only_their_batches_and_the_other_teams_batch_is_not_found(
        live_server, login, two_teams, connection, other_connection, monkeypatch):
    from batches.store import store_batch
    from tests import payloads

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the ORM inside Playwright's sync API
    for i in range(3):
        store_batch(connection, payloads.batch(id=f"batch_red_{i}", metadata={"description": "red team job"}))
    store_batch(other_connection, payloads.batch(id="batch_blue_0", metadata={"description": "blue team job"}))
    login("viewer", team="Red", username="rita")
    base = live_server.url
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        log_in(page, base, "rita")
        expect(page.locator("table.batches tbody tr")).to_have_count(3)
        expect(page.locator("table.batches")).not_to_contain_text("blue team job")
        assert page.locator("select[name=connection] option").all_inner_texts() == ["all", "Simulator"]
        expect(page.locator(".pager")).to_contain_text("3 batches")
        response = page.goto(f"{base}/batches/other/batch_blue_0/")
        assert response.status == 404
        expect(page.locator("h1")).to_have_text("Not found")
        assert "batch_blue_0" not in page.content()
        browser.close()
