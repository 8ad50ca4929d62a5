"""The daily rollup (DailyUsage, DailyDuration): what each batch adds to it, kept current as batches change.

batches/store.py calls apply() with a batch's rows as they were and as they are now, in the transaction that
changes the batch; the difference is added with one upsert per table, as BatchCount's counts are (no read first,
rows in a fixed order so two stores cannot deadlock). `manage.py rebuild_usage` recomputes both tables from the
batches with the same rows() function, so the rollup and a direct aggregation can only agree.
"""

import math
from collections import Counter
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection as db, transaction

from .models import DailyDuration, DailyUsage

# Read from a batch (an instance or a .values() dict) to compute its rows.
FIELDS = ("connection_id", "model", "endpoint", "metadata", "created_at", "first_seen_at", "in_progress_at",
          "finalizing_at", "completed_at", "cancelling_at", "cancelled_at", "total_requests", "completed_requests",
          "failed_requests", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")
MEASURES = ("batches", "requests", "completed", "failed", "input_tokens", "cached_tokens", "output_tokens",
            "reasoning_tokens")
_COUNTS = ("total_requests", "completed_requests", "failed_requests", "input_tokens", "cached_tokens",
           "output_tokens", "reasoning_tokens")
# A hostile or broken API could send any number; one batch adds at most this much, so sums never overflow.
_CAP = 10**12
# Each phase: the status timestamps it runs between, on a batch's normal path (usage/models.PHASES).
PHASE_SPANS = {"validating": ("created_at", "in_progress_at"), "in_progress": ("in_progress_at", "finalizing_at"),
               "finalizing": ("finalizing_at", "completed_at"), "cancelling": ("cancelling_at", "cancelled_at"),
               "end_to_end": ("created_at", "completed_at")}
# Histogram buckets: bucket k holds durations in [2^(k/4), 2^((k+1)/4)) seconds, about 19% wide; the last one
# everything from 2^(LAST_BUCKET/4) s (about 8.6 days) on.
BUCKETS_PER_DOUBLING = 4
LAST_BUCKET = 78


def capped(count) -> int:
    """A count of one batch as the rollup and its cost take it: none as 0, at most _CAP, never negative."""
    return min(max(count or 0, 0), _CAP)


def bucket_of(seconds: float) -> int:
    if seconds < 1:
        return 0
    return min(int(math.log2(seconds) * BUCKETS_PER_DOUBLING), LAST_BUCKET)


def bucket_bounds(bucket: int) -> tuple[float, float]:
    return 2 ** (bucket / BUCKETS_PER_DOUBLING), 2 ** ((bucket + 1) / BUCKETS_PER_DOUBLING)


def day_of(value: dict):
    """The UTC day a batch is counted on: the day it was created (first seen, if the API did not say)."""
    when = value["created_at"] or value["first_seen_at"] or datetime.now(UTC)
    return when.astimezone(UTC).date()


def values_of(batch) -> dict:
    return {name: getattr(batch, name) for name in FIELDS}


def rows(value: dict) -> tuple[dict, dict]:
    """A batch's part of the rollup: {usage key: measures} and {duration key: 1}."""
    day = day_of(value)
    model, endpoint = (value["model"] or "")[:255], (value["endpoint"] or "")[:255]
    measures = (1, *(capped(value[name]) for name in _COUNTS))
    usage = {(day, "", value["connection_id"], model, endpoint, ""): measures}
    metadata = value["metadata"] if isinstance(value["metadata"], dict) else {}
    for key in settings.USAGE_METADATA_KEYS:
        given = metadata.get(key)
        usage[(day, key, value["connection_id"], model, endpoint, "" if given is None else str(given)[:100])] = measures
    durations = {}
    for phase, (start, end) in PHASE_SPANS.items():
        if value[start] and value[end] and value[end] >= value[start]:
            seconds = (value[end] - value[start]).total_seconds()
            durations[(day, value["connection_id"], model, endpoint, phase, bucket_of(seconds))] = 1
    return usage, durations


def difference(*changes: tuple[dict | None, dict | None]) -> tuple[dict, Counter]:
    """What changing batches from `before` to `after` (values_of() dicts; None: absent) adds to each table."""
    usage, durations = {}, Counter()
    for value, sign in ((value, sign) for before, after in changes for value, sign in ((before, -1), (after, 1))):
        if value is None:
            continue
        usage_rows, duration_rows = rows(value)
        for key, measures in usage_rows.items():
            known = usage.get(key, (0,) * len(MEASURES))
            usage[key] = tuple(a + sign * b for a, b in zip(known, measures))
        for key, n in duration_rows.items():
            durations[key] += sign * n
    return ({key: m for key, m in usage.items() if any(m)},
            Counter({key: n for key, n in durations.items() if n}))


def apply(*changes: tuple[dict | None, dict | None]) -> None:
    """Add batches' changes, (before, after) pairs, to the rollup (inside the transaction that makes them)."""
    add(*difference(*changes))


def add(usage: dict, durations: Counter) -> None:
    """Add measures to DailyUsage and counts to DailyDuration, creating missing rows, in one upsert each."""
    if usage:
        _upsert(DailyUsage._meta.db_table, ("day", "meta_key", "connection_id", "model", "endpoint", "meta_value"),
                MEASURES, sorted(usage.items()))
    if durations:
        _upsert(DailyDuration._meta.db_table, ("day", "connection_id", "model", "endpoint", "phase", "bucket"),
                ("n",), sorted((key, (n,)) for key, n in durations.items()))


def _upsert(table: str, keys: tuple, measures: tuple, items: list, chunk: int = 200) -> None:
    columns = keys + measures
    update = ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in measures)
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with db.cursor() as cursor:
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            # The same statement on PostgreSQL and SQLite (3.24+); the ORM's upsert cannot add to a column.
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([placeholders] * len(part))} "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}",
                [v for key, values in part for v in (*key, *values)])


def rebuild(*, batch_model=None, usage_model=DailyUsage, duration_model=DailyDuration, chunk: int = 5000) -> int:
    """Recompute the rollup from every batch, replacing it (migrations pass their historical models). Stores
    wait meanwhile on PostgreSQL, so no change is lost or counted twice. Returns the batches counted."""
    if batch_model is None:
        from batches.models import Batch as batch_model
    usage, durations, counted = {}, Counter(), 0
    with transaction.atomic():
        if db.vendor == "postgresql":
            with db.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {usage_model._meta.db_table}, {duration_model._meta.db_table} "
                               "IN EXCLUSIVE MODE")
        usage_model.objects.all().delete()
        duration_model.objects.all().delete()
        last = 0
        while True:
            page = list(batch_model.objects.filter(pk__gt=last).order_by("pk").values("pk", *FIELDS)[:chunk])
            if not page:
                break
            last = page[-1]["pk"]
            counted += len(page)
            for value in page:
                usage_rows, duration_rows = rows(value)
                for key, measures in usage_rows.items():
                    known = usage.get(key)
                    usage[key] = measures if known is None else tuple(a + b for a, b in zip(known, measures))
                durations.update(duration_rows)
        usage_model.objects.bulk_create(
            [usage_model(day=k[0], meta_key=k[1], connection_id=k[2], model=k[3], endpoint=k[4], meta_value=k[5],
                        **dict(zip(MEASURES, m))) for k, m in usage.items()], batch_size=1000)
        duration_model.objects.bulk_create(
            [duration_model(day=k[0], connection_id=k[1], model=k[2], endpoint=k[3], phase=k[4], bucket=k[5], n=n)
             for k, n in durations.items()], batch_size=1000)
    return counted
