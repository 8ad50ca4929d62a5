"""The daily rollup (DailyUsage, DailyDuration), kept by the store on every change, always equals a direct
aggregation over the batches, and equals what `manage.py rebuild_usage` recomputes."""

import math
from collections import Counter, defaultdict
from datetime import UTC, date, timedelta
from io import StringIO

from django.conf import settings
from django.core.management import call_command
from hypothesis import given, strategies as st

from batches.models import Batch
from batches.store import delete_batches, store_batch
from tests import payloads
from tests.conftest import unix
from usage import rollup
from usage.models import DailyDuration, DailyUsage

FIRST_DAY = date(2026, 3, 1)
STATUSES = ("validating", "in_progress", "finalizing", "completed", "failed", "cancelling", "cancelled", "expired")
TOKENS = st.one_of(st.none(), st.integers(-5, 10**7), st.sampled_from([10**15, -(2**63), 2**63 - 1]))
METADATA = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "team": st.one_of(st.sampled_from(["growth", "search", "", "=cmd"]), st.integers(0, 3), st.none(),
                      st.text(max_size=120)),
    "project": st.sampled_from(["alpha", "beta"]),
    "description": st.just("nightly"),
}))
# The seconds after the day's start at which the batch entered each status; None: it did not (yet).
OFFSET = st.one_of(st.none(), st.integers(0, 4 * 86400))
BATCH = st.fixed_dictionaries({
    "connection": st.integers(0, 1), "index": st.integers(0, 5), "status": st.sampled_from(STATUSES),
    "day": st.integers(0, 3), "created": st.one_of(st.none(), st.integers(0, 86399)),
    "in_progress": OFFSET, "finalizing": OFFSET, "completed": OFFSET, "cancelling": OFFSET, "cancelled": OFFSET,
    "model": st.sampled_from(["gpt-4o-mini", "gpt-4o", "", "ft:gpt-4o-mini:acme::x1"]),
    "endpoint": st.sampled_from(["/v1/chat/completions", "/v1/embeddings"]),
    "metadata": METADATA,
    "counts": st.tuples(st.integers(-3, 10**6), st.integers(-3, 10**6), st.integers(-3, 10**6)),
    "tokens": st.tuples(TOKENS, TOKENS, TOKENS, TOKENS),
})
OPERATIONS = st.lists(st.tuples(st.sampled_from(["store", "store", "store", "delete"]), BATCH), min_size=1,
                      max_size=10)


def _payload(spec: dict) -> dict:
    start = unix(FIRST_DAY + timedelta(days=spec["day"]))
    at = {name: None if spec[name] is None else start + spec[name]
          for name in ("created", "in_progress", "finalizing", "completed", "cancelling", "cancelled")}
    input_tokens, cached, output, reasoning = spec["tokens"]
    return payloads.batch(
        id=f"batch_{spec['index']}", status=spec["status"], model=spec["model"], endpoint=spec["endpoint"],
        metadata=spec["metadata"], created_at=at["created"], in_progress_at=at["in_progress"],
        finalizing_at=at["finalizing"], completed_at=at["completed"], cancelling_at=at["cancelling"],
        cancelled_at=at["cancelled"],
        request_counts=dict(zip(("total", "completed", "failed"), spec["counts"])),
        usage={"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": cached},
               "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
               "total_tokens": None})


def _count(value) -> int:
    """What one batch adds for a count: nothing below zero, at most 10^12 (so sums cannot overflow)."""
    return min(max(value or 0, 0), 10**12)


def _bucket(seconds: float) -> int:
    """Bucket k holds [2^(k/4), 2^((k+1)/4)) seconds; under a second is bucket 0, 2^19.5 s and more bucket 78."""
    return 0 if seconds < 1 else min(math.floor(math.log2(seconds) * 4), 78)


def _direct() -> tuple[dict, dict]:
    """The rollup computed here from the Batch table, plainly: per created day (first seen, without one)."""
    usage = defaultdict(lambda: [0] * 8)
    durations = Counter()
    spans = {"validating": ("created_at", "in_progress_at"), "in_progress": ("in_progress_at", "finalizing_at"),
             "finalizing": ("finalizing_at", "completed_at"), "cancelling": ("cancelling_at", "cancelled_at"),
             "end_to_end": ("created_at", "completed_at")}
    for batch in Batch.objects.all():
        day = (batch.created_at or batch.first_seen_at).astimezone(UTC).date()
        measures = [1, _count(batch.total_requests), _count(batch.completed_requests), _count(batch.failed_requests),
                    _count(batch.input_tokens), _count(batch.cached_tokens), _count(batch.output_tokens),
                    _count(batch.reasoning_tokens)]
        metadata = batch.metadata or {}
        groups = [("", "")] + [(key, "" if metadata.get(key) is None else str(metadata[key])[:100])
                               for key in ("team", "project")]
        for key, value in groups:
            row = usage[(day, key, batch.connection_id, batch.model, batch.endpoint, value)]
            for i, measure in enumerate(measures):
                row[i] += measure
        for phase, (start, end) in spans.items():
            began, ended = getattr(batch, start), getattr(batch, end)
            if began and ended and ended >= began:
                durations[(day, batch.connection_id, batch.model, batch.endpoint, phase,
                           _bucket((ended - began).total_seconds()))] += 1
    return {key: tuple(row) for key, row in usage.items()}, dict(durations)


def _kept() -> tuple[dict, dict]:
    """The rollup tables' rows that count something (a batch moved away leaves its old row at zero)."""
    usage = {(r.day, r.meta_key, r.connection_id, r.model, r.endpoint, r.meta_value): tuple(
        getattr(r, name) for name in rollup.MEASURES) for r in DailyUsage.objects.all()}
    durations = {(r.day, r.connection_id, r.model, r.endpoint, r.phase, r.bucket): r.n
                 for r in DailyDuration.objects.all()}
    assert all(n >= 0 for n in durations.values()) and all(min(m) >= 0 for m in usage.values())
    return ({key: m for key, m in usage.items() if any(m)}, {key: n for key, n in durations.items() if n})


@given(operations=OPERATIONS)
def test_the_rollup_equals_a_direct_aggregation_after_any_stores_changes_and_deletes(
        connection, other_connection, operations):
    assert settings.USAGE_METADATA_KEYS == ["team", "project"]  # the default, which _direct() counts by
    connections = [connection, other_connection]
    Batch.objects.all().delete()  # fixtures are set up once per test, not per example: start each one empty
    DailyUsage.objects.all().delete()
    DailyDuration.objects.all().delete()
    for kind, spec in operations:
        conn = connections[spec["connection"]]
        if kind == "store":
            store_batch(conn, _payload(spec))
        else:
            delete_batches(Batch.objects.filter(connection=conn, batch_id=f"batch_{spec['index']}"))
        assert _kept() == _direct()
    rollup.rebuild()
    assert _kept() == _direct()
    # the rebuild leaves no empty row behind
    assert not DailyUsage.objects.filter(batches=0).exists() and not DailyDuration.objects.filter(n=0).exists()


def test_a_corrected_timestamp_without_a_visible_change_moves_the_batch_to_its_day_and_phase(connection):
    """The API may send a batch again with only a timestamp changed (no snapshot is written): the rollup follows."""
    spec = {"index": 1, "status": "completed", "day": 0, "created": 3600, "in_progress": 3660, "finalizing": 7200,
            "completed": 7500, "cancelling": None, "cancelled": None, "model": "gpt-4o", "endpoint": "/v1/embeddings",
            "metadata": {"team": "growth"}, "counts": (10, 10, 0), "tokens": (100, 0, 50, 0)}
    store_batch(connection, _payload(spec))
    store_batch(connection, _payload({**spec, "day": 2, "completed": 9000}))
    assert _kept() == _direct()
    assert set(DailyUsage.objects.filter(batches__gt=0).values_list("day", flat=True)) == {date(2026, 3, 3)}


def test_rebuild_usage_recounts_a_damaged_rollup(connection, store_usage):
    store_usage(connection, "batch_a", date(2026, 3, 2), input=1000, output=10, team="growth")
    store_usage(connection, "batch_b", date(2026, 3, 2), input=500, failed=3, team="search")
    expected = _kept()
    DailyUsage.objects.update(input_tokens=0)
    DailyDuration.objects.all().delete()
    out = StringIO()
    call_command("rebuild_usage", stdout=out)
    assert "Rolled up 2 batches" in out.getvalue()
    assert _kept() == expected == _direct()


def test_two_stores_of_one_invisible_change_move_the_rollup_once(connection):
    """Two workers read the batch, then both store a payload whose only changes are its days (no new version):
    one moves its rollup rows, the other finds the row changed and leaves them."""
    from batches.models import Batch
    from batches.payload import batch_fields
    from batches.store import store_batch, store_fields
    from tests import payloads

    first = payloads.batch(id="batch_r", status="completed", model="gpt-4o", in_progress_at=payloads.CREATED + 5,
                           finalizing_at=payloads.CREATED + 60, completed_at=payloads.CREATED + 90)
    store_batch(connection, first)
    read_by_a, read_by_b = Batch.objects.get(batch_id="batch_r"), Batch.objects.get(batch_id="batch_r")
    later = {**first, "created_at": payloads.CREATED + 2 * 86400, "completed_at": payloads.CREATED + 3 * 86400}
    store_fields(connection, batch_fields(later), known={"batch_r": read_by_a})
    store_fields(connection, batch_fields(later), known={"batch_r": read_by_b})
    assert _kept() == _direct()
