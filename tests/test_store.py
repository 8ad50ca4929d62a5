from datetime import timedelta

from django.utils import timezone

from batches.models import Batch, BatchSnapshot, BatchTransition
from batches.store import store_batch
from tests import payloads


def test_saving_the_same_payload_twice_adds_no_snapshot(connection):
    store_batch(connection, payloads.IN_PROGRESS)
    batch, outcome = store_batch(connection, payloads.IN_PROGRESS)
    assert outcome == "unchanged"
    assert Batch.objects.count() == 1
    assert BatchSnapshot.objects.filter(batch=batch).count() == 1


def test_a_counts_change_adds_exactly_one_snapshot(connection):
    store_batch(connection, payloads.IN_PROGRESS)
    moved = payloads.batch(**{**payloads.IN_PROGRESS, "request_counts": {"total": 100, "completed": 41, "failed": 2}})
    batch, outcome = store_batch(connection, moved)
    assert outcome == "changed"
    assert list(batch.snapshots.values_list("version", "completed_requests")) == [(1, 40), (2, 41)]
    assert batch.version == 2


def test_an_invisible_change_refreshes_the_row_without_a_snapshot(connection):
    store_batch(connection, payloads.IN_PROGRESS)
    batch, outcome = store_batch(connection, {**payloads.IN_PROGRESS, "expires_at": payloads.CREATED + 90000,
                                              "new_field": True})
    assert outcome == "unchanged"
    batch.refresh_from_db()
    assert batch.raw["new_field"] is True
    assert batch.snapshots.count() == 1


def test_skipped_states_are_recorded_from_the_api_timestamps(connection):
    store_batch(connection, payloads.JUST_CREATED)
    # The next poll already sees the batch completed: in_progress and finalizing happened in between.
    done = payloads.batch(status="completed", in_progress_at=payloads.CREATED + 5, finalizing_at=payloads.CREATED + 50,
                          completed_at=payloads.CREATED + 60, output_file_id="file-out",
                          request_counts={"total": 3, "completed": 3, "failed": 0})
    batch, _ = store_batch(connection, done)
    transitions = list(BatchTransition.objects.filter(batch=batch).order_by("at").values_list("status", "at"))
    assert [s for s, _ in transitions] == ["validating", "in_progress", "finalizing", "completed"]
    assert transitions[2][1] == batch.finalizing_at


def test_a_terminal_batch_never_goes_back_to_an_older_observation(connection):
    store_batch(connection, payloads.CANCELLED)
    batch, outcome = store_batch(connection, payloads.IN_PROGRESS)
    assert outcome == "unchanged"
    batch.refresh_from_db()
    assert batch.status == "cancelled"


def test_the_observed_time_is_kept(connection):
    seen = timezone.now() - timedelta(minutes=3)
    batch, _ = store_batch(connection, payloads.JUST_CREATED, observed_at=seen)
    assert batch.first_seen_at == seen and batch.snapshots.get().observed_at == seen


def test_a_batch_seen_again_is_no_longer_marked_missing(connection):
    from batches.store import mark_missing

    store_batch(connection, payloads.IN_PROGRESS)
    mark_missing(connection, "batch_abc123", now=timezone.now())
    assert Batch.objects.get().missing_since is not None
    store_batch(connection, payloads.IN_PROGRESS)
    assert Batch.objects.get().missing_since is None


def test_the_stored_sort_columns_follow_every_change(connection):
    batch, _ = store_batch(connection, payloads.batch(status="validating", request_counts={"total": 0}))
    assert (batch.in_flight, batch.done_permille) == (True, 0)
    batch, _ = store_batch(connection, payloads.batch(status="in_progress",
                                                      request_counts={"total": 3, "completed": 1, "failed": 1}))
    assert (batch.in_flight, batch.done_permille) == (True, 667)
    batch, _ = store_batch(connection, payloads.batch(status="failed", request_counts={"total": 0}))
    assert (batch.in_flight, batch.done_permille) == (False, 1000)


def test_migration_0014_fills_the_sort_columns_as_the_store_does(connection):
    import importlib

    from django.apps import apps

    from batches.models import sort_columns

    shapes = [("validating", 0, 0, 0), ("in_progress", 3, 1, 1), ("in_progress", 7, 2, 0), ("finalizing", 8, 1, 0),
              ("completed", 0, 0, 0), ("completed", 10, -5, 20), ("cancelling", 1000, 999, 0), ("paused", 0, 0, 0),
              ("expired", 2**40, 2**39, 1)]
    for i, (status, total, completed, failed) in enumerate(shapes):
        store_batch(connection, payloads.batch(id=f"batch_{i}", status=status, request_counts={
            "total": total, "completed": completed, "failed": failed}))
    expected = {b.batch_id: sort_columns(vars(b)) for b in Batch.objects.all()}
    Batch.objects.update(in_flight=False, done_permille=12)
    importlib.import_module("batches.migrations.0014_stored_sorts").fill_sort_columns(apps, None)
    assert {b.batch_id: {"in_flight": b.in_flight, "done_permille": b.done_permille}
            for b in Batch.objects.all()} == expected
    assert expected["batch_1"] == {"in_flight": True, "done_permille": 667}  # half rounds up, either way
