"""Timing baselines: p50 and p95 of each phase per model and endpoint, from the rollup's duration histograms.

They replace the detail page's naive ETA and the fixed "stuck" thresholds once a connection has enough history
for a batch's model and endpoint (USAGE_BASELINE_MIN_BATCHES batches in the last USAGE_BASELINE_DAYS days).
"""

from collections import defaultdict
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from .models import PHASES, DailyDuration
from .rollup import bucket_bounds

# After this phase, a batch on its normal path goes through these.
_LATER = {"validating": ["in_progress", "finalizing"], "in_progress": ["finalizing"], "finalizing": []}


def percentile(histogram: dict[int, int], q: float) -> float | None:
    """The q-th percentile (0-100) of a histogram {bucket: n}, interpolated geometrically inside its bucket
    (so within one bucket's width, 19%, of the exact value)."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank, seen = max(q / 100 * total, 1e-9), 0
    for bucket in sorted(histogram):
        n = histogram[bucket]
        if n > 0 and seen + n >= rank:
            low, high = bucket_bounds(bucket)
            fraction = (rank - seen) / n
            return high * fraction if bucket == 0 else low * (high / low) ** fraction
        seen += n
    return bucket_bounds(max(histogram))[1]


def phase_stats(histograms: dict) -> dict:
    """{phase: histogram} -> {phase: {"p50", "p95" (seconds), "n"}}."""
    return {phase: {"p50": percentile(h, 50), "p95": percentile(h, 95), "n": sum(h.values())}
            for phase, h in histograms.items() if sum(h.values()) > 0}


def timing_table(durations, *, start: date, end: date) -> list[dict]:
    """Per model and endpoint, each phase's p50/p95 and how many batches they rest on, over [start, end]."""
    rows = (durations.filter(day__gte=start, day__lte=end).order_by()
            .values_list("model", "endpoint", "phase", "bucket").annotate(total=Sum("n")))
    grouped = defaultdict(lambda: defaultdict(dict))
    for model, endpoint, phase, bucket, n in rows:
        grouped[(model, endpoint)][phase][bucket] = n
    return [{"model": model, "endpoint": endpoint, "phases": [(p, stats.get(p)) for p in PHASES],
             "n": max((s["n"] for s in stats.values()), default=0)}
            for (model, endpoint), histograms in sorted(grouped.items())
            for stats in [phase_stats(histograms)]]


def for_batch(batch, *, today: date | None = None) -> dict:
    """The batch's connection's baselines for its model and endpoint over the last USAGE_BASELINE_DAYS days:
    {phase: {"p50", "p95", "n"}}, phases with too little history left out."""
    today = today or timezone.now().date()
    rows = (DailyDuration.objects.filter(
        connection_id=batch.connection_id, model=batch.model[:255], endpoint=batch.endpoint[:255],
        day__gt=today - timedelta(days=settings.USAGE_BASELINE_DAYS), day__lte=today)
        .order_by().values_list("phase", "bucket").annotate(total=Sum("n")))
    histograms = defaultdict(dict)
    for phase, bucket, n in rows:
        histograms[phase][bucket] = n
    return {phase: stats for phase, stats in phase_stats(histograms).items()
            if stats["n"] >= settings.USAGE_BASELINE_MIN_BATCHES}


def eta(batch, baselines: dict, now: datetime) -> dict | None:
    """When the batch should end, from the p50 of its current phase and of the phases after it; None when the
    batch is not on that path or one of those phases lacks history. `late`: its current phase has already taken
    longer than typical, so there is no honest time to give (the page says so instead of moving the time on)."""
    since = batch.status_since
    if batch.status not in _LATER or since is None:
        return None
    phases = [batch.status, *_LATER[batch.status]]
    if any(phase not in baselines for phase in phases):
        return None
    typical = baselines[batch.status]["p50"]
    at = since + timedelta(seconds=typical + sum(baselines[phase]["p50"] for phase in phases[1:]))
    return {"at": at, "n": min(baselines[p]["n"] for p in phases), "late": since + timedelta(seconds=typical) < now,
            "typical": typical}


def stuck_limit(batch, baselines: dict) -> dict | None:
    """How long the batch may stay in its status before it looks stuck: its connection's p95 for that status,
    model and endpoint when there is enough history (never less than STUCK_BASELINE_FLOOR_SECONDS), else the
    fixed STUCK_*_SECONDS. None for a status that is never stuck."""
    fixed = settings.STUCK_AFTER_SECONDS.get(batch.status)
    if fixed is None:
        return None
    stats = baselines.get(batch.status)
    if stats is None:
        return {"seconds": fixed, "n": 0, "basis": "fixed"}
    floor = settings.STUCK_BASELINE_FLOOR_SECONDS
    return {"seconds": max(stats["p95"], floor), "n": stats["n"], "p95": stats["p95"],
            "basis": "p95" if stats["p95"] >= floor else "floor"}


def is_stuck(batch, baselines: dict, now: datetime) -> bool:
    limit = stuck_limit(batch, baselines)
    spent = batch.time_in_status(now)
    return limit is not None and spent is not None and spent.total_seconds() > limit["seconds"]
