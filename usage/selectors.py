"""Reads of the usage page: totals and stacked series from the rollup, top batches, timing, budgets.

Everything is scoped to the connections the user sees (batches/selectors.py) and read from DailyUsage and
DailyDuration, never by scanning batches, except the two top-ten lists (batches created in the period).
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Sum
from django.utils import timezone

from batches import selectors

from . import baselines
from .budgets import consumption
from .models import Budget, DailyDuration, DailyUsage
from .prices import PriceTable

MAX_SERIES = 8  # stacks beyond the largest 8 are summed as "other"
OTHER = "other"
STACKS = {"connection": "connection_id", "model": "model", "endpoint": "endpoint"}
CHARTS = {"cost": "Estimated cost (USD)", "tokens": "Tokens (input + output)",
          "requests": "Requests (succeeded + failed)"}
_SUMS = ("batches", "requests", "completed", "failed", "input_tokens", "cached_tokens", "output_tokens",
         "reasoning_tokens")


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive
    group: str  # "day" or "week"

    def buckets(self) -> list[date]:
        first = self.bucket(self.start)
        step = timedelta(days=7 if self.group == "week" else 1)
        return [first + step * i for i in range((self.bucket(self.end) - first) // step + 1)]

    def bucket(self, day: date) -> date:
        return day - timedelta(days=day.weekday()) if self.group == "week" else day


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _scoped(queryset, connection_ids):
    return queryset if connection_ids is None else queryset.filter(connection_id__in=connection_ids)


def _label(stack: str, value, names: dict) -> str:
    if stack == "connection":
        return names.get(value, f"connection {value}")
    if stack == "model":
        return value or "(no model)"
    if stack == "endpoint":
        return value or "(no endpoint)"
    return value or "(none)"


def report(*, user, period: Period, stack: str, prices: PriceTable) -> dict:
    """Totals, one stacked series per chart (cost, tokens, requests) and their tables, and the unpriced models."""
    connection_ids = selectors.visible_connection_ids(user)
    names = dict(selectors.visible_connections(user).values_list("pk", "name"))
    meta_key = stack.removeprefix("meta:") if stack.startswith("meta:") else ""
    field = "meta_value" if meta_key else STACKS[stack]
    rows = (_scoped(DailyUsage.objects.filter(day__gte=period.start, day__lte=period.end, meta_key=meta_key),
                    connection_ids)
            .order_by().values_list("day", field, "model").annotate(*(Sum(name) for name in _SUMS)))
    totals = dict.fromkeys(_SUMS, 0) | {"cost": 0.0}
    cells = defaultdict(lambda: {"cost": 0.0, "tokens": 0, "requests": 0})
    unpriced = defaultdict(int)
    for day, value, model, *sums in rows:
        measures = dict(zip(_SUMS, sums))
        for name in _SUMS:
            totals[name] += measures[name]
        cost = prices.cost(model, day, input_tokens=measures["input_tokens"], cached_tokens=measures["cached_tokens"],
                           output_tokens=measures["output_tokens"])
        if cost is None and (measures["input_tokens"] or measures["output_tokens"]):
            unpriced[model] += measures["batches"]
        cell = cells[(period.bucket(day), _label(stack, value, names))]
        cell["cost"] += cost or 0.0
        cell["tokens"] += measures["input_tokens"] + measures["output_tokens"]
        cell["requests"] += measures["completed"] + measures["failed"]
        totals["cost"] += cost or 0.0
    buckets, ordered = period.buckets(), _stack_order(cells)
    return {"totals": totals, "charts": {kind: _series(cells, buckets, kind, ordered) for kind in CHARTS},
            "unpriced": sorted(unpriced.items()), "buckets": buckets}


def _stack_order(cells: dict) -> list[str]:
    """The stacks, most requests first (then tokens, cost, name): one order, so one colour, in every chart."""
    sums = defaultdict(lambda: [0, 0, 0.0])
    for (_, label), cell in cells.items():
        for index, kind in enumerate(("requests", "tokens", "cost")):
            sums[label][index] += cell[kind]
    return sorted((label for label, totals in sums.items() if any(totals)),
                  key=lambda label: (*(-total for total in sums[label]), label))


def _series(cells: dict, buckets: list[date], kind: str, ordered: list[str]) -> dict:
    """One chart's stacks (beyond MAX_SERIES, the smallest summed as "other") and its table rows."""
    shown = ordered if len(ordered) <= MAX_SERIES else ordered[:MAX_SERIES - 1] + [OTHER]
    kept = set(shown)
    table = []
    for bucket in buckets:
        values = dict.fromkeys(shown, 0)
        for label in ordered:
            amount = cells.get((bucket, label), {}).get(kind, 0)
            values[label if label in kept else OTHER] += amount
        table.append({"bucket": bucket, "values": [values[label] for label in shown], "total": sum(values.values())})
    return {"labels": shown, "rows": table, "total": sum(row["total"] for row in table)}


def top_batches(*, user, period: Period, limit: int = 10) -> dict:
    """The period's most expensive batches (by their stored cost) and those with the most failed requests, each
    read by its own index."""
    batches = selectors.visible_batches(user).filter(
        created_at__gte=_start_of(period.start), created_at__lt=_start_of(period.end + timedelta(days=1)))
    costly = list(batches.filter(cost_usd__gt=0).select_related("connection").order_by("-cost_usd", "-id")[:limit])
    failing = list(batches.filter(failed_requests__gt=0).select_related("connection")
                   .order_by("-failed_requests", "-id")[:limit])
    return {"costly": costly, "failing": failing}


def timing(*, user, period: Period) -> list[dict]:
    connection_ids = selectors.visible_connection_ids(user)
    return baselines.timing_table(_scoped(DailyDuration.objects.all(), connection_ids),
                                  start=period.start, end=period.end)


def visible_budgets(user) -> list[Budget]:
    """A connection's budgets to whoever sees the connection; a budget over every connection only to whoever
    sees them all (its spend would tell them about the others)."""
    connection_ids = selectors.visible_connection_ids(user)
    budgets = Budget.objects.select_related("connection")
    if connection_ids is not None:
        budgets = budgets.filter(connection_id__in=connection_ids)
    return list(budgets)


def budget_states(user, *, prices: PriceTable, now: datetime | None = None) -> list[dict]:
    now = now or timezone.now()
    averages = {}
    return [{"budget": budget, **consumption(budget, prices=prices, now=now, averages=averages)}
            for budget in visible_budgets(user)]

