"""Sync that finishes at any account size, never freezes silently, and never cries wolf (issue 9)."""

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from batches import sync
from batches.models import Batch, Connection
from simulator import Clock, Simulator, SimulatorServer
from tests.conftest import SIM_KEY
from tests.listserver import ListServer, batch
from tests.truth import mismatches

ROOT = Path(__file__).resolve().parent.parent


def _sync(connection, **kwargs):
    return sync.sync_connection(connection_id=connection.pk, **kwargs)


def _connection(url: str, slug: str = "c", key: str = "sk-x") -> Connection:
    conn = Connection(name=slug, slug=slug, base_url=url, poll_interval=15)
    conn.set_api_key(key)
    conn.save()
    return conn


def _free_lease(conn):
    Connection.objects.filter(pk=conn.pk).update(lease_until=None, lease_token="")


@pytest.fixture
def big_simulator():
    """3,000 batches behind 50 ms of latency: an import that cannot fit in one short cycle."""
    sim = Simulator(seed=3, speed=1, clock=Clock(frozen=True))
    sim.populate(historical=3000)
    with SimulatorServer(sim, api_key=SIM_KEY, latency_ms=50) as server:
        yield server


# ----- bounded cycles ------------------------------------------------------------------------------
def test_every_cycle_ends_within_the_budget_and_the_import_completes_without_duplicates(big_simulator, db,
                                                                                       settings):
    settings.SYNC_CYCLE_BUDGET_SECONDS = 1.0
    conn = _connection(big_simulator.url, key=SIM_KEY)
    healths, cycles = [], 0
    while Batch.objects.count() < 3000 and cycles < 40:
        result = _sync(conn)
        cycles += 1
        assert not result.error
        # the budget, plus the one request that may be under way when it runs out
        assert result.seconds < settings.SYNC_CYCLE_BUDGET_SECONDS + 0.5, result.summary()
        conn.refresh_from_db()
        healths.append(conn.health())
        if cycles == 1:
            assert result.cut_short and conn.walk_cursor  # the position is saved for the next cycle
            big_simulator.inject_batch("in_progress", lines=10)  # a new batch arrives mid-import
    assert cycles > 2 and Batch.objects.count() == 3001
    assert "failing" not in healths and healths[0] == "importing" and healths[-1] == "ok"
    assert mismatches(conn, big_simulator.truth()) == []
    assert not Connection.objects.get().walk_cursor and Connection.objects.get().last_full_walk_at


def test_new_batches_appear_while_a_long_import_goes_on(big_simulator, db, settings):
    settings.SYNC_CYCLE_BUDGET_SECONDS = 0.5
    conn = _connection(big_simulator.url, key=SIM_KEY)
    _sync(conn)
    _free_lease(conn)
    newcomer = big_simulator.inject_batch("validating", lines=5)
    _sync(conn)
    assert Batch.objects.filter(batch_id=newcomer["id"]).exists()
    assert Batch.objects.count() < 3000  # the import itself is still under way


def test_the_import_health_reads_importing_with_a_count_on_the_list(big_simulator, db, settings, client, login):
    settings.SYNC_CYCLE_BUDGET_SECONDS = 0.5
    conn = _connection(big_simulator.url, key=SIM_KEY)
    _sync(conn)
    login("viewer")
    page = client.get("/").content.decode()
    assert f"importing: {Batch.objects.count():,} batches so far" in page
    assert "failed" not in page.split('class="health"')[1].split("</div>")[0]


def test_a_celery_soft_time_limit_ends_the_cycle_cleanly_and_the_import_goes_on(big_simulator, db, monkeypatch):
    """Celery raises SoftTimeLimitExceeded wherever the task is; here on the third page of an import."""
    from celery.exceptions import SoftTimeLimitExceeded

    real, pages = sync._store_page, []

    def limited(cycle, data):
        pages.append(len(data))
        if len(pages) == 3:
            raise SoftTimeLimitExceeded()
        return real(cycle, data)

    monkeypatch.setattr(sync, "_store_page", limited)
    conn = _connection(big_simulator.url, key=SIM_KEY)
    result = _sync(conn)
    conn.refresh_from_db()
    assert result.cut_short and not result.error and conn.consecutive_failures == 0 and conn.last_error == ""
    assert Batch.objects.count() == 200 and conn.walk_cursor  # two pages kept, the third is read again
    assert conn.health() == "importing" and conn.lease_until is None
    monkeypatch.setattr(sync, "_store_page", real)
    _sync(conn)
    assert Batch.objects.count() == 3000


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_under_a_real_worker_a_soft_time_limit_never_marks_the_connection_failing(big_simulator):
    from batches.tasks import sync_connection as task
    from dashboard.celery import app
    from tests.test_worker import start_worker, stop_worker, wait_for

    conn = _connection(big_simulator.url, key=SIM_KEY)
    app.control.purge()
    worker = start_worker("--pool", "prefork", "--concurrency", "1")  # the solo pool has no time limits
    failures, runs = [], 0
    try:
        while Batch.objects.count() < 3000 and runs < 20:  # each run imports what 1 s allows
            runs += 1
            Connection.objects.filter(pk=conn.pk).update(last_attempt_at=None)
            # the limits travel with the message: a 1 s soft limit, well inside the 60 s budget
            task.apply_async((conn.pk,), soft_time_limit=1, time_limit=30)
            assert wait_for(lambda: Connection.objects.filter(
                pk=conn.pk, last_attempt_at__isnull=False, lease_until__isnull=True).exists(), 30)
            failures.append(Connection.objects.get().consecutive_failures)
    finally:
        output = stop_worker(worker)
    assert Batch.objects.count() == 3000 and runs > 1, output[-3000:]
    assert "soft time limit reached" in output, output[-3000:]
    assert set(failures) == {0} and Connection.objects.get().last_error == ""


# ----- walk anomalies --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_list_with_one_batch_out_of_order_is_still_imported_and_shown_degraded():
    """Today: the anomaly skipped the page's new batches and recorded the cycle as ok (113 of 211)."""
    rows = [batch(n) for n in range(1, 212)] + [batch(500, status="in_progress")]
    with ListServer(rows, order="swapped") as server:
        conn = _connection(server.url)
        for round_ in range(4):
            result = _sync(conn)
            assert not result.error
            _free_lease(conn)
            rows += [batch(600 + round_ * 10 + i) for i in range(10)]  # and climbing
            rows[211]["status"] = "finalizing" if round_ == 0 else "completed"
        _sync(conn)
    conn.refresh_from_db()
    assert Batch.objects.count() == len(rows) == 252
    assert Batch.objects.get(batch_id="batch_000500").status == "completed"  # active batches kept fresh
    assert conn.health() == "degraded" and "not ordered newest first" in conn.warning


@pytest.mark.django_db
def test_an_oldest_first_server_is_imported_then_read_from_its_tail(settings, client, login):
    """Today: an oldest-first server imports 0 batches and shows ok."""
    rows = [batch(n) for n in range(1, 251)]
    with ListServer(rows, order="oldest_first") as server:
        conn = _connection(server.url)
        assert not _sync(conn).error
        conn.refresh_from_db()
        assert Batch.objects.count() == 250 and conn.list_order == "oldest_first"
        assert conn.tail_cursor == "batch_000250"
        rows += [batch(n, status="in_progress") for n in range(251, 256)]
        _free_lease(conn)
        server.list_requests = 0
        result = _sync(conn)
        assert not result.error and result.new == 5 and server.list_requests == 1  # only what is new
    conn.refresh_from_db()
    assert Batch.objects.count() == 255 and conn.tail_cursor == "batch_000255" and conn.health() == "ok"


@pytest.mark.django_db
def test_a_degraded_connection_is_ok_again_after_a_clean_full_walk():
    rows = [batch(n) for n in range(1, 30)]
    with ListServer(rows, order="swapped") as server:
        conn = _connection(server.url)
        _sync(conn)
        conn.refresh_from_db()
        assert conn.health() == "degraded"
        server.order = "newest_first"  # the server is fixed
        _free_lease(conn)
        _sync(conn, full=True)
    conn.refresh_from_db()
    assert conn.health() == "ok" and conn.warning == ""


# ----- one bad payload costs one batch ------------------------------------------------------------------
def _deep(levels: int) -> dict:
    value: dict = {"leaf": "x"}
    for _ in range(levels):
        value = {"n": value}
    return value


@pytest.mark.django_db
def test_metadata_nested_600_deep_costs_nothing_and_is_kept_bounded():
    """Today: RecursionError on every cycle; the batches after it never update."""
    rows = [batch(1), batch(2, metadata=_deep(600)), batch(3, status="in_progress")]
    with ListServer(rows) as server:
        conn = _connection(server.url)
        result = _sync(conn)
        assert not result.error, result.error
        rows[2]["status"] = "completed"
        _free_lease(conn)
        assert not _sync(conn).error
    assert Batch.objects.count() == 3 and Batch.objects.get(batch_id="batch_000003").status == "completed"
    deep = Batch.objects.get(batch_id="batch_000002")
    depth, node = 0, deep.metadata
    while isinstance(node, dict):
        node, depth = node.get("n"), depth + 1
    assert depth <= 33 and node == "[truncated by Batchboard]"
    assert Connection.objects.get().health() != "failing"


@pytest.mark.django_db
def test_a_batch_that_cannot_be_read_is_skipped_counted_and_shown(monkeypatch, client, login):
    real = sync.batch_fields

    def picky(payload):
        if isinstance(payload, dict) and payload.get("id") == "batch_000002":
            raise RuntimeError("unexpected shape")
        return real(payload)

    monkeypatch.setattr(sync, "batch_fields", picky)
    with ListServer([batch(1), batch(2), batch(3)]) as server:
        conn = _connection(server.url)
        result = _sync(conn)
    assert not result.error and result.unreadable == 1 and Batch.objects.count() == 2
    conn.refresh_from_db()
    assert conn.unreadable_batches == 1 and conn.health() == "ok"
    login("viewer")
    assert "1 batch could not be read" in client.get("/").content.decode()


# ----- the lease --------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_lease_is_renewed_between_pages_so_a_slow_cycle_is_never_doubled(settings):
    """Today the lease is taken once: a cycle longer than the lease is joined by a second worker."""
    settings.SYNC_LEASE_SECONDS, settings.API_CALL_DEADLINE = 1.0, 0.9
    sim = Simulator(seed=4, clock=Clock(frozen=True))
    sim.populate(historical=600)
    with SimulatorServer(sim, api_key=SIM_KEY, latency_ms=250) as server:
        conn = _connection(server.url, key=SIM_KEY)
        results = {}

        def first_sync():
            try:
                results["first"] = _sync(conn)
            finally:
                connections.close_all()  # this thread's own database connection

        first = threading.Thread(target=first_sync)
        first.start()
        time.sleep(1.6)
        results["second"] = _sync(conn)
        first.join(60)
        connections.close_all()
    assert results["second"].skipped and not results["first"].error
    assert Batch.objects.count() == 600


def test_a_crashed_holder_blocks_the_connection_for_at_most_30_seconds(db):
    """Today a killed worker's lease (300 s) and the due-claim hold (300 s) stop syncs for ~5 minutes."""
    from django.conf import settings as live

    conn = _connection("http://127.0.0.1:9/v1")
    t0 = timezone.now()
    assert sync.due_connection_ids(t0) == [conn.pk]  # claimed and enqueued...
    assert sync._take_lease(conn, t0)  # ...then the worker dies holding the lease
    assert sync.due_connection_ids(t0 + timedelta(seconds=10)) == []
    assert live.SYNC_LEASE_SECONDS <= 30 and live.API_CALL_DEADLINE < live.SYNC_LEASE_SECONDS
    assert sync.due_connection_ids(t0 + timedelta(seconds=30.5)) == [conn.pk]


# ----- no false alarms ---------------------------------------------------------------------------------
@pytest.mark.parametrize("status,cadence", [("validating", "SYNC_TRANSITION_INTERVAL"),
                                            ("in_progress", "poll_interval"), (None, "SYNC_IDLE_INTERVAL")])
def test_staleness_follows_the_schedule_for_every_cadence(connection, simulator, settings, status, cadence):
    """Today an idle connection (polled every 5 min) reads as stale after 120 s."""
    if status:
        simulator.inject_batch(status, lines=10)
    settings.SYNC_IDLE_INTERVAL = 300
    assert not _sync(connection).error
    connection.refresh_from_db()
    interval = connection.poll_interval if cadence == "poll_interval" else getattr(settings, cadence)
    assert connection.sync_interval == interval
    synced = connection.last_success_at
    assert connection.health(synced + timedelta(seconds=interval - 1)) == "ok"
    missed = synced + timedelta(seconds=interval + settings.SYNC_STALE_GRACE_SECONDS + 1)
    assert connection.health(missed) == "stale"
    Connection.objects.filter(pk=connection.pk).update(consecutive_failures=2)  # backing off after errors
    assert Connection.objects.get(pk=connection.pk).health(missed) == "failing"


def test_the_idle_default_finds_a_scripted_batch_within_90_seconds():
    from dashboard import settings as defaults

    assert defaults.SYNC_IDLE_INTERVAL == 60 and defaults.SYNC_IDLE_INTERVAL + 5 <= 90  # + one beat tick


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_loop_for_one_connection_leaves_the_other_schedules_alone(simulator):
    """Today `sync_batches --loop --connection a` claims every due connection and syncs only its own."""
    mine = _connection(simulator.url, slug="mine", key=SIM_KEY)
    other = _connection("http://127.0.0.1:9/v1", slug="other")
    due = timezone.now() - timedelta(seconds=5)
    Connection.objects.filter(pk=other.pk).update(next_sync_at=due)
    Connection.objects.filter(pk=mine.pk).update(poll_interval=1)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "SYNC_TICK_SECONDS": "0.2",
           "BATCHBOARD_USE_TEST_DATABASE": connections["default"].settings_dict["NAME"]}
    loop = subprocess.Popen([sys.executable, "manage.py", "sync_batches", "--loop", "--connection", "mine"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    loop.terminate()
    output, _ = loop.communicate(timeout=20)
    assert "mine:" in output, output
    assert Connection.objects.get(pk=other.pk).next_sync_at == due


# ----- freshness and cost -------------------------------------------------------------------------------
def test_the_next_cycle_is_scheduled_from_the_start_of_this_one(connection, simulator):
    """Today the next sync is scheduled from the end of the cycle: a 15 s interval really runs every 20 s."""
    simulator.inject_batch("in_progress", lines=10)
    started = timezone.now()
    sync.sync_connection(connection_id=connection.pk, now=started)
    connection.refresh_from_db()
    assert connection.next_sync_at == started + timedelta(seconds=connection.poll_interval)


def test_a_connection_due_within_half_a_tick_is_claimed_now(db, settings):
    settings.SYNC_TICK_SECONDS = 2
    conn = _connection("http://127.0.0.1:9/v1")
    now = timezone.now()
    Connection.objects.filter(pk=conn.pk).update(next_sync_at=now + timedelta(seconds=0.9))
    assert sync.due_connection_ids(now) == [conn.pk]
    Connection.objects.filter(pk=conn.pk).update(next_sync_at=now + timedelta(seconds=1.5))
    assert sync.due_connection_ids(now) == []


def test_many_active_batches_below_the_head_are_read_by_page_not_one_by_one(db):
    """300 in-progress batches spread over the newest 3,000: 30 list pages beat 300 retrieves."""
    sim = Simulator(seed=11, speed=1, clock=Clock(frozen=True))
    now = sim.clock.now()
    with SimulatorServer(sim, api_key=SIM_KEY) as server:
        for i in range(3000):
            status = "in_progress" if i % 10 == 0 else "completed"
            server.inject_batch(status, lines=20, created_at=now - 3000 + i, processing_seconds=10 ** 6)
        conn = _connection(server.url, key=SIM_KEY)
        assert not _sync(conn).error
        assert Batch.objects.filter(status="in_progress").count() == 300
        _free_lease(conn)
        server.reset_stats()
        result = _sync(conn)
        by_endpoint = server.stats()["by_endpoint"]
    assert not result.error and result.requests <= 31, by_endpoint
    assert by_endpoint.get("GET /v1/batches/{id}", 0) == 0


def test_a_few_active_batches_below_the_head_are_still_retrieved_one_by_one(connection, simulator, sim_clock):
    old = simulator.inject_batch("in_progress", lines=10, created_at=sim_clock.now() - 5000, processing_seconds=10 ** 6)
    for i in range(450):
        simulator.inject_batch("completed", lines=2, created_at=sim_clock.now() - 4000 + i)
    assert not _sync(connection).error
    _free_lease(connection)
    simulator.reset_stats()
    assert not _sync(connection).error
    assert simulator.stats()["by_endpoint"] == {"GET /v1/batches": 1, "GET /v1/batches/{id}": 1}
    assert Batch.objects.get(batch_id=old["id"]).status == "in_progress"


def test_make_runs_defaults_keep_a_change_on_screen_within_10_seconds_by_arithmetic():
    """delay ≈ U(0, active interval) + U(0, half a tick) + hand-over (≤ 2 s) + U(0, LIVE_POLL_SECONDS);
    the worst case stays at 10 s (bench/freshness.py measures the real thing)."""
    from dashboard import settings as defaults

    worst = defaults.SYNC_ACTIVE_INTERVAL + defaults.SYNC_TICK_SECONDS / 2 + 2 + defaults.LIVE_POLL_SECONDS
    assert worst <= 10 and defaults.SYNC_TRANSITION_INTERVAL <= defaults.SYNC_ACTIVE_INTERVAL


# ----- review: edges that froze or misreported a connection ----------------------------------------------
@pytest.mark.django_db
def test_a_soft_time_limit_before_anything_was_read_is_a_failure_not_a_success(monkeypatch):
    """Otherwise a hanging upstream would read as "ok" for ever."""
    from celery.exceptions import SoftTimeLimitExceeded

    from batches.client import BatchApi

    def hangs(self, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(BatchApi, "list_batches", hangs)
    conn = _connection("http://127.0.0.1:9/v1")
    result = _sync(conn)
    conn.refresh_from_db()
    assert result.error and conn.consecutive_failures == 1 and conn.last_success_at is None


@pytest.mark.django_db
def test_a_page_ending_in_an_unusable_id_continues_from_the_last_usable_one(settings):
    settings.SYNC_PAGE_SIZE = 3
    rows = [batch(n) for n in range(1, 10)]
    rows[6]["id"] = "x" * 300  # the last item of the first page (newest first: 9, 8, 7)
    with ListServer(rows) as server:
        conn = _connection(server.url)
        result = _sync(conn)
    conn.refresh_from_db()
    assert not result.error and result.unreadable == 1 and Batch.objects.count() == 8
    assert conn.health() == "ok" and conn.walk_cursor == ""


@pytest.mark.django_db
def test_a_revoked_key_on_an_oldest_first_server_is_a_failure_and_keeps_the_tail():
    rows = [batch(n) for n in range(1, 8)]
    with ListServer(rows, order="oldest_first") as server:
        conn = _connection(server.url)
        assert not _sync(conn).error
        _free_lease(conn)
        server.answer = lambda path, query: (401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}})
        result = _sync(conn)
    conn.refresh_from_db()
    assert result.error and conn.health() == "failing" and conn.tail_cursor == "batch_000007"


@pytest.mark.django_db
def test_one_batch_the_api_cannot_show_right_now_does_not_stop_the_others(settings):
    rows = [batch(n) for n in range(1, 300)] + [batch(1000, status="in_progress")]
    rows[0]["status"] = rows[1]["status"] = "in_progress"  # the two oldest: below the head page
    with ListServer(rows) as server:
        conn = _connection(server.url)
        assert not _sync(conn).error
        _free_lease(conn)
        real = server.answer

        def broken_for_one(path, query):
            if path == "/v1/batches/batch_000001":
                return 500, {"error": {"message": "The server had an error"}}
            return real(path, query)

        server.answer = broken_for_one
        rows[1]["status"] = "completed"
        result = _sync(conn)
    conn.refresh_from_db()
    assert not result.error and conn.health() == "ok"
    assert Batch.objects.get(batch_id="batch_000002").status == "completed"
    assert any("batch_000001" in p for p in result.problems)
