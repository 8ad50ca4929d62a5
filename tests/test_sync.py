"""The sync cycle over real HTTP against the simulator."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connections
from django.utils import timezone

from batches import sync
from batches.models import Batch, BatchSnapshot, BatchTransition, Connection
from tests.simclient import chat_lines, create_batch
from tests.truth import mismatches


def _sync(connection, **kwargs):
    return sync.sync_connection(connection_id=connection.pk, **kwargs)


def test_cold_import_equals_the_apis_truth_field_by_field(connection, simulator):
    simulator.simulator.populate(historical=120, active=10)
    result = _sync(connection)
    assert not result.error and result.full_walk
    assert result.new == 130 and result.seen == 130
    assert mismatches(connection, simulator.truth()) == []
    connection.refresh_from_db()
    assert connection.last_success_at and connection.consecutive_failures == 0 and not connection.full_walk_due


@pytest.mark.parametrize("count,pages", [(0, 1), (1, 1), (100, 1), (101, 2), (250, 3)])
def test_pagination_edges(connection, simulator, count, pages):
    simulator.simulator.populate(historical=count)
    result = _sync(connection)
    assert Batch.objects.count() == count
    assert result.requests == pages
    assert mismatches(connection, simulator.truth()) == []


def test_a_steady_state_cycle_costs_one_request_and_no_snapshots(connection, simulator):
    simulator.simulator.populate(historical=300, active=6)
    _sync(connection)
    snapshots = BatchSnapshot.objects.count()
    for _ in range(5):
        simulator.reset_stats()
        result = _sync(connection, now=timezone.now())
        assert result.requests == 1 and simulator.stats()["requests"] == 1
    assert BatchSnapshot.objects.count() == snapshots


def test_active_batches_beyond_the_first_page_are_retrieved_individually(connection, simulator, sim_clock):
    old = simulator.inject_batch("in_progress", lines=500, created_at=sim_clock.now() - 600,
                                 processing_seconds=3600)
    simulator.simulator.populate(historical=0)
    for _ in range(150):
        simulator.inject_batch("completed", lines=3, created_at=sim_clock.now() - 5)
    _sync(connection)
    simulator.advance(120)
    simulator.reset_stats()
    result = _sync(connection)
    assert simulator.stats()["by_endpoint"] == {"GET /v1/batches": 1, "GET /v1/batches/{id}": 1}
    assert result.changed == 1
    assert Batch.objects.get(batch_id=old["id"]).completed_requests > 0


def test_states_skipped_between_polls_still_end_correct(connection, simulator):
    batch = create_batch(simulator, chat_lines(20))
    _sync(connection)
    assert Batch.objects.get().status == "validating"
    simulator.advance(4 * 3600)
    _sync(connection)
    stored = Batch.objects.get()
    assert stored.status == "completed"
    assert list(stored.transitions.values_list("status", flat=True)) == [
        "validating", "in_progress", "finalizing", "completed"]
    assert mismatches(connection, simulator.truth()) == []
    assert batch["id"] == stored.batch_id


def test_snapshots_are_written_only_on_visible_change(connection, simulator):
    create_batch(simulator, chat_lines(400))
    _sync(connection)
    versions = []
    for _ in range(30):
        simulator.advance(20)
        _sync(connection)
        _sync(connection)  # an immediate second poll changes nothing
        versions.append(Batch.objects.get().version)
    stored = Batch.objects.get()
    assert stored.snapshots.count() == stored.version
    assert len(set(versions)) > 3  # it did move


def test_a_rate_limit_defers_the_connection_by_retry_after(connection, simulator):
    simulator.set_faults(next=1, kinds=["429"], retry_after=40)
    before = timezone.now()
    result = _sync(connection)
    assert "rate_limit_exceeded" in result.error and result.retry_after == 40
    connection.refresh_from_db()
    assert connection.consecutive_failures == 1
    assert timedelta(seconds=39) <= connection.next_sync_at - before <= timedelta(seconds=42)
    assert connection.lease_until is None


def test_a_quota_429_marks_the_connection_failing_without_retries(connection, simulator, settings):
    simulator.set_faults(next=1, kinds=["quota"])
    result = _sync(connection)
    assert simulator.stats()["requests"] == 1
    connection.refresh_from_db()
    assert connection.is_failing and "insufficient_quota" in connection.last_error
    assert connection.next_sync_at - timezone.now() > timedelta(seconds=settings.SYNC_FAILURE_BACKOFF_CAP - 5)
    assert result.error


@pytest.mark.parametrize("kind", ["500", "503", "drop"])
def test_server_errors_and_drops_are_retried_within_the_cycle(connection, simulator, kind):
    simulator.simulator.populate(historical=5)
    simulator.set_faults(next=2, kinds=[kind])
    result = _sync(connection)
    assert not result.error and Batch.objects.count() == 5


def test_truncated_json_fails_the_cycle_cleanly_and_the_next_one_converges(connection, simulator):
    simulator.simulator.populate(historical=5)
    simulator.set_faults(next=1, kinds=["truncated"])
    assert "malformed or truncated" in _sync(connection).error
    connection.refresh_from_db()
    assert connection.lease_until is None
    assert not _sync(connection).error
    assert mismatches(connection, simulator.truth()) == []


def test_a_bad_key_marks_the_connection_failing_and_leaves_batches_untouched(connection, simulator):
    simulator.inject_batch("in_progress", lines=300)
    _sync(connection)
    stored = Batch.objects.get()
    connection.set_api_key("sk-revoked-key-0000")
    connection.save()
    simulator.advance(86400)
    result = _sync(connection)
    connection.refresh_from_db()
    assert connection.is_failing and "HTTP 401" in connection.last_error and "Incorrect API key" in connection.last_error
    assert "sk-revoked-key-0000" not in connection.last_error and "sk-revoked-key-0000" not in result.error
    assert Batch.objects.get().status == stored.status == "in_progress"
    assert Batch.objects.get().version == stored.version


class _BrokenList(BaseHTTPRequestHandler):
    """A server whose list endpoint misbehaves: the cursor never advances, or order is broken."""

    mode = "stuck"

    def log_message(self, *args):
        pass

    def do_GET(self):
        base = {"object": "batch", "endpoint": "/v1/embeddings", "input_file_id": "f", "completion_window": "24h",
                "status": "completed"}
        if self.mode == "stuck":
            data = [{**base, "id": "batch_a", "created_at": 200}, {**base, "id": "batch_b", "created_at": 100}]
            if "after=" in self.path:
                data = [{**base, "id": "batch_c", "created_at": 50}, {**base, "id": "batch_b", "created_at": 100}]
        else:  # neither newest nor oldest first
            data = [{**base, "id": "batch_a", "created_at": 100}, {**base, "id": "batch_b", "created_at": 300},
                    {**base, "id": "batch_c", "created_at": 200}]
            if "after=" in self.path:
                data = [{**base, "id": "batch_d", "created_at": 50}]
        more = self.mode == "stuck" or "after=" not in self.path
        body = json.dumps({"object": "list", "data": data, "has_more": more, "last_id": data[-1]["id"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("mode,warning", [("stuck", "repeated ids"), ("unordered", "not ordered newest first")])
def test_a_misbehaving_list_cannot_trap_the_walk(db, mode, warning):
    handler = type("Handler", (_BrokenList,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        conn = Connection(name="Broken", slug="broken", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
        conn.set_api_key("sk-x")
        conn.save()
        result = _sync(conn)
    finally:
        server.shutdown()
        server.server_close()
    assert warning in result.warning and not result.error
    assert result.requests <= 2
    assert Batch.objects.count() == (3 if mode == "stuck" else 4)  # whatever the order, each page is stored
    conn.refresh_from_db()
    # a walk cut by an untrustworthy cursor is tried once more; one that reached the end is complete
    assert conn.full_walk_due == (mode == "stuck") and warning in conn.warning and conn.health() == "degraded"


def test_a_full_walk_runs_again_after_the_configured_hours(connection, simulator, settings):
    simulator.simulator.populate(historical=250)
    assert _sync(connection).full_walk
    assert not _sync(connection).full_walk
    Connection.objects.filter(pk=connection.pk).update(
        last_full_walk_at=timezone.now() - timedelta(hours=settings.SYNC_FULL_WALK_HOURS + 1))
    result = _sync(connection)
    assert result.full_walk and result.requests == 3
    assert _sync(connection, full=True).requests == 3


def test_a_held_lease_makes_a_second_sync_skip(connection, simulator):
    Connection.objects.filter(pk=connection.pk).update(lease_until=timezone.now() + timedelta(seconds=30))
    assert _sync(connection).skipped
    assert simulator.stats()["requests"] == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_syncs_make_no_duplicates(simulator, connection):
    simulator.simulator.populate(historical=150, active=10)
    results, barrier = [], threading.Barrier(2)

    def worker():
        barrier.wait()
        try:
            results.append(_sync(connection))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and not any(r.error for r in results)
    assert Batch.objects.count() == 160
    assert BatchSnapshot.objects.count() == 160
    assert mismatches(connection, simulator.truth()) == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_stores_of_the_same_batch_make_one_row_and_one_snapshot_per_change(simulator, connection):
    """Without the lease (a refresh racing a sync), the unique constraints and versioned updates hold."""
    from batches.store import store_batch
    from tests import payloads

    barrier = threading.Barrier(4)
    errors = []

    def worker(payload):
        barrier.wait()
        try:
            store_batch(connection, payload)
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)
        finally:
            connections.close_all()

    for payload in (payloads.JUST_CREATED, payloads.IN_PROGRESS):
        threads = [threading.Thread(target=worker, args=(payload,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        barrier.reset()
    assert errors == []
    batch = Batch.objects.get()
    assert batch.version == 2 and batch.snapshots.count() == 2
    assert BatchTransition.objects.filter(batch=batch).count() == 2


def test_a_crash_mid_cycle_converges_on_the_next(connection, simulator, monkeypatch):
    simulator.simulator.populate(historical=250, active=5)
    real = sync.store_new_batches
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second page of the first import
            raise RuntimeError("worker killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(sync, "store_new_batches", crashing)
    result = _sync(connection)
    assert "internal error: RuntimeError" in result.error
    assert Batch.objects.count() == 100  # the first page was stored, the rest not
    monkeypatch.setattr(sync, "store_new_batches", real)
    connection.refresh_from_db()
    assert connection.full_walk_due and connection.lease_until is None
    simulator.advance(300)
    assert not _sync(connection).error
    assert mismatches(connection, simulator.truth()) == []


def test_a_worker_killed_while_holding_the_lease_is_recovered_after_the_lease(connection, simulator, settings):
    simulator.simulator.populate(historical=20)
    Connection.objects.filter(pk=connection.pk).update(lease_until=timezone.now() - timedelta(seconds=1),
                                                       lease_token="dead-worker")
    assert not _sync(connection).skipped
    assert mismatches(connection, simulator.truth()) == []


def test_adaptive_cadence(connection, settings):
    from batches.store import store_batch
    from tests import payloads

    settings.SYNC_TRANSITION_INTERVAL, settings.SYNC_IDLE_INTERVAL = 5, 300
    connection.poll_interval = 15
    assert sync.next_interval(connection) == 300
    store_batch(connection, payloads.IN_PROGRESS)
    assert sync.next_interval(connection) == 15
    store_batch(connection, payloads.batch(id="batch_v", status="validating"))
    assert sync.next_interval(connection) == 5


def test_the_due_list_holds_only_due_enabled_connections_and_claims_them(db, settings):
    now = timezone.now()
    rows = {}
    for slug, enabled, next_at in [("due", True, now - timedelta(seconds=1)), ("new", True, None),
                                   ("later", True, now + timedelta(seconds=60)), ("off", False, None)]:
        c = Connection(name=slug, slug=slug, enabled=enabled, next_sync_at=next_at)
        c.set_api_key("sk-x")
        c.save()
        rows[slug] = c.pk
    assert sorted(sync.due_connection_ids(now)) == sorted([rows["due"], rows["new"]])
    assert sync.due_connection_ids(now) == []  # claimed: enqueued once, not every tick


def test_an_active_batch_the_api_forgets_is_flagged_then_left_alone(connection, simulator, sim_clock, settings,
                                                                      client, login):
    gone = simulator.inject_batch("in_progress", lines=100, created_at=sim_clock.now() - 600,
                                  processing_seconds=3600)
    for _ in range(120):  # pushes it off the first list page: it is retrieved on its own
        simulator.inject_batch("completed", lines=2, created_at=sim_clock.now() - 5)
    _sync(connection)
    simulator.simulator.forget_batch(gone["id"])
    result = _sync(connection)
    assert not result.error and any("HTTP 404" in p for p in result.problems)
    stored = Batch.objects.get(batch_id=gone["id"])
    assert stored.status == "in_progress" and stored.missing_since is not None
    _sync(connection)
    assert Batch.objects.get(batch_id=gone["id"]).missing_since == stored.missing_since  # set once
    login("viewer")
    assert "answered “not found” for this batch" in client.get(f"/batches/sim/{gone['id']}/").content.decode()
    assert "not found</span>" in client.get("/?status=in_progress").content.decode()

    Batch.objects.filter(batch_id=gone["id"]).update(
        missing_since=timezone.now() - timedelta(hours=settings.SYNC_MISSING_GIVE_UP_HOURS + 1))
    simulator.reset_stats()
    _sync(connection)
    assert simulator.stats()["by_endpoint"] == {"GET /v1/batches": 1}  # no longer asked about


def test_an_interrupted_full_walk_resumes_where_it_stopped(connection, simulator, monkeypatch):
    from batches.client import BatchApi, TransientError

    simulator.simulator.populate(historical=250)
    real = BatchApi.list_batches

    def rate_limited_after_the_first_page(self, *, after=None, limit=100):
        if after:
            raise TransientError("Rate limit reached", status=429, retry_after=1)
        return real(self, after=after, limit=limit)

    monkeypatch.setattr(BatchApi, "list_batches", rate_limited_after_the_first_page)
    assert "Rate limit" in _sync(connection).error
    connection.refresh_from_db()
    first_page_last = simulator.simulator.list_batches(limit=100)["last_id"]
    assert connection.walk_cursor == first_page_last and connection.full_walk_due
    monkeypatch.setattr(BatchApi, "list_batches", real)
    simulator.reset_stats()
    result = _sync(connection)
    assert result.full_walk and not result.error
    # the head page (new batches are read every cycle), then pages 2 and 3: the walk does not start over
    assert simulator.stats()["by_endpoint"]["GET /v1/batches"] == 3
    connection.refresh_from_db()
    assert connection.walk_cursor == "" and not connection.full_walk_due
    assert mismatches(connection, simulator.truth()) == []


def test_a_refused_cursor_restarts_the_full_walk_from_the_top(connection, simulator):
    simulator.simulator.populate(historical=250)
    assert not _sync(connection).error
    Connection.objects.filter(pk=connection.pk).update(walk_cursor="batch_that_is_gone", full_walk_due=True)
    simulator.reset_stats()
    result = _sync(connection)
    # the head page, the refused cursor, then the walk again from the top (3 pages)
    assert not result.error and result.requests == 5 and simulator.stats()["by_status"].get("400") == 1
    connection.refresh_from_db()
    assert connection.walk_cursor == "" and not connection.full_walk_due
    assert mismatches(connection, simulator.truth()) == []
