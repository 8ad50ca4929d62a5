"""/metrics: Batchboard's state in Prometheus' text format, computed at each scrape from aggregates.

Syncs run in worker processes, so nothing here is a per-process prometheus_client counter: a custom collector
reads the database (BatchCount, the daily usage rollup, SyncCounter, connections, alert deliveries). Labels are connections,
statuses, models and error kinds, never batches, so the number of series stays small however many batches.
"""

import hmac
import ipaddress

from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from usage.models import DailyUsage
from usage.prices import PriceTable

from .models import BatchCount, Connection, SyncCounter


def allowed(authorization: str, ip: str) -> bool:
    """`Authorization: Bearer <METRICS_TOKEN>`, or a client address in METRICS_ALLOWED_IPS."""
    scheme, _, given = authorization.partition(" ")
    token = settings.METRICS_TOKEN
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in settings.METRICS_ALLOWED_IPS)


class BatchboardCollector:
    def collect(self):
        slugs = {}
        since_success = GaugeMetricFamily(
            "batchboard_seconds_since_last_sync",
            "Seconds since the connection's last successful sync (since it was added, if it never synced); "
            "enabled connections only", labels=["connection"])
        failures = GaugeMetricFamily("batchboard_sync_consecutive_failures",
                                     "Sync cycles failed in a row", labels=["connection"])
        now = timezone.now()
        for pk, slug, enabled, last_success_at, created, failing in Connection.objects.values_list(
                "pk", "slug", "enabled", "last_success_at", "created", "consecutive_failures"):
            slugs[pk] = slug
            if enabled:
                since_success.add_metric([slug], (now - (last_success_at or created)).total_seconds())
                failures.add_metric([slug], failing)
        yield since_success
        yield failures

        batches = GaugeMetricFamily("batchboard_batches", "Stored batches", labels=["connection", "status"])
        for connection_id, status, n in (BatchCount.objects.filter(n__gt=0).values("connection_id", "status")
                                         .annotate(total=Sum("n")).values_list("connection_id", "status", "total")):
            batches.add_metric([slugs.get(connection_id, ""), status], n)
        yield batches

        yield from _request_families(slugs)
        yield from _sync_families(slugs)
        yield _deliveries()


def _request_families(slugs: dict):
    requests = CounterMetricFamily("batchboard_requests", "Requests of the stored batches that completed or failed",
                                   labels=["connection", "model", "outcome"])
    tokens = CounterMetricFamily("batchboard_tokens", "Tokens used by the stored batches",
                                 labels=["connection", "model", "kind"])
    cost = GaugeMetricFamily("batchboard_estimated_cost_usd",
                             "Estimated cost of the stored batches (priced by the day, batch discount applied)",
                             labels=["connection", "model"])
    totals, costs, prices = {}, {}, PriceTable.load()
    for connection_id, model, day, completed, failed, input_tokens, cached, output in (
            DailyUsage.objects.filter(meta_key="").order_by().values_list("connection_id", "model", "day")
            .annotate(Sum("completed"), Sum("failed"), Sum("input_tokens"), Sum("cached_tokens"),
                      Sum("output_tokens"))):
        labels = (slugs.get(connection_id, ""), model)
        total = totals.setdefault(labels, [0, 0, 0, 0, 0])
        for index, value in enumerate((completed, failed, input_tokens, cached, output)):
            total[index] += value
        priced = prices.cost(model, day, input_tokens=input_tokens, cached_tokens=cached, output_tokens=output)
        if priced is not None:
            costs[labels] = costs.get(labels, 0.0) + priced
    for labels, (completed, failed, input_tokens, cached, output) in totals.items():
        requests.add_metric([*labels, "completed"], completed)
        requests.add_metric([*labels, "failed"], failed)
        for kind, value in (("input", input_tokens), ("cached", cached), ("output", output)):
            tokens.add_metric([*labels, kind], value)
        if labels in costs:
            cost.add_metric(list(labels), round(costs[labels], 4))
    yield requests
    yield tokens
    yield cost


def _sync_families(slugs: dict):
    cycles = SummaryMetricFamily("batchboard_sync_cycle_seconds", "Sync cycles run, and their seconds",
                                 labels=["connection"])
    requests = CounterMetricFamily("batchboard_sync_requests", "HTTP requests made by sync cycles",
                                   labels=["connection"])
    errors = CounterMetricFamily("batchboard_sync_errors", "Sync cycles that failed, by kind of error",
                                 labels=["connection", "kind"])
    totals: dict[int, list] = {}
    for connection_id, kind, n, seconds, made in SyncCounter.objects.values_list(
            "connection_id", "error_kind", "cycles", "seconds", "requests"):
        total = totals.setdefault(connection_id, [0, 0.0, 0])
        total[0], total[1], total[2] = total[0] + n, total[1] + seconds, total[2] + made
        if kind:
            errors.add_metric([slugs.get(connection_id, ""), kind], n)
    for connection_id, (n, seconds, made) in totals.items():
        cycles.add_metric([slugs.get(connection_id, "")], count_value=n, sum_value=seconds)
        requests.add_metric([slugs.get(connection_id, "")], made)
    yield cycles
    yield requests
    yield errors


def _deliveries() -> CounterMetricFamily:
    """Alert deliveries (notifications.Delivery) by channel and state, one GROUP BY."""
    from notifications.models import Delivery

    family = CounterMetricFamily("batchboard_alert_deliveries", "Alert deliveries, by channel and result "
                                 "(pending, sent, failed, skipped)", labels=["channel", "result"])
    for channel, state, n in (Delivery.objects.order_by().values("channel__name", "state").annotate(n=Count("pk"))
                              .values_list("channel__name", "state", "n")):
        family.add_metric([channel, state], n)
    return family


_registry = CollectorRegistry(auto_describe=False)
_registry.register(BatchboardCollector())


def exposition() -> tuple[bytes, str]:
    """The body of one scrape and its content type."""
    return generate_latest(_registry), CONTENT_TYPE_LATEST
