"""A real Celery worker process executes a .delay()ed task through the configured broker.

Eager mode would never touch the broker; this runs on SQLite + the file broker by default and on
PostgreSQL + Redis when DATABASE_URL / CELERY_BROKER_URL say so.
"""

import pytest

from batches.models import Batch
from batches.store import store_batch
from tests.processes import start_worker, stop_worker, wait_for


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_a_delayed_sync_through_the_broker(simulator, connection):
    from dashboard.celery import app
    from batches.tasks import sync_connection

    app.control.purge()
    simulator.simulator.populate(historical=7, active=2)
    worker = start_worker()
    try:
        sync_connection.delay(connection.pk)
        arrived = wait_for(lambda: Batch.objects.filter(connection=connection).count() == 9)
    finally:
        output = stop_worker(worker)
    assert arrived, output[-3000:]
    assert "batches.tasks.sync_connection" in output and "succeeded" in output


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_reads_a_batchs_files_from_the_files_queue(client, login, simulator, sim_clock, connection):
    payload = simulator.inject_batch("completed", lines=100, fail_share=0.2, created_at=sim_clock.now() - 3600)
    store_batch(connection, payload)
    login("viewer")
    url = f"/batches/sim/{payload['id']}/files/"
    assert "Reading the error file…" in client.get(url, HTTP_HX_REQUEST="true").content.decode()
    worker = start_worker()
    try:
        read = wait_for(lambda: "lines read" in client.get(url, HTTP_HX_REQUEST="true").content.decode())
    finally:
        output = stop_worker(worker)
    assert read, output[-3000:]
    assert "batches.tasks.read_batch_files" in output and "succeeded" in output
