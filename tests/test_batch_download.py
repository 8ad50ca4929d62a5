"""Downloads (`/batches/<connection>/<id>/files/<kind>/`): from the archive when it holds the file, otherwise
streamed from the API, cut when the API is too slow and capped per connection; audited once with their outcome
and their source when the stream ends."""

import pytest

from batches.client import TransientError
from batches.store import store_batch


@pytest.fixture
def operator(login):
    return login("operator")


@pytest.fixture
def small_batch(connection, simulator, sim_clock):
    """A finished batch of one request: its input file is about 150 bytes."""
    payload = simulator.inject_batch("completed", lines=1, fail_share=0, created_at=sim_clock.now() - 3600)
    return store_batch(connection, payload)[0]


def _url(batch, suffix=""):
    return f"/batches/{batch.connection.slug}/{batch.batch_id}/{suffix}"


def _client_goes_away(response) -> None:
    """What a WSGI server does when the client disconnects: it stops iterating and closes the response. The
    test's database connection stays open (as the test client keeps it while it closes a response)."""
    from django.core.signals import request_finished
    from django.db import close_old_connections

    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def test_download_streams_the_file_with_a_clear_name(client, operator, synced_batch, simulator):
    response = client.get(_url(synced_batch, "files/input/"))
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="{synced_batch.batch_id}_input.jsonl"'
    body = b"".join(response.streaming_content)
    assert body.count(b"\n") == 400 and int(response["Content-Length"]) == len(body)


def test_a_download_is_audited_once_when_it_ends_with_the_bytes_sent(client, operator, synced_batch):
    response = client.get(_url(synced_batch, "files/input/"))
    assert not synced_batch.audit_events.exists()  # not before the stream ends
    size = len(b"".join(response.streaming_content))  # the test client closes it at the end
    event = synced_batch.audit_events.get()
    assert (event.action, event.detail, event.ok) == ("download", "input", True)
    assert event.result == f"{synced_batch.input_file_id}: completed, {size:,} bytes sent"
    assert event.request_id.startswith("req_")


def test_a_drip_fed_download_is_cut_and_audited_as_cut_with_its_bytes_sent(client, operator, small_batch, simulator,
                                                                           settings):
    settings.FILE_STREAM_MIN_BYTES_PER_SECOND, settings.FILE_STREAM_GRACE_SECONDS = 200, 0.3
    simulator.set_faults(next=1, kinds=["drip"], slow_seconds=0.02)  # 50 bytes/s
    response = client.get(_url(small_batch, "files/input/"))
    received = []
    with pytest.raises(TransientError):
        for chunk in response.streaming_content:
            received.append(chunk)
    event = small_batch.audit_events.get()
    assert event.ok is False and 0 < len(received) < int(response["Content-Length"])
    assert event.result == (f"{small_batch.input_file_id}: cut after {len(received)} bytes sent: the answer came "
                            "slower than 200 bytes/s; cut off")


def test_a_stalled_download_is_cut_after_the_stall_time(client, operator, small_batch, simulator, settings):
    settings.FILE_STREAM_STALL_SECONDS = 0.3
    simulator.set_faults(next=1, kinds=["drip"], slow_seconds=3)
    response = client.get(_url(small_batch, "files/input/"))
    with pytest.raises(TransientError):
        list(response.streaming_content)
    assert small_batch.audit_events.get().result.endswith("cut after 1 bytes sent: nothing arrived for 0.3s; cut off")


def test_a_download_the_client_leaves_is_audited_as_cut_by_the_client(rf, operator, synced_batch, settings):
    from batches.views import batch_download

    settings.DOWNLOAD_CHUNK_BYTES = 1024
    request = rf.get(_url(synced_batch, "files/input/"))
    request.user = operator
    response = batch_download(request, "sim", synced_batch.batch_id, "input")  # as a WSGI server calls it
    chunks = iter(response)
    first, _ = next(chunks), next(chunks)  # the second is handed over but never confirmed sent
    _client_goes_away(response)
    event = synced_batch.audit_events.get()
    assert event.ok is False
    assert event.result == f"{synced_batch.input_file_id}: cut after {len(first):,} bytes sent: the client went away"


def test_downloads_over_the_cap_per_connection_are_refused_and_audited(client, operator, synced_batch, settings):
    settings.FILE_STREAMS_PER_CONNECTION = 1
    first = client.get(_url(synced_batch, "files/input/"))
    refused = client.get(_url(synced_batch, "files/input/"))
    assert first.status_code == 200 and refused.status_code == 503 and refused["Retry-After"]
    assert b"Too many downloads from this connection at once; try again shortly." in refused.content
    event = synced_batch.audit_events.get()
    assert (event.ok, event.result) == (False, "Too many downloads from this connection at once; try again shortly.")
    b"".join(first.streaming_content)
    again = client.get(_url(synced_batch, "files/input/"))
    assert again.status_code == 200  # the slot came back when the first ended
    b"".join(again.streaming_content)


def test_an_absent_file_gives_a_clear_message(client, operator, synced_batch):
    response = client.get(_url(synced_batch, "files/output/"))
    assert response.status_code == 404 and b"has no output file" in response.content


def test_an_expired_file_gives_a_clear_message_and_gives_its_slot_back(client, operator, synced_batch, simulator,
                                                                      settings):
    settings.FILE_STREAMS_PER_CONNECTION = 1
    simulator.advance(40 * 86400)
    for _ in range(2):
        response = client.get(_url(synced_batch, "files/input/"))
        assert response.status_code == 404 and b"has expired or was deleted" in response.content
    assert list(synced_batch.audit_events.values_list("ok", flat=True)) == [False, False]


def test_an_unknown_file_kind_is_404(client, operator, synced_batch):
    assert client.get(_url(synced_batch, "files/secrets/")).status_code == 404


def test_download_with_an_unreadable_key_says_to_enter_it_again(client, operator, synced_batch, lost_key):
    response = client.get(_url(synced_batch, "files/input/"))
    page = response.content.decode()
    assert response.status_code == 503
    assert lost_key in page and "the connection&#x27;s page in the admin" in page
    event = synced_batch.audit_events.get()
    assert (event.action, event.detail, event.ok) == ("download", "input", False) and lost_key in event.result


# ----- from the archive ------------------------------------------------------------------------------------
def _api_status(simulator, file_id: str) -> int:
    from tests.simclient import call

    return call(simulator, "GET", f"/files/{file_id}/content").status_code


def _api_bytes(simulator, file_id: str) -> bytes:
    from tests.simclient import call

    response = call(simulator, "GET", f"/files/{file_id}/content")
    assert response.status_code == 200
    return response.content


def test_a_file_not_archived_comes_from_the_api_and_says_so(client, operator, synced_batch):
    response = client.get(_url(synced_batch, "files/input/"))
    b"".join(response.streaming_content)
    assert response["X-Batchboard-Source"] == "api"
    assert "from the archive" not in synced_batch.audit_events.get().result


def test_after_the_api_deleted_a_file_the_archive_still_serves_it_and_says_so(client, operator, finished_batch,
                                                                               simulator, archive_dir, run_archive):
    original = _api_bytes(simulator, finished_batch.output_file_id)
    run_archive()
    simulator.advance(40 * 86400)  # past every file's expires_at: the API answers 404 for them now
    assert _api_status(simulator, finished_batch.output_file_id) == 404
    response = client.get(_url(finished_batch, "files/output/"))
    assert response.status_code == 200 and response["X-Batchboard-Source"] == "archive"
    assert response["Content-Disposition"] == f'attachment; filename="{finished_batch.batch_id}_output.jsonl"'
    body = b"".join(response.streaming_content)
    assert body == original and int(response["Content-Length"]) == len(body)
    event = finished_batch.audit_events.get()
    assert (event.action, event.detail, event.ok) == ("download", "output", True)
    assert event.result == f"{finished_batch.output_file_id}: completed from the archive, {len(body):,} bytes sent"


def test_an_archived_file_is_served_from_the_archive_even_while_the_api_has_it(client, operator, finished_batch,
                                                                             simulator, archive_dir, run_archive):
    run_archive()
    simulator.reset_stats()
    response = client.get(_url(finished_batch, "files/input/"))
    assert response["X-Batchboard-Source"] == "archive"
    assert b"".join(response.streaming_content) == _api_bytes(simulator, finished_batch.input_file_id)
    assert simulator.stats()["requests"] == 1  # ours, just now: the download asked the API nothing


def test_an_archived_download_needs_no_stream_slot_nor_the_key_and_is_still_audited_when_cut(
        rf, operator, finished_batch, archive_dir, run_archive, settings):
    from cryptography.fernet import Fernet

    from batches import files
    from batches.views import batch_download

    run_archive()
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the stored API key is unreadable now
    settings.FILE_STREAMS_PER_CONNECTION, settings.DOWNLOAD_CHUNK_BYTES = 1, 1024
    assert files.take_stream_slot(finished_batch.connection_id)  # every slot taken
    request = rf.get(_url(finished_batch, "files/input/"))
    request.user = operator
    response = batch_download(request, "sim", finished_batch.batch_id, "input")
    assert response.status_code == 200 and response["X-Batchboard-Source"] == "archive"
    chunks = iter(response)
    first, _ = next(chunks), next(chunks)
    _client_goes_away(response)
    event = finished_batch.audit_events.get()
    assert event.ok is False
    assert event.result == (f"{finished_batch.input_file_id}: cut after {len(first):,} bytes sent from the archive: "
                            "the client went away")


def test_a_copy_missing_from_the_archive_is_fetched_from_the_api(client, operator, finished_batch, archive_dir,
                                                                 run_archive, simulator):
    run_archive()
    (archive_dir / finished_batch.archived_files.get(kind="output").name).unlink()
    response = client.get(_url(finished_batch, "files/output/"))
    assert response["X-Batchboard-Source"] == "api"
    assert b"".join(response.streaming_content) == _api_bytes(simulator, finished_batch.output_file_id)


def test_a_copy_removed_by_retention_is_fetched_from_the_api_again(client, operator, finished_batch, archive_dir,
                                                                   run_archive, settings):
    from datetime import timedelta

    from django.utils import timezone

    from batches import archive

    run_archive()
    settings.ARCHIVE_RETENTION_DAYS = 1
    archive.remove_expired_copies(now=timezone.now() + timedelta(days=2))
    response = client.get(_url(finished_batch, "files/output/"))
    assert response["X-Batchboard-Source"] == "api"
    b"".join(response.streaming_content)
