"""Months of a misbehaving API in a minute: fault soak, racing workers, racing cancels."""

import threading

import pytest
from django.contrib.auth.models import User
from django.db import connections

from batches import actions
from batches.models import STATUS_TIMESTAMP, AuditEvent, Batch, BatchSnapshot, BatchTransition
from batches.sync import sync_connection
from simulator import FAULT_KINDS
from tests.truth import mismatches


def _run_together(*targets, timeout=60):
    """Start callables at the same instant in threads; returns their results (or exceptions)."""
    barrier, results = threading.Barrier(len(targets)), [None] * len(targets)

    def run(index, target):
        barrier.wait()
        try:
            results[index] = target()
        except Exception as exc:  # noqa: BLE001 - returned to the test, which asserts on it
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return results


def _assert_history_is_clean(truth):
    for payload in truth:
        batch = Batch.objects.get(batch_id=payload["id"])
        versions = list(BatchSnapshot.objects.filter(batch=batch).order_by("version").values_list("version", flat=True))
        assert versions == list(range(1, batch.version + 1)), payload["id"]
        expected = sorted({s for s, field in STATUS_TIMESTAMP.items() if payload.get(field)} | {payload["status"]})
        recorded = sorted(BatchTransition.objects.filter(batch=batch).values_list("status", flat=True))
        assert recorded == expected, payload["id"]


@pytest.mark.slow
def test_a_fault_soak_converges_to_the_apis_truth(connection, simulator, settings):
    settings.API_READ_TIMEOUT = settings.API_CONNECT_TIMEOUT = 0.25
    sim = simulator.simulator
    sim.populate(historical=230, active=24)  # three list pages: full walks get interrupted too
    for _ in range(3):  # these will run out of time and expire
        simulator.inject_batch("in_progress", lines=200, processing_seconds=10**6)
    simulator.set_faults(rate=0.3, kinds=list(FAULT_KINDS), seed=3, slow_seconds=0.4, retry_after=1)
    results = []
    for cycle in range(300):
        simulator.advance(400)  # 300 cycles cover 33 simulated hours: everything finishes or expires
        if cycle % 25 == 5:
            active = [b for b in sim.truth() if b["status"] in ("validating", "in_progress", "finalizing")]
            if active:
                sim.cancel_batch(active[0]["id"])  # someone cancels in another tool
        if cycle % 40 == 7:
            simulator.inject_batch("validating", lines=50)
        results.append(sync_connection(connection_id=connection.pk))
    simulator.set_faults(rate=0)
    assert not any(r.error.startswith("internal error") for r in results)
    assert sum(bool(r.error) for r in results) > 30  # the faults really happened...
    stats = simulator.stats()["faults"]
    assert set(stats) == set(FAULT_KINDS)
    final = sync_connection(connection_id=connection.pk)  # ...and one ordinary clean cycle settles it
    assert not final.error
    truth = simulator.truth()
    assert {b["status"] for b in truth} >= {"completed", "cancelled", "expired", "failed"}
    assert mismatches(connection, truth) == []
    _assert_history_is_clean(truth)


@pytest.mark.django_db(transaction=True)
def test_four_workers_syncing_one_connection_make_no_duplicates(simulator, connection):
    simulator.simulator.populate(historical=230, active=12)
    results = _run_together(*[lambda: sync_connection(connection_id=connection.pk)] * 4)
    assert all(not isinstance(r, Exception) and not r.error for r in results), results
    assert sum(not r.skipped for r in results) >= 1
    simulator.advance(120)
    results = _run_together(*[lambda: sync_connection(connection_id=connection.pk)] * 4)
    sync_connection(connection_id=connection.pk)
    truth = simulator.truth()
    assert Batch.objects.count() == len(truth) == 242
    assert mismatches(connection, truth) == []
    _assert_history_is_clean(truth)


@pytest.mark.django_db(transaction=True)
def test_a_cancel_racing_a_sync(simulator, connection, synced_batch):
    user = User.objects.create_user("op")
    simulator.advance(30)
    results = _run_together(lambda: actions.cancel(batch=synced_batch, user=user),
                            lambda: sync_connection(connection_id=connection.pk))
    assert not any(isinstance(r, Exception) for r in results), results
    assert results[0].ok and not results[1].error
    sync_connection(connection_id=connection.pk)
    assert Batch.objects.get().status == "cancelling"
    assert AuditEvent.objects.count() == 1
    _assert_history_is_clean(simulator.truth())


@pytest.mark.django_db(transaction=True)
def test_two_users_cancelling_at_once_make_one_effective_cancel(simulator, connection, synced_batch):
    ana, bob = User.objects.create_user("ana"), User.objects.create_user("bob")
    results = _run_together(lambda: actions.cancel(batch=Batch.objects.get(pk=synced_batch.pk), user=ana),
                            lambda: actions.cancel(batch=Batch.objects.get(pk=synced_batch.pk), user=bob))
    assert all(not isinstance(r, Exception) and r.ok for r in results), results
    assert simulator.stats()["by_endpoint"]["POST /v1/batches/{id}/cancel"] <= 2
    truth = next(b for b in simulator.truth() if b["id"] == synced_batch.batch_id)
    assert truth["status"] == "cancelling"
    batch = Batch.objects.get()
    assert batch.status == "cancelling" and batch.cancelling_at is not None
    assert sorted(AuditEvent.objects.values_list("username", flat=True)) == ["ana", "bob"]
    assert BatchTransition.objects.filter(batch=batch, status="cancelling").count() == 1
