"""The files panel (`/batches/<connection>/<id>/files/`): it never calls the API itself. It schedules one read on
the files queue and polls until the file metadata and the request-error summary are cached."""

import re
import threading
import time

import pytest
from django.db import connections

from batches.store import store_batch

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def viewer(login):
    return login("viewer")


@pytest.fixture
def files_queue():
    """The test broker's files queue, emptied first; returns a function that counts the messages in it."""
    from dashboard.celery import app

    name = "batchboard-test-files"
    with app.connection_for_write() as broker:
        broker.default_channel.queue_declare(queue=name)
        broker.default_channel.queue_purge(queue=name)

    def count() -> int:
        with app.connection_for_write() as broker:
            return broker.default_channel.queue_declare(queue=name).message_count

    yield count
    with app.connection_for_write() as broker:
        broker.default_channel.queue_purge(queue=name)


@pytest.fixture
def broker_down(monkeypatch):
    """The Celery app publishes to a Redis port where nothing listens."""
    from dashboard.celery import app

    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setitem(app.conf, "broker_write_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(app, "_pool", None)  # Celery's pools were made for the real broker
    monkeypatch.setattr(app.amqp, "_producer_pool", None)


@pytest.fixture
def failed_batch(connection, simulator, sim_clock):
    """A finished batch where 30% of 300 requests failed: it has input, output and error files."""
    payload = simulator.inject_batch("completed", lines=300, fail_share=0.3, created_at=sim_clock.now() - 3600)
    return store_batch(connection, payload)[0]


def read_batch_files(batch_pk: int) -> None:
    """What the files queue's worker runs for a batch."""
    from batches.files import read_batch_files

    read_batch_files(batch_pk)


def _panel(client, batch) -> str:
    response = client.get(f"/batches/sim/{batch.batch_id}/files/", **HX)
    assert response.status_code == 200
    return response.content.decode()


def test_the_first_view_schedules_one_read_and_calls_no_api(client, viewer, failed_batch, simulator, files_queue):
    simulator.reset_stats()
    page = _panel(client, failed_batch)
    assert page.lstrip().startswith('<section id="batch-files"') and 'hx-trigger="every ' in page
    assert "Reading the error file…" in page and page.count("reading…") == 3
    assert simulator.stats()["requests"] == 0
    for _ in range(3):  # the panel polls
        _panel(client, failed_batch)
    assert files_queue() == 1


def test_once_read_the_panel_shows_sizes_and_grouped_errors_and_stops_polling(client, viewer, failed_batch,
                                                                              files_queue):
    read_batch_files(failed_batch.pk)
    page = _panel(client, failed_batch)
    assert "hx-trigger" not in page and "reading…" not in page and files_queue() == 0
    counts = [int(n.replace(",", "")) for n in re.findall(r'<td class="num">([\d,]+)</td>\s*<td><ul', page)]
    assert sum(counts) == failed_batch.failed_requests and len(counts) >= 2
    assert "context_length_exceeded" in page and "request-" in page
    assert f"{failed_batch.failed_requests} lines read" in page
    assert page.count(" KB</td>") == 3  # the three file sizes


def test_a_large_error_file_is_read_only_up_to_the_cap(client, viewer, connection, simulator, sim_clock, settings):
    settings.ERROR_FILE_SCAN_BYTES = 4096
    payload = simulator.inject_batch("completed", lines=2000, fail_share=1.0, created_at=sim_clock.now() - 3600)
    batch, _ = store_batch(connection, payload)
    read_batch_files(batch.pk)
    assert re.search(r"<strong>stopped after [\d.]+ KB</strong>: the file is larger", _panel(client, batch))


def test_an_expired_error_file_is_said_plainly(client, viewer, failed_batch, simulator):
    simulator.advance(31 * 86400)
    read_batch_files(failed_batch.pk)
    page = _panel(client, failed_batch)
    assert "The error file has expired or was deleted." in page and "expired or deleted" in page


def test_a_slow_error_file_is_summarised_as_far_as_it_came_within_the_scan_deadline(
        client, viewer, failed_batch, simulator, settings):
    settings.ERROR_FILE_SCAN_SECONDS = 1
    read_batch_files(failed_batch.pk)
    settings.ERROR_FILE_SCAN_BYTES = 2 * 1024 * 1024  # a new summary; the metadata stays cached
    simulator.set_faults(next=1, kinds=["drip"], slow_seconds=0.0005)
    started = time.monotonic()
    read_batch_files(failed_batch.pk)
    assert time.monotonic() - started < 2
    page = _panel(client, failed_batch)
    # how far it came depends on the machine's load: bytes or kilobytes
    assert re.search(r"[1-9][\d,]* lines? read, <strong>stopped after [\d.]+ K?B</strong>: the answer took longer "
                     r"than 1s; cut off, counts cover the part read", page), page


@pytest.mark.django_db(transaction=True)
def test_only_one_scan_of_an_error_file_runs_at_a_time(failed_batch, simulator, settings):
    read_batch_files(failed_batch.pk)
    settings.ERROR_FILE_SCAN_SECONDS, settings.ERROR_FILE_SCAN_BYTES = 1, 2 * 1024 * 1024
    simulator.set_faults(next=1, kinds=["drip"], slow_seconds=0.05)
    def read_in_a_thread():
        try:
            read_batch_files(failed_batch.pk)
        finally:
            connections.close_all()  # this thread's own connection: left open, it outlives the test database

    first = threading.Thread(target=read_in_a_thread)
    first.start()
    time.sleep(0.3)
    started = time.monotonic()
    read_batch_files(failed_batch.pk)  # while the first is still reading
    second_took = time.monotonic() - started
    first.join()
    assert second_took < 0.3
    assert simulator.stats()["by_endpoint"]["GET /v1/files/{id}/content"] == 2  # the first read, then one more


def test_a_panel_whose_read_cannot_be_scheduled_says_so_at_once(client, viewer, failed_batch, broker_down):
    started = time.monotonic()
    page = _panel(client, failed_batch)
    assert time.monotonic() - started < 1
    assert "Reading the files could not be scheduled: the task queue is unreachable." in page
    assert 'hx-trigger="every ' in page


def test_a_connection_whose_key_cannot_be_read_says_so_and_stops_polling(client, viewer, failed_batch, lost_key):
    read_batch_files(failed_batch.pk)
    page = _panel(client, failed_batch)
    assert page.count(lost_key) == 4 and "hx-trigger" not in page  # three files and the error summary
