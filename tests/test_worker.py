"""A real Celery worker process executes a .delay()ed task through the configured broker.

Eager mode would never touch the broker; this runs on SQLite + the file broker by default and on
PostgreSQL + Redis when DATABASE_URL / CELERY_BROKER_URL say so.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connections

from batches.models import Batch

ROOT = Path(__file__).resolve().parent.parent


def start_worker(*extra: str) -> subprocess.Popen:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
           "BATCHBOARD_USE_TEST_DATABASE": connections["default"].settings_dict["NAME"]}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool", "solo", "-Q", "batchboard-test",
         "--without-heartbeat", "--without-mingle", "--without-gossip", "--loglevel", "INFO", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_worker(worker: subprocess.Popen) -> str:
    worker.terminate()
    try:
        output, _ = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, _ = worker.communicate()
    return output


def wait_for(predicate, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


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
