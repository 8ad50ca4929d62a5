"""Facts derived from stored rows for the detail page: timeline, progress chart, throughput, cost.

Pure functions over model instances; no I/O.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q

from usage.prices import PriceTable, batch_cost
from usage.rollup import values_of

from .models import Batch, BatchSnapshot, BatchTransition

CHART_WIDTH, CHART_HEIGHT, CHART_POINTS = 600, 160, 200


def timeline(batch: Batch, transitions: list[BatchTransition]) -> list[dict]:
    """Status transitions in time order, each with how long the batch stayed in that status."""
    steps = sorted(transitions, key=lambda t: (t.at or t.observed_at, t.observed_at))
    rows = []
    for index, step in enumerate(steps):
        start = step.at or step.observed_at
        end = (steps[index + 1].at or steps[index + 1].observed_at) if index + 1 < len(steps) else None
        rows.append({
            "status": step.status,
            "at": step.at,
            "observed_at": step.observed_at,
            "duration": (end - start) if end and end >= start else None,
            "current": index == len(steps) - 1 and not batch.is_terminal,
            "terminal": index == len(steps) - 1 and batch.is_terminal,
        })
    return rows


class _Point:
    __slots__ = ("version", "observed_at", "status", "total_requests", "completed_requests", "failed_requests")

    def __init__(self, *values):
        for name, value in zip(self.__slots__, values):
            setattr(self, name, value)


def sampled_snapshots(batch: Batch, limit: int = CHART_POINTS) -> list:
    """At most about `limit` snapshots for the chart, spread evenly by version and chosen in SQL (a batch
    can have tens of thousands), always with the first and the latest."""
    step = max(1, -(-batch.version // limit))
    rows = batch.snapshots.order_by("version")
    if step > 1:
        rows = rows.annotate(bucket=F("version") % step).filter(Q(bucket=0) | Q(version=1) | Q(version=batch.version))
    return [_Point(*values) for values in rows.values_list(*_Point.__slots__)]


def progress_chart(snapshots: list[BatchSnapshot]) -> dict | None:
    """SVG polyline coordinates of finished requests (completed + failed) over observed time."""
    points = [s for s in snapshots if s.total_requests > 0]
    if len(points) < 2:
        return None
    start, end = points[0].observed_at, points[-1].observed_at
    span = max((end - start).total_seconds(), 1.0)
    total = max(max(s.total_requests for s in points), 1)

    def xy(s: BatchSnapshot, value: int) -> str:
        x = (s.observed_at - start).total_seconds() / span * CHART_WIDTH
        y = CHART_HEIGHT - min(max(value, 0) / total, 1.0) * CHART_HEIGHT
        return f"{x:.1f},{y:.1f}"

    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "done": " ".join(xy(s, s.completed_requests + s.failed_requests) for s in points),
        "failed": " ".join(xy(s, s.failed_requests) for s in points),
        "start": start,
        "end": end,
        "total": total,
    }


# The API's own timestamps, in the order a batch passes them; the last one that is set ends the run.
_PHASE_STARTS = (("validating", "created_at"), ("in_progress", "in_progress_at"), ("finalizing", "finalizing_at"),
                 ("cancelling", "cancelling_at"))
_ENDS = ("completed_at", "failed_at", "expired_at", "cancelled_at")


def finished_at(batch: Batch) -> datetime | None:
    return max((t for t in (getattr(batch, name) for name in _ENDS) if t), default=None)


def took(batch: Batch) -> timedelta | None:
    """How long a finished batch ran, from created to its end timestamp."""
    end = finished_at(batch)
    return end - batch.created_at if end and batch.created_at and end >= batch.created_at else None


def phases(batch: Batch, now: datetime) -> dict | None:
    """The time a batch spent in each phase, from the API's timestamps (so it needs no snapshot history): one
    bar segment per phase, positioned in percent of the whole run (until now for an active batch)."""
    starts = sorted(((getattr(batch, field), status) for status, field in _PHASE_STARTS if getattr(batch, field)),
                    key=lambda pair: pair[0])
    if not starts:
        return None
    end = finished_at(batch) or now
    begin = starts[0][0]
    span = max((end - begin).total_seconds(), 1.0)
    rows = []
    for index, (start, status) in enumerate(starts):
        stop = starts[index + 1][0] if index + 1 < len(starts) else end
        seconds = max((stop - start).total_seconds(), 0)
        rows.append({"status": status, "start": start, "duration": timedelta(seconds=seconds),
                     "x": round((start - begin).total_seconds() / span * 100, 2),
                     "width": round(max(seconds / span * 100, 0.5), 2)})
    return {"rows": rows, "start": begin, "end": end, "running": finished_at(batch) is None}


def throughput(batch: Batch, snapshots: list[BatchSnapshot], now: datetime) -> dict | None:
    """Requests per minute over the in-progress snapshots, and a naive ETA from it."""
    running = [s for s in snapshots if s.status == "in_progress"]
    if len(running) < 2:
        return None
    first, last = running[0], running[-1]
    seconds = (last.observed_at - first.observed_at).total_seconds()
    done = (last.completed_requests + last.failed_requests) - (first.completed_requests + first.failed_requests)
    if seconds <= 0 or done <= 0:
        return None
    per_second = done / seconds
    remaining = max(batch.total_requests - batch.completed_requests - batch.failed_requests, 0)
    eta = None
    if batch.status == "in_progress" and remaining:
        eta = now + timedelta(seconds=remaining / per_second)
    return {"per_minute": round(per_second * 60, 1), "eta": eta}


def estimated_cost(batch: Batch, prices=None) -> dict | None:
    """An estimate in USD from the price table at the batch's creation day, batch discount applied; None when
    the batch has no usage yet or its model no price."""
    if batch.input_tokens is None:
        return None
    usd = batch_cost(values_of(batch), prices or PriceTable.load())
    return None if usd is None else {"usd": usd, "discount": settings.BATCH_PRICE_DISCOUNT}


def estimated_cost_from_bytes(model: str, *, input_bytes: int, output_tokens: int | None = None,
                              bytes_per_token: int = 4) -> dict | None:
    """What a batch not yet run may cost at today's price: its input tokens guessed from the request lines'
    bytes (about `bytes_per_token` a token; no tokenizer is used), plus `output_tokens` when there is a guess."""
    tokens = -(-max(input_bytes, 0) // bytes_per_token)
    usd = PriceTable.load().cost(model, input_tokens=tokens, cached_tokens=0, output_tokens=output_tokens)
    if usd is None:
        return None
    return {"usd": usd, "discount": settings.BATCH_PRICE_DISCOUNT, "input_tokens": tokens,
            "output_tokens": output_tokens, "basis": "bytes"}
