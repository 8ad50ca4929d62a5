from datetime import timedelta

from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches.models import Batch, BatchSnapshot
from batches.retention import thin_snapshots
from batches.store import store_batch
from tests import payloads


def _finished_batch(connection, batch_id: str) -> Batch:
    """A batch with a run of five in_progress snapshots, then completed: thinning deletes three."""
    store_batch(connection, payloads.batch(id=batch_id))
    for done in range(1, 6):
        store_batch(connection, payloads.batch(id=batch_id, status="in_progress", in_progress_at=payloads.CREATED + 5,
                                               request_counts={"total": 10, "completed": done, "failed": 0}))
    store_batch(connection, payloads.batch(id=batch_id, status="completed", in_progress_at=payloads.CREATED + 5,
                                           completed_at=payloads.CREATED + 99,
                                           request_counts={"total": 10, "completed": 10, "failed": 0}))
    return Batch.objects.get(batch_id=batch_id)


def _snapshot_queries(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if BatchSnapshot._meta.db_table in q["sql"]]


def test_a_run_right_after_the_previous_one_reads_no_snapshot(connection, settings):
    settings.SNAPSHOT_RETENTION_DAYS = 30
    _finished_batch(connection, "batch_old")
    later = timezone.now() + timedelta(days=31)
    assert thin_snapshots(now=later) == 3
    for next_run in (later, later + timedelta(hours=1)):
        with CaptureQueriesContext(db) as queries:
            assert thin_snapshots(now=next_run) == 0
        assert _snapshot_queries(queries) == []  # and at most one query over the batches that crossed
        assert len(queries) <= 3


def test_each_run_thins_the_batches_that_crossed_the_cutoff_since_the_previous_one(connection, settings):
    settings.SNAPSHOT_RETENTION_DAYS = 30
    first = _finished_batch(connection, "batch_first")
    start = timezone.now()
    assert thin_snapshots(now=start + timedelta(days=31)) == 3
    second = _finished_batch(connection, "batch_second")  # finished now: crosses the cutoff 30 days later
    Batch.objects.filter(pk=second.pk).update(last_changed_at=start + timedelta(days=10))
    assert thin_snapshots(now=start + timedelta(days=35)) == 0  # not yet
    assert thin_snapshots(now=start + timedelta(days=41)) == 3
    kept = list(BatchSnapshot.objects.filter(batch=second).values_list("status", "completed_requests"))
    assert kept == [("validating", 0), ("in_progress", 1), ("in_progress", 5), ("completed", 10)]
    assert BatchSnapshot.objects.filter(batch=first).count() == 4


def test_a_thinned_batch_that_changes_again_is_thinned_again(connection, settings):
    settings.SNAPSHOT_RETENTION_DAYS = 30
    batch = _finished_batch(connection, "batch_again")
    start = timezone.now()
    thin_snapshots(now=start + timedelta(days=31))
    for n in range(3):  # the API sends new metadata, three times: three snapshots in one status run
        store_batch(connection, {**batch.raw, "metadata": {"n": str(n)}})
    assert BatchSnapshot.objects.filter(batch=batch).count() == 7
    Batch.objects.filter(pk=batch.pk).update(last_changed_at=start + timedelta(days=5))
    assert thin_snapshots(now=start + timedelta(days=36)) == 2
    assert BatchSnapshot.objects.filter(batch=batch).count() == 5
