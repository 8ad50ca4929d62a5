"""The archive (batches/archive.py) on the filesystem storage: a finished batch's files copied into Batchboard's
storage, checked against the API's byte count and stored under their SHA-256; a failed copy retried with backoff
and never half-stored; ARCHIVE_FILES, ARCHIVE_BACKFILL_DAYS and ARCHIVE_RETENTION_DAYS; the request index
enqueued once every file is in."""

import hashlib
import io
import time
import tracemalloc
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from batches import archive, tasks
from batches.models import ArchivedFile, BatchRequest, RequestOutcome
from batches.store import store_batch
from batches.sync import sync_connection
from tests import payloads
from tests.conftest import SIM_KEY
from tests.fileserver import FileServer
from tests.simclient import call, control

CONTENT = b'{"custom_id": "request-1", "response": {"status_code": 200, "body": {}}, "error": null}\n' * 10


def _api_bytes(simulator, file_id: str) -> bytes:
    response = call(simulator, "GET", f"/files/{file_id}/content")
    assert response.status_code == 200
    return response.content


def _files_in(root) -> list:
    """Every file under the archive's root, the temporary directory included."""
    return sorted(path for path in root.rglob("*") if path.is_file())


def _seen_finishing(connection, **files):
    """The contract's batch (payloads.batch) stored running, then completed with these file ids."""
    counts = {"total": 10, "completed": 10, "failed": 0}
    store_batch(connection, payloads.batch(status="in_progress", in_progress_at=payloads.CREATED + 5,
                                           request_counts={**counts, "completed": 3}))
    return store_batch(connection, payloads.batch(status="completed", in_progress_at=payloads.CREATED + 5,
                                                  completed_at=payloads.CREATED + 99, request_counts=counts,
                                                  **files))[0]


@pytest.fixture
def file_server(connection):
    """The connection pointed at a files server that sends CONTENT but announces 5 bytes more."""
    with FileServer(CONTENT, announced=len(CONTENT) + 5) as server:
        connection.base_url = server.url
        connection.save()
        yield server


def test_a_batch_seen_finishing_has_each_file_copied_with_its_size_and_sha256(finished_batch, simulator, archive_dir,
                                                                              run_archive):
    rows = {row.kind: row for row in finished_batch.archived_files.all()}
    assert {kind: row.state for kind, row in rows.items()} == {"input": "pending", "output": "pending",
                                                               "error": "pending"}
    assert set(run_archive().values()) == {"stored"}
    for kind, row in rows.items():
        original = _api_bytes(simulator, finished_batch.file_id(kind))
        row.refresh_from_db()
        assert (row.state, row.file_id, row.bytes) == ("stored", finished_batch.file_id(kind), len(original))
        assert row.sha256 == hashlib.sha256(original).hexdigest() and row.stored_at and not row.last_error
        assert (archive_dir / row.name).read_bytes() == original
        assert b"".join(archive.stream(row, chunk_size=1000)) == original
        assert b"".join(archive.stream(row, start=100, chunk_size=7)) == original[100:]
        assert archive.read_range(row, 10, 20) == original[10:30]
    assert not list((archive_dir / ".incoming").iterdir())  # every temporary file moved or deleted


def test_copies_are_named_by_their_hash_never_by_an_api_id(finished_batch, archive_dir, run_archive):
    run_archive()
    api_ids = [finished_batch.batch_id, finished_batch.input_file_id, finished_batch.output_file_id,
               finished_batch.error_file_id]
    for row in finished_batch.archived_files.all():
        assert row.name == f"{row.sha256[:2]}/{row.sha256}-{row.pk}.jsonl"
        assert (archive_dir / row.name).stat().st_mode & 0o777 == 0o600
    assert not [path for path in archive_dir.rglob("*") if any(api_id in str(path) for api_id in api_ids)]


def test_beat_enqueues_each_due_copy_once_on_the_archive_queue(finished_batch, archive_dir, archive_queue):
    tasks.archive_due_files()
    tasks.archive_due_files()  # claimed already: nothing more
    enqueued = archive_queue()
    assert sorted(args[0] for _, args in enqueued) == sorted(finished_batch.archived_files.values_list("pk", flat=True))
    assert {name for name, _ in enqueued} == {"batches.tasks.archive_file"}
    assert {tasks.archive_file(*args) for _, args in enqueued} == {"stored"}  # what the archive worker runs


def test_a_claimed_copy_is_claimed_again_only_if_its_task_never_ran(finished_batch, archive_dir):
    first = archive.claim_due_files()
    assert len(first) == 3 and archive.claim_due_files() == []
    later = timezone.now() + timedelta(seconds=archive.QUEUED_SECONDS + 1)
    again = archive.claim_due_files(now=later)  # the queued tasks expired unrun
    assert sorted(pk for pk, _ in again) == sorted(pk for pk, _ in first)
    assert {archive.copy_file(pk, claimed_until=claim) for pk, claim in first} == {"skipped"}  # stale claims
    assert {archive.copy_file(pk, claimed_until=claim) for pk, claim in again} == {"stored"}


def test_a_byte_count_mismatch_fails_the_copy_stores_nothing_and_retries_with_backoff(connection, file_server,
                                                                                    archive_dir, run_archive,
                                                                                    settings):
    settings.ARCHIVE_FILES, settings.ARCHIVE_RETRY_SECONDS = "results", 60
    batch = _seen_finishing(connection, output_file_id="file-out")
    row = batch.archived_files.get()
    assert run_archive() == {row.pk: "failed"}
    row.refresh_from_db()
    mismatch = f"the API sent {len(CONTENT):,} bytes, not the {len(CONTENT) + 5:,} bytes its file metadata announces"
    assert (row.state, row.attempts, row.last_error, row.name, row.sha256) == ("failed", 1, mismatch, "", "")
    assert 58 <= (row.next_attempt_at - timezone.now()).total_seconds() <= 60
    assert _files_in(archive_dir) == []
    assert run_archive() == {}  # not before its backoff
    assert run_archive(now=timezone.now() + timedelta(seconds=61)) == {row.pk: "failed"}
    row.refresh_from_db()
    assert row.attempts == 2 and 118 <= (row.next_attempt_at - timezone.now()).total_seconds() <= 120  # doubled
    assert file_server.content_requests == 2 and _files_in(archive_dir) == []
    file_server.announced = len(CONTENT)
    assert run_archive(now=timezone.now() + timedelta(seconds=121)) == {row.pk: "stored"}
    row.refresh_from_db()
    assert (row.state, row.bytes, row.last_error, row.next_attempt_at) == ("stored", len(CONTENT), "", None)
    assert _files_in(archive_dir) == [archive_dir / row.name]


def test_a_copy_cut_mid_stream_leaves_nothing_in_the_archive(connection, file_server, archive_dir, run_archive,
                                                            settings):
    settings.ARCHIVE_FILES = "results"
    file_server.announced, file_server.cut_after = len(CONTENT), 100
    row = _seen_finishing(connection, output_file_id="file-out").archived_files.get()
    assert run_archive() == {row.pk: "failed"}
    row.refresh_from_db()
    assert row.state == "failed" and row.last_error and row.next_attempt_at
    assert _files_in(archive_dir) == []


def test_a_copy_gives_up_after_archive_max_attempts(connection, file_server, archive_dir, run_archive, settings):
    settings.ARCHIVE_FILES, settings.ARCHIVE_RETRY_SECONDS, settings.ARCHIVE_MAX_ATTEMPTS = "results", 0, 2
    row = _seen_finishing(connection, output_file_id="file-out").archived_files.get()
    assert run_archive() == {row.pk: "failed"}
    assert run_archive() == {row.pk: "failed"}
    row.refresh_from_db()
    assert (row.state, row.attempts, row.next_attempt_at) == ("failed", 2, None)
    assert run_archive(now=timezone.now() + timedelta(days=365)) == {}


def test_a_failed_copy_shows_on_the_batch_page_with_a_safe_message(client, login, connection, file_server,
                                                                  archive_dir, run_archive, settings):
    settings.ARCHIVE_FILES = "results"
    batch = _seen_finishing(connection, output_file_id="file-out")
    run_archive()
    login("viewer")
    page = client.get(f"/batches/sim/{batch.batch_id}/").content.decode()
    assert (f"archive failed: the API sent {len(CONTENT):,} bytes, not the {len(CONTENT) + 5:,} bytes its file "
            "metadata announces (attempt 1, trying again <time") in page
    assert SIM_KEY not in page


def test_a_file_the_api_deleted_before_it_was_copied_is_gone_and_never_retried(finished_batch, simulator,
                                                                               archive_dir, run_archive,
                                                                               archive_queue):
    simulator.advance(31 * 86400)
    assert set(run_archive().values()) == {"gone"}
    rows = list(finished_batch.archived_files.all())
    assert {(row.state, row.attempts, row.next_attempt_at) for row in rows} == {("gone", 1, None)}
    assert run_archive(now=timezone.now() + timedelta(days=1)) == {}
    assert _files_in(archive_dir) == [] and archive_queue() == []  # nothing stored: nothing to index


def test_the_request_index_is_enqueued_once_every_file_is_stored(finished_batch, archive_dir, archive_queue):
    claims = archive.claim_due_files()
    for pk, claim in claims[:2]:
        assert archive.copy_file(pk, claimed_until=claim) == "stored"
        assert archive_queue() == []
    archive.copy_file(claims[2][0], claimed_until=claims[2][1])
    assert archive_queue() == [("batches.tasks.index_batch_requests", [finished_batch.pk])]
    assert not BatchRequest.objects.exists()  # enqueued, not run


def test_the_enqueued_index_task_indexes_every_request_of_the_copies(finished_batch, archive_dir, run_archive,
                                                                     archive_queue):
    run_archive()
    (name, args), = archive_queue()
    getattr(tasks, name.rsplit(".", 1)[1]).apply(args=args).get()
    outcomes = dict(BatchRequest.objects.filter(batch=finished_batch).values_list("outcome").annotate(n=Count("pk")))
    assert sum(outcomes.values()) == 400 == finished_batch.total_requests
    assert outcomes[RequestOutcome.SUCCEEDED] == finished_batch.completed_requests
    assert outcomes[RequestOutcome.FAILED] == finished_batch.failed_requests


def test_the_request_index_is_enqueued_when_the_files_not_stored_are_gone(finished_batch, simulator, archive_dir,
                                                                         run_archive, archive_queue):
    simulator.advance(30 * 86400 - 7 * 3600 + 60)  # past the input file's 30 days, not yet the results'
    outcomes = run_archive()
    states = dict(finished_batch.archived_files.values_list("kind", "state"))
    assert states == {"input": "gone", "output": "stored", "error": "stored"} and len(outcomes) == 3
    assert archive_queue() == [("batches.tasks.index_batch_requests", [finished_batch.pk])]


@pytest.mark.parametrize("policy, kinds", [("all", {"input", "output", "error"}), ("results", {"output", "error"}),
                                           ("none", set())])
def test_archive_files_chooses_which_files_are_copied(policy, kinds, settings, see_batch_finish, archive_dir,
                                                      run_archive):
    settings.ARCHIVE_FILES = policy
    batch = see_batch_finish(lines=50, fail_share=0.2)
    assert set(batch.archived_files.values_list("kind", flat=True)) == kinds
    run_archive()
    assert set(batch.archived_files.filter(state="stored").values_list("kind", flat=True)) == kinds
    assert len([path for path in _files_in(archive_dir)]) == len(kinds)


@pytest.mark.parametrize("days, finished_hours_ago, archived", [(0, 1, False), (2, 47, True), (2, 49, False)])
def test_a_batch_finished_before_it_was_first_seen_is_archived_only_within_archive_backfill_days(
        days, finished_hours_ago, archived, connection, settings):
    settings.ARCHIVE_BACKFILL_DAYS = days
    done = int(time.time()) - finished_hours_ago * 3600
    store_batch(connection, payloads.batch(status="completed", created_at=done - 600, in_progress_at=done - 500,
                                           completed_at=done, output_file_id="file-out",
                                           request_counts={"total": 1, "completed": 1, "failed": 0}))
    assert ArchivedFile.objects.exists() is archived


def test_a_first_import_archives_only_the_batches_that_finished_within_archive_backfill_days(connection, simulator,
                                                                                            sim_clock, settings):
    settings.ARCHIVE_BACKFILL_DAYS = 2
    recent = simulator.inject_batch("completed", lines=5, created_at=sim_clock.now() - 3 * 3600)
    simulator.inject_batch("completed", lines=5, created_at=sim_clock.now() - 10 * 86400)
    simulator.simulator.populate(historical=30)  # all older than 2 days or not: either way decided by the rule
    sync_connection(connection_id=connection.pk)
    finished = {row.batch.batch_id: row.batch.status_since for row in ArchivedFile.objects.select_related("batch")}
    assert recent["id"] in finished
    assert all(since >= timezone.now() - timedelta(days=2) for since in finished.values())
    settings.ARCHIVE_BACKFILL_DAYS = 0
    ArchivedFile.objects.all().delete()
    simulator.inject_batch("completed", lines=5, created_at=sim_clock.now() - 3600)
    sync_connection(connection_id=connection.pk)
    assert not ArchivedFile.objects.exists()


def test_retention_removes_old_copies_and_marks_them_removed_keeping_their_index_rows(finished_batch, archive_dir,
                                                                                       run_archive, settings):
    run_archive()
    BatchRequest.objects.create(batch=finished_batch, custom_id="request-1", outcome=RequestOutcome.SUCCEEDED)
    old = finished_batch.archived_files.get(kind="output")
    ArchivedFile.objects.filter(pk=old.pk).update(stored_at=timezone.now() - timedelta(days=31))
    assert archive.remove_expired_copies() == 0  # ARCHIVE_RETENTION_DAYS=0 keeps them for ever
    settings.ARCHIVE_RETENTION_DAYS = 30
    assert tasks.remove_expired_archive_copies() == 1
    states = dict(finished_batch.archived_files.values_list("kind", "state"))
    assert states == {"input": "stored", "output": "removed", "error": "stored"}
    old.refresh_from_db()
    assert old.removed_at and not (archive_dir / old.name).exists()
    assert len(_files_in(archive_dir)) == 2
    assert BatchRequest.objects.filter(batch=finished_batch).count() == 1
    assert archive.remove_expired_copies(now=timezone.now() + timedelta(days=31)) == 2


def test_the_batch_page_and_its_files_panel_say_which_files_are_archived(client, login, finished_batch, simulator,
                                                                         archive_dir, run_archive):
    from batches.files import read_batch_files

    login("operator")
    detail, panel = f"/batches/sim/{finished_batch.batch_id}/", f"/batches/sim/{finished_batch.batch_id}/files/"
    assert client.get(detail).content.decode().count("archiving…") == 3
    run_archive()
    assert client.get(detail).content.decode().count(">archived</span>") == 3
    simulator.advance(40 * 86400)
    read_batch_files(finished_batch.pk)  # the files queue finds the API's files deleted
    files = client.get(panel, HTTP_HX_REQUEST="true").content.decode()
    assert files.count(">archived</span>") == 3 and files.count("expired or deleted") == 3
    assert files.count(">Download</a>") == 3  # from the archive


def test_a_large_file_is_copied_with_bounded_memory(connection, simulator, sim_clock, archive_dir, run_archive,
                                                   archive_queue, settings):
    settings.ARCHIVE_FILES, settings.ARCHIVE_BACKFILL_DAYS = "results", 1
    created = control(simulator, "POST", "/_sim/batches", json={
        "status": "completed", "lines": 2000, "fail_share": 0, "output_bytes": 50_000_000,
        "created_at": sim_clock.now() - 3600})
    batch = store_batch(connection, created.json())[0]
    row = batch.archived_files.get()
    # archive_queue has connected to the broker already: its one-time imports are no part of the copy's memory.
    tracemalloc.start()
    try:
        outcome = run_archive()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    row.refresh_from_db()
    assert outcome == {row.pk: "stored"} and row.bytes > 49_000_000
    assert (archive_dir / row.name).stat().st_size == row.bytes
    assert peak < 10 * 2**20, f"peak {peak / 2**20:.1f} MB"
    assert archive_queue() == [("batches.tasks.index_batch_requests", [batch.pk])]


def test_archive_finished_queues_the_files_of_stored_batches_that_finished_within_the_days(
        connection, simulator, archive_dir, run_archive):
    from django.core.management import call_command

    now = simulator.simulator.clock.now()
    recent, _ = store_batch(connection, simulator.inject_batch("completed", created_at=now - 2 * 86400, lines=20))
    old, _ = store_batch(connection, simulator.inject_batch("completed", created_at=now - 20 * 86400, lines=20))
    assert not ArchivedFile.objects.exists()  # finished before they were seen: ARCHIVE_BACKFILL_DAYS is 0
    call_command("archive_finished", "--days", "7", stdout=io.StringIO())
    assert set(ArchivedFile.objects.values_list("batch__batch_id", flat=True)) == {recent.batch_id}
    assert set(run_archive().values()) == {"stored"}
    out = io.StringIO()
    call_command("archive_finished", "--days", "7", stdout=out)  # twice: nothing planned again
    assert "Queued 0 files" in out.getvalue() and ArchivedFile.objects.filter(batch=old).count() == 0
