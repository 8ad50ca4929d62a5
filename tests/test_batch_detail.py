import re

import pytest

from batches.models import Batch
from batches.store import store_batch
from tests import payloads
from tests.htmlparts import out_of_band

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def viewer(login):
    return login("viewer")


def _url(batch_id="batch_abc123", suffix=""):
    return f"/batches/sim/{batch_id}/{suffix}"


def test_it_shows_every_field_of_the_batch(client, viewer, connection):
    store_batch(connection, payloads.CANCELLED | {"metadata": {"description": "nightly", "owner": "ana"}})
    page = client.get(_url()).content.decode()
    for label in ("Created", "Expires", "Completion window", "Input file", "Output file", "Error file"):
        assert f"<dt>{label}</dt>" in page
    for label in ("In progress", "Finalizing", "Completed", "Failed", "Expired", "Cancelling", "Cancelled"):
        assert f"<dt>{label}</dt>" not in page  # the timeline has them; empty ones are not listed
    assert "file-out" in page and "file-err" in page and "file-abc123" in page
    assert "<th scope=\"row\">owner</th><td>ana</td>" in page
    assert "Raw JSON of the latest payload" in page


def test_an_unknown_batch_is_a_readable_404(client, viewer, connection):
    response = client.get(_url("batch_missing"))
    assert response.status_code == 404 and b"There is nothing at this address" in response.content


def test_the_live_region_polls_while_active_and_stops_when_terminal(client, viewer, connection):
    store_batch(connection, payloads.IN_PROGRESS)
    assert 'hx-trigger="every' in client.get(_url(), **HX).content.decode()
    store_batch(connection, payloads.CANCELLED)
    fragment = client.get(_url(), **HX).content.decode()
    assert out_of_band(fragment)["batch-poll"] == "true" and "hx-trigger=\"every" not in fragment


def test_an_unchanged_poll_gets_204(client, viewer, connection):
    store_batch(connection, payloads.IN_PROGRESS)
    fragment = client.get(_url(), **HX).content.decode()
    poll = re.search(r'hx-get="([^"]+)"', fragment).group(1)
    assert client.get(poll, **HX).status_code == 204
    store_batch(connection, payloads.IN_PROGRESS | {"request_counts": {"total": 100, "completed": 50, "failed": 2}})
    assert client.get(poll, **HX).status_code == 200


def test_validation_errors_are_a_table_with_line_numbers(client, viewer, connection):
    store_batch(connection, payloads.VALIDATION_FAILED)
    page = client.get(_url()).content.decode()
    assert "Validation errors" in page
    assert re.search(r"invalid_json_line</td><td>This line is not parseable as valid JSON.</td>"
                     r"<td class=\"mono\">—</td><td class=\"num\">3</td>", page)
    assert re.search(r"url_mismatch.*<td class=\"num\">17</td>", page)


def test_timeline_chart_throughput_and_cost(client, viewer, connection):
    store_batch(connection, payloads.JUST_CREATED)
    for done in (10, 30, 60):
        store_batch(connection, payloads.IN_PROGRESS | {"request_counts": {"total": 100, "completed": done, "failed": 0}})
    page = client.get(_url()).content.decode()
    assert "<polyline class=\"line-done\"" in page
    assert "requests/min" in page and "ETA" in page
    assert "estimate, batch discount 0.50× applied" in page
    timeline = page[page.index('<table class="timeline">'):]
    assert timeline.index("validating</span>") < timeline.index("in progress</span>")


def test_a_completed_batch_with_no_successes_reads_as_a_failure(client, viewer, connection):
    store_batch(connection, payloads.ALL_FAILED)
    page = client.get(_url()).content.decode()
    assert "completed · all failed" in page and "every request failed" in page


def test_a_long_finalizing_batch_gets_a_stuck_hint(client, viewer, connection, settings):
    settings.STUCK_AFTER_SECONDS = {"finalizing": 60}
    store_batch(connection, payloads.batch(status="finalizing", finalizing_at=payloads.CREATED))
    assert "Stuck?" in client.get(_url()).content.decode()


def test_every_api_string_is_escaped(client, viewer, connection):
    evil = "<script>alert('x')</script>"
    store_batch(connection, payloads.VALIDATION_FAILED | {
        "metadata": {evil: evil}, "model": evil,
        "errors": {"data": [{"code": evil, "message": evil, "param": evil, "line": 1}]}})
    page = client.get(_url()).content.decode()
    assert evil not in page and "&lt;script&gt;" in page


def test_the_chart_reads_a_sample_of_a_long_history(connection, django_assert_max_num_queries):
    from datetime import timedelta

    from batches.insights import sampled_snapshots
    from batches.models import BatchSnapshot

    batch, _ = store_batch(connection, payloads.IN_PROGRESS)
    BatchSnapshot.objects.bulk_create([
        BatchSnapshot(batch=batch, version=v, observed_at=batch.created_at + timedelta(seconds=v), status="in_progress",
                      total_requests=100, completed_requests=v % 100) for v in range(2, 5001)])
    Batch.objects.filter(pk=batch.pk).update(version=5000)
    batch.refresh_from_db()
    with django_assert_max_num_queries(1):
        points = sampled_snapshots(batch)
    versions = [p.version for p in points]
    assert 200 <= len(points) <= 202 and versions[0] == 1 and versions[-1] == 5000
    assert versions == sorted(versions)


def test_a_poll_re_sends_the_live_parts_and_only_new_history_rows(client, viewer, connection):
    store_batch(connection, payloads.IN_PROGRESS)
    store_batch(connection, payloads.IN_PROGRESS | {"request_counts": {"total": 100, "completed": 50, "failed": 2}})
    body = client.get(_url() + "?v=old&shown=1", **HX).content.decode()
    swaps = out_of_band(body)
    assert {"batch-poll", "batch-head", "batch-summary", "batch-timeline", "batch-audit"} <= set(swaps)
    assert swaps["history-rows"] == "afterbegin" and "raw-json" not in swaps and "batch-files" not in swaps
    assert re.findall(r"<tr><td>(\d+)</td>", body) == ["2"]  # the history row the page does not have yet
    store_batch(connection, payloads.CANCELLED)
    swaps = out_of_band(client.get(_url() + "?v=old&shown=2", **HX).content.decode())
    assert swaps["raw-json"] == "innerHTML" and swaps["batch-files"] == "true"  # once, when it finishes
