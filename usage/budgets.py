"""Budgets: estimated spend in the current month or week against an amount, batches in flight included at
their expected cost, a forecast to the period's end, and an alert event when 80% and 100% are crossed (once
per threshold per period, through the alerts outbox)."""

from calendar import monthrange
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from batches.models import Batch

from .models import Budget, DailyUsage
from .prices import PriceTable, prices_model

THRESHOLDS = (80, 100)
EVENT_KINDS = {80: "budget.nearly_spent", 100: "budget.spent"}


def period_of(budget: Budget, today: date) -> tuple[date, date]:
    """The budget's current period: its first day and the first day after it."""
    if budget.period == Budget.WEEK:
        start = today - timedelta(days=today.weekday())
        return start, start + timedelta(days=7)
    start = today.replace(day=1)
    return start, start + timedelta(days=monthrange(today.year, today.month)[1])


def _models(budget: Budget) -> list[str] | None:
    """The stored models a budget's model counts, as a price row of that name prices them (prices_model: the
    model, its dated snapshots, or a `*` prefix); None when the budget is for every model."""
    if not budget.model:
        return None
    known = DailyUsage.objects.filter(meta_key="").order_by().values_list("model", flat=True).distinct()
    return [model for model in known if prices_model(budget.model, model)]


def _usage(budget: Budget, models: list[str] | None):
    rows = DailyUsage.objects.filter(meta_key=budget.meta_key, meta_value=budget.meta_value if budget.meta_key else "")
    if budget.connection_id:
        rows = rows.filter(connection_id=budget.connection_id)
    if models is not None:
        rows = rows.filter(model__in=models)
    return rows


def _batches(budget: Budget, models: list[str] | None):
    batches = Batch.objects.all()
    if budget.connection_id:
        batches = batches.filter(connection_id=budget.connection_id)
    if models is not None:
        batches = batches.filter(model__in=models)
    if budget.meta_key:
        batches = batches.filter(**{f"metadata__{budget.meta_key}": budget.meta_value})
    return batches


def cost_per_request(prices: PriceTable, model: str, today: date) -> float | None:
    """The average estimated cost of one request of `model` over the last USAGE_BASELINE_DAYS days, from the
    batches that used tokens; None without history or price."""
    rows = (DailyUsage.objects.filter(meta_key="", model=model, input_tokens__gt=0,
                                      day__gt=today - timedelta(days=settings.USAGE_BASELINE_DAYS), day__lte=today)
            .order_by().values_list("day").annotate(Sum("completed"), Sum("failed"), Sum("input_tokens"),
                                                    Sum("cached_tokens"), Sum("output_tokens")))
    cost, requests = 0.0, 0
    for day, completed, failed, input_tokens, cached, output in rows:
        priced = prices.cost(model, day, input_tokens=input_tokens, cached_tokens=cached, output_tokens=output)
        if priced is None:
            return None
        cost, requests = cost + priced, requests + completed + failed
    return cost / requests if requests else None


def consumption(budget: Budget, *, prices: PriceTable, now: datetime, averages: dict | None = None) -> dict:
    """Spent so far (finished and running batches' tokens), the in-flight part still expected, the total as a
    percentage of the amount, and a forecast to the period's end."""
    today, models = now.date(), _models(budget)
    start, end = period_of(budget, today)
    spent, unpriced = 0.0, set()
    for day, model, input_tokens, cached, output in (
            _usage(budget, models).filter(day__gte=start, day__lt=end).order_by().values_list("day", "model")
            .annotate(Sum("input_tokens"), Sum("cached_tokens"), Sum("output_tokens"))):
        priced = prices.cost(model, day, input_tokens=input_tokens, cached_tokens=cached, output_tokens=output)
        if priced is not None:
            spent += priced
        elif input_tokens or output:
            unpriced.add(model)
    in_flight, averages = 0.0, {} if averages is None else averages  # per model, shared by the caller's budgets
    running = _batches(budget, models).filter(in_flight=True, created_at__gte=datetime.combine(start, time.min, UTC))
    for batch in running.only("model", "created_at", "first_seen_at", "total_requests", "input_tokens",
                              "cached_tokens", "output_tokens")[:5000]:
        if batch.model not in averages:
            averages[batch.model] = cost_per_request(prices, batch.model, today)
        if averages[batch.model] is None:
            continue
        so_far = prices.cost(batch.model, batch.created_at.date(), input_tokens=batch.input_tokens,
                             cached_tokens=batch.cached_tokens, output_tokens=batch.output_tokens) or 0.0
        in_flight += max(max(batch.total_requests, 0) * averages[batch.model] - so_far, 0.0)
    amount = float(budget.amount_usd)
    total = spent + in_flight
    elapsed = max((now - datetime.combine(start, time.min, UTC)).total_seconds() / 86400, 1.0)
    length = (end - start).days
    forecast = total + spent / elapsed * max(length - elapsed, 0)
    return {"start": start, "end": end - timedelta(days=1), "spent": spent, "in_flight": in_flight, "total": total,
            "percent": round(100 * total / amount, 1) if amount > 0 else None, "forecast": forecast,
            "forecast_percent": round(100 * forecast / amount, 1) if amount > 0 else None,
            "unpriced": sorted(unpriced), "amount": amount}


def check_budgets(*, now: datetime | None = None) -> int:
    """Raise an event for each budget threshold crossed in the current period, once (the event's dedupe key).
    Budgets whose connections are still on their first import wait: an import never alerts."""
    from notifications.events import absolute_url, create_events
    from notifications.models import Event

    from batches.models import Connection

    now = now or timezone.now()
    prices = PriceTable.load()
    importing = set(Connection.objects.filter(imported_at__isnull=True, enabled=True).values_list("pk", flat=True))
    events, averages = [], {}
    for budget in Budget.objects.select_related("connection"):
        if (budget.connection_id in importing) if budget.connection_id else importing:
            continue
        state = consumption(budget, prices=prices, now=now, averages=averages)
        for threshold in THRESHOLDS:
            if state["percent"] is None or state["percent"] < threshold:
                continue
            reason = (f"${state['total']:,.2f} of ${state['amount']:,.2f} ({state['percent']:g}%) estimated for "
                      f"{state['start']:%Y-%m-%d} to {state['end']:%Y-%m-%d}, ${state['in_flight']:,.2f} of it "
                      f"still in flight; forecast ${state['forecast']:,.2f}")
            events.append(Event(
                kind=EVENT_KINDS[threshold], connection_id=budget.connection_id,
                dedupe_key=f"budget:{budget.pk}:{state['start']:%Y-%m-%d}:{threshold}",
                data={"budget": budget.name, "scope": budget.scope_text, "reason": reason,
                      "url": absolute_url(reverse("usage")),
                      # a channel's metadata rule (team=growth) takes a budget for that value only
                      **({"metadata": {budget.meta_key: budget.meta_value}} if budget.meta_key else {})}))
    return create_events(events)

