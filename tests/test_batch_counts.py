"""BatchCount, the kept number of batches per connection and status, always equals a recount."""

import threading
from collections import Counter
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection as database, connections
from django.utils import timezone
from hypothesis import given, strategies as st

from batches.models import Batch, BatchCount, Connection
from batches.payload import batch_fields
from batches.store import delete_batches, store_batch, store_fields, store_new_batches
from tests import payloads

STATUSES = ("validating", "in_progress", "finalizing", "cancelling", "completed", "failed", "expired", "cancelled",
            "paused_for_review")


def _kept() -> dict:
    return {(c, s, f): n for c, s, f, n in BatchCount.objects.values_list("connection_id", "status", "all_failed", "n")
            if n}


def _recounted() -> dict:
    return dict(Counter((b.connection_id, b.status, b.all_requests_failed) for b in Batch.objects.all()))


def _payload(index: int, status: str, completed: int, failed: int) -> dict:
    return payloads.batch(id=f"batch_{index}", status=status,
                          request_counts={"total": 3, "completed": completed, "failed": failed})


@pytest.fixture
def two_connections(connection):
    other = Connection(name="Other", slug="other")
    other.set_api_key("sk-other")
    other.save()
    return [connection, other]


OPERATIONS = st.lists(st.tuples(
    st.sampled_from(["store", "import", "delete", "race"]), st.integers(0, 1), st.integers(0, 5),
    st.sampled_from(STATUSES), st.integers(0, 3), st.integers(0, 3)), max_size=12)


@given(operations=OPERATIONS)
def test_kept_counts_equal_a_recount_after_any_changes(two_connections, operations):
    for kind, conn_index, index, status, completed, failed in operations:
        conn = two_connections[conn_index]
        payload = _payload(index, status, completed, failed)
        if kind == "store":
            store_batch(conn, payload)
        elif kind == "import":  # the cold import's bulk insert; refused as a whole when one exists already
            store_new_batches(conn, [batch_fields(payload)], observed_at=timezone.now())
        elif kind == "delete":
            delete_batches(Batch.objects.filter(connection=conn, batch_id=payload["id"]))
        else:  # two syncs at once: this one read the row before the other one changed it
            stale = Batch.objects.filter(connection=conn, batch_id=payload["id"]).first()
            store_batch(conn, _payload(index, "in_progress", failed, completed))
            store_fields(conn, batch_fields(payload), known={payload["id"]: stale} if stale else None)
        assert _kept() == _recounted()


@pytest.mark.django_db(transaction=True)
def test_kept_counts_equal_a_recount_after_concurrent_stores(two_connections):
    """Threads with their own database connections store status changes of the same batches at once."""
    start = threading.Barrier(4)
    errors = []

    def work(seed: int):
        try:
            start.wait()
            for step in range(25):
                index = (seed * 7 + step) % 6
                status = STATUSES[(seed + step * 3) % len(STATUSES)]
                store_batch(two_connections[step % 2], _payload(index, status, step % 2, (seed + step) % 3))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _kept() == _recounted() and sum(_kept().values()) == Batch.objects.count() > 0


def test_deleting_a_connection_deletes_its_counts(two_connections):
    store_batch(two_connections[1], payloads.IN_PROGRESS)
    two_connections[1].delete()
    assert BatchCount.objects.count() == 0


def test_rebuild_batch_counts_recounts_and_says_what_was_off(connection):
    store_batch(connection, payloads.IN_PROGRESS)
    store_batch(connection, payloads.ALL_FAILED | {"id": "batch_allfail"})
    BatchCount.objects.filter(status="in_progress").update(n=7)
    BatchCount.objects.create(connection=connection, status="expired", n=2)
    out = StringIO()
    call_command("rebuild_batch_counts", stdout=out)
    assert _kept() == _recounted() == {(connection.pk, "in_progress", False): 1,
                                       (connection.pk, "completed", True): 1}
    assert "in_progress: 7 kept, 1 counted" in out.getvalue()
    assert "expired: 2 kept, 0 counted" in out.getvalue()
    assert "Counted 2 batches." in out.getvalue()


@pytest.mark.parametrize("migration,indexes", [("0009", 1), ("0011", 2)])
def test_the_migrations_build_their_indexes_without_blocking_writes_on_postgresql(transactional_db, migration,
                                                                                 indexes):
    out = StringIO()
    call_command("sqlmigrate", "batches", migration, stdout=out)
    sql = out.getvalue()
    creates = [line for line in sql.splitlines() if line.startswith("CREATE INDEX") and "batches_batch\" (" in line]
    assert len(creates) == indexes  # on the batch table; a new, empty table's own index is built plainly
    concurrently = database.vendor == "postgresql"
    assert all(("CONCURRENTLY" in line) == concurrently for line in creates)
    assert ("BEGIN;" in sql) is False
