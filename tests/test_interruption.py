"""Interruptions: a worker killed mid-cycle, the database briefly away, the broker down.

Outages use private processes (a TCP proxy, a redis-server on another port); the machine's shared
PostgreSQL and Redis are never stopped.
"""

import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time

import pytest
from django.db import connection as db
from django.test import Client

from batches.models import Batch, Connection
from batches.sync import sync_connection
from simulator import Clock, Simulator, SimulatorServer
from tests.conftest import SIM_KEY
from tests.test_worker import start_worker, stop_worker, wait_for
from tests.truth import mismatches


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slow_simulator():
    sim = Simulator(seed=9, speed=1, clock=Clock(frozen=True))  # nothing moves: a clean comparison at the end
    sim.populate(historical=450, active=10)
    with SimulatorServer(sim, api_key=SIM_KEY, latency_ms=250) as server:
        yield server


@pytest.fixture
def slow_connection(db, slow_simulator):
    conn = Connection(name="Slow", slug="slow", base_url=slow_simulator.url)
    conn.set_api_key(SIM_KEY)
    conn.save()
    return conn


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_cycle_is_recovered_by_the_next(slow_simulator, slow_connection, monkeypatch):
    from batches.tasks import sync_connection as task
    from dashboard.celery import app

    app.control.purge()
    monkeypatch.setenv("SYNC_LEASE_SECONDS", "3")
    monkeypatch.setenv("API_CALL_DEADLINE", "2")  # always shorter than the lease
    worker = start_worker()
    try:
        task.delay(slow_connection.pk)
        assert wait_for(lambda: Batch.objects.count() >= 100, 60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        stop_worker(worker)
    assert Batch.objects.count() < 460  # it really died mid-import
    assert Connection.objects.get().lease_until is not None  # ...holding the lease
    time.sleep(3.5)
    worker = start_worker()
    try:
        task.delay(slow_connection.pk)
        converged = wait_for(lambda: Batch.objects.count() == 460, 90)
    finally:
        output = stop_worker(worker)
    assert converged, output[-4000:]
    assert mismatches(slow_connection, slow_simulator.truth()) == []


class _Proxy:
    """A TCP proxy whose outage we control: `down()` drops every connection and refuses new ones."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream, self.port = upstream, _free_port()
        self._sockets, self._listener = [], None
        self.up()

    def up(self):
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self):
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        except OSError:
            pass
        self._listener.close()
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self._sockets = []

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, target):
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.close()
                except OSError:
                    pass


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_database_briefly_unreachable_then_the_next_cycle_converges(simulator, connection, monkeypatch):
    simulator.simulator.populate(historical=150, active=5)
    if db.vendor == "postgresql":
        from batches.tasks import sync_connection as task
        from dashboard.celery import app

        settings_dict = db.settings_dict
        proxy = _Proxy((settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432)))
        monkeypatch.setenv("DATABASE_URL", f"postgres://{settings_dict['USER']}@127.0.0.1:{proxy.port}/x")
        monkeypatch.setenv("DATABASE_CONN_MAX_AGE", "0")
        monkeypatch.setenv("SYNC_LEASE_SECONDS", "2")
        monkeypatch.setenv("API_CALL_DEADLINE", "1.5")  # always shorter than the lease
        app.control.purge()
        proxy.down()  # the database is away when the task starts
        worker = start_worker()
        try:
            task.delay(connection.pk)
            time.sleep(4)
            assert Batch.objects.count() == 0
            proxy.up()  # back: the task's own retry converges
            arrived = wait_for(lambda: Batch.objects.count() == 155, 90)
        finally:
            output = stop_worker(worker)
            proxy.down()
        assert arrived, output[-3000:]
        assert "Retry in" in output
    else:
        # SQLite has no server to lose; the closest thing is the file being locked by another process.
        locker = sqlite3.connect(db.settings_dict["NAME"], timeout=1, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        result = {}
        thread = threading.Thread(target=lambda: result.update(r=sync_connection(connection_id=connection.pk)))
        thread.start()
        time.sleep(3)
        assert thread.is_alive()  # waiting on the lock, not failed
        locker.execute("COMMIT")
        locker.close()
        thread.join(60)
        assert not result["r"].error
    assert mismatches(connection, simulator.truth()) == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_syncing_resumes_within_30_seconds_of_the_database_coming_back(slow_simulator, slow_connection,
                                                                       monkeypatch):
    """Today a sync that loses the database mid-cycle leaves a 300 s lease: ~5 minutes of nothing."""
    if db.vendor != "postgresql":
        # SQLite has no server to lose: the database "fails" under one page, and is there again at once.
        from django.db import OperationalError

        from batches import sync

        real, calls = sync._store_page, []

        def lost_once(cycle, data):
            calls.append(1)
            if len(calls) == 2:
                raise OperationalError("server closed the connection unexpectedly")
            return real(cycle, data)

        monkeypatch.setattr(sync, "_store_page", lost_once)
        with pytest.raises(OperationalError):
            sync_connection(connection_id=slow_connection.pk)
        assert Connection.objects.get().lease_until is None  # given back, not left to expire
        assert not sync_connection(connection_id=slow_connection.pk).skipped
        return
    from batches.tasks import sync_connection as task
    from dashboard.celery import app

    settings_dict = db.settings_dict
    proxy = _Proxy((settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432)))
    monkeypatch.setenv("DATABASE_URL", f"postgres://{settings_dict['USER']}@127.0.0.1:{proxy.port}/x")
    monkeypatch.setenv("DATABASE_CONN_MAX_AGE", "0")
    monkeypatch.delenv("SYNC_LEASE_SECONDS", raising=False)  # the production lease
    app.control.purge()
    worker = start_worker()
    try:
        task.delay(slow_connection.pk)
        assert wait_for(lambda: Batch.objects.count() >= 100, 60)
        proxy.down()  # mid-import, holding the lease
        time.sleep(3)
        proxy.up()
        back = time.monotonic()
        assert wait_for(lambda: Batch.objects.count() == 460, 60)
        resumed_after = time.monotonic() - back
    finally:
        output = stop_worker(worker)
        proxy.down()
    assert resumed_after <= 30, output[-3000:]
    assert mismatches(slow_connection, slow_simulator.truth()) == []


@pytest.fixture
def private_redis():
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed for the broker outage test: apt-get install -y redis-server"
    port = _free_port()

    def start():
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"], stdout=subprocess.DEVNULL)
        assert wait_for(lambda: _answers(port), 10)
        return process

    handle = {"process": start(), "start": start, "url": f"redis://127.0.0.1:{port}/0"}
    yield handle
    handle["process"].terminate()
    handle["process"].wait(10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(7).startswith(b"+PONG")
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_pages_keep_serving_while_the_broker_is_down_and_work_resumes_after(
        simulator, connection, private_redis, settings, monkeypatch, roles, django_user_model):
    from django.contrib.auth.models import Group

    from batches.tasks import sync_connection as task
    from dashboard.celery import app

    simulator.simulator.populate(historical=30)
    sync_connection(connection_id=connection.pk)
    settings.CELERY_BROKER_URL = private_redis["url"]
    monkeypatch.setenv("CELERY_BROKER_URL", private_redis["url"])
    worker = start_worker()
    try:
        web = Client()
        user = django_user_model.objects.create_user("viewer")
        user.groups.add(Group.objects.get(name="Viewer"))
        web.force_login(user)
        assert web.get("/healthz").status_code == 200

        private_redis["process"].kill()
        private_redis["process"].wait(10)
        down = web.get("/healthz")
        assert down.status_code == 503 and down.json()["broker"] is False and down.json()["database"] is True
        page = web.get("/")
        assert page.status_code == 200 and b"Simulator" in page.content

        simulator.inject_batch("in_progress", lines=10)
        private_redis["process"] = private_redis["start"]()  # the broker is back
        assert web.get("/healthz").status_code == 200
        with app.connection_for_write(private_redis["url"]) as broker:
            task.apply_async((connection.pk,), connection=broker, queue="batchboard-test")
        Connection.objects.filter(pk=connection.pk).update(lease_until=None)
        converged = wait_for(lambda: Batch.objects.count() == 31, 60)
    finally:
        output = stop_worker(worker)
    assert converged, output[-3000:]
    assert mismatches(connection, simulator.truth()) == []
