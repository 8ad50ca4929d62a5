from datetime import timedelta

from django.utils import timezone

from batches import tasks
from batches.models import Batch, BatchSnapshot, Connection


def test_the_beat_task_enqueues_only_due_connections(connection, monkeypatch):
    later = Connection(name="Later", slug="later", next_sync_at=timezone.now() + timedelta(minutes=5))
    later.set_api_key("sk-x")
    later.save()
    enqueued = []
    monkeypatch.setattr(tasks.sync_connection, "delay", lambda pk: enqueued.append(pk))
    tasks.sync_due_connections()
    tasks.sync_due_connections()
    assert enqueued == [connection.pk]


def test_sync_and_refresh_tasks_call_the_sync(connection, simulator):
    batch = simulator.inject_batch("in_progress", lines=100)
    assert "new 1" in tasks.sync_connection(connection.pk)
    simulator.advance(7 * 3600)
    tasks.refresh_batch(connection.pk, batch["id"])
    assert Batch.objects.get().status == "completed"
    assert tasks.refresh_batch(connection.pk, "batch_missing") is None  # logged, not raised


def test_thinning_keeps_every_status_change(connection, settings):
    from batches.store import store_batch
    from tests import payloads

    settings.SNAPSHOT_RETENTION_DAYS = 30
    store_batch(connection, payloads.JUST_CREATED)
    for done in range(1, 8):
        store_batch(connection, payloads.batch(status="in_progress", in_progress_at=payloads.CREATED + 5,
                                               request_counts={"total": 10, "completed": done, "failed": 0}))
    store_batch(connection, payloads.batch(status="completed", in_progress_at=payloads.CREATED + 5,
                                           completed_at=payloads.CREATED + 99,
                                           request_counts={"total": 10, "completed": 10, "failed": 0}))
    assert BatchSnapshot.objects.count() == 9
    assert tasks.thin_snapshots() == 0  # too recent
    settings.SNAPSHOT_RETENTION_DAYS = 0  # old enough now (time only moves forward past the run's mark)
    assert tasks.thin_snapshots() == 5
    kept = list(BatchSnapshot.objects.order_by("version").values_list("status", "completed_requests"))
    assert kept == [("validating", 0), ("in_progress", 1), ("in_progress", 7), ("completed", 10)]
