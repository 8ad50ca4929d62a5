"""The retry flow in Chromium: open a batch with failed requests, retry them, see the child batch appear in its
lineage, and download the merged results once it has finished and been archived. The test moves the
simulator's clock and runs the sync, the archive copy and the request index itself (no worker)."""

import json

import pytest
from playwright.sync_api import expect

from batches.models import Batch, BatchRequest, RequestOutcome
from batches.results import index_batch
from batches.sync import sync_connection
from tests.browser import SHOTS, log_in, open_page

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_operator_retries_the_failures_and_downloads_merged_results(live_server, login, simulator, connection,
                                                                       failed_batch, run_archive, browser, tmp_path):
    from django.core.cache import cache

    cache.clear()
    login("operator")
    page, errors = open_page(browser, accept_downloads=True)
    log_in(page, live_server.url, "operator")
    page.goto(f"{live_server.url}/batches/sim/{failed_batch.batch_id}/")
    failed = BatchRequest.objects.filter(batch=failed_batch, outcome=RequestOutcome.FAILED).count()
    expect(page.locator("#retry-batch")).to_have_text(f"Retry {failed} requests…")

    page.click("#retry-batch")
    expect(page.locator("#retry-count")).to_contain_text(str(failed))
    expect(page.locator("#retry-cost")).to_contain_text("byte-based")
    page.click("#confirm-retry")
    page.wait_for_url("**/lineage/")
    child = Batch.objects.exclude(pk=failed_batch.pk).get()
    expect(page.locator("#lineage-tree")).to_contain_text(child.batch_id)
    expect(page.locator(".messages")).to_contain_text("Submitted: 1 batch")

    simulator.advance(2 * 86400)
    sync_connection(connection_id=connection.pk, full=True)
    run_archive()
    index_batch(Batch.objects.get(pk=child.pk).pk)
    page.reload()
    expect(page.locator("#lineage-summary")).to_contain_text("on retry 1")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "lineage.png"), full_page=True)
    with page.expect_download() as download:
        page.click("#merged-output")
    path = tmp_path / "merged.jsonl"
    download.value.save_as(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    succeeded = BatchRequest.objects.filter(outcome=RequestOutcome.SUCCEEDED).values_list("custom_id", flat=True)
    assert sorted(line["custom_id"] for line in lines) == sorted(set(succeeded))
    page.goto(f"{live_server.url}/batches/sim/{child.batch_id}/")
    expect(page.locator("#batch-family")).to_contain_text(failed_batch.batch_id)
    assert errors == []
    page.context.close()
