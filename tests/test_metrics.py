"""/metrics: refused unless METRICS_TOKEN or METRICS_ALLOWED_IPS lets the scraper in; series from aggregates, one
per connection, status, model or error kind (never per batch); sync counters shared across processes."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batches.models import Batch, BatchCount
from batches.sync import sync_connection
from tests.processes import start_worker, stop_worker, wait_for

TOKEN = "metrics-token-for-tests"
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


def _samples(response) -> dict:
    """{(name, frozenset of labels): value} of a scrape."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


def _value(samples: dict, name: str, **labels):
    return samples.get((name, frozenset(labels.items())))


def test_it_is_off_when_neither_a_token_nor_addresses_are_set(client, login, db):
    login("admin")
    assert client.get("/metrics", **BEARER).status_code == 404


def test_it_is_refused_without_the_token(client, login, settings, db):
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=TOKEN).status_code == 403  # no scheme
    login("admin")  # a session is no way in
    assert client.get("/metrics").status_code == 403


def test_it_answers_the_token_in_prometheus_text_format(client, settings, db):
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics", **BEARER)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_it_answers_an_allowed_address_and_network_only(client, settings, db):
    settings.METRICS_ALLOWED_IPS = ["192.0.2.10", "10.8.0.0/16"]
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.10").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.8.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.11").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.9.0.1", HTTP_X_FORWARDED_FOR="10.8.3.4").status_code == 403


def test_batches_requests_tokens_and_cost_by_connection_status_and_model(client, settings, simulator, connection):
    settings.METRICS_TOKEN = TOKEN
    for status in ("completed", "completed", "failed", "in_progress"):
        simulator.inject_batch(status, lines=40, model="gpt-4o-mini", endpoint="/v1/chat/completions")
    sync_connection(connection_id=connection.pk)
    samples = _samples(client.get("/metrics", **BEARER))

    for row in BatchCount.objects.filter(n__gt=0):
        assert _value(samples, "batchboard_batches", connection="sim", status=row.status) == row.n
    batches = Batch.objects.filter(model="gpt-4o-mini")
    completed = sum(b.completed_requests for b in batches)
    assert _value(samples, "batchboard_requests_total", connection="sim", model="gpt-4o-mini",
                  outcome="completed") == completed > 0
    assert _value(samples, "batchboard_tokens_total", connection="sim", model="gpt-4o-mini",
                  kind="output") == sum(b.output_tokens or 0 for b in batches) > 0
    assert _value(samples, "batchboard_estimated_cost_usd", connection="sim", model="gpt-4o-mini") > 0
    assert 0 <= _value(samples, "batchboard_seconds_since_last_sync", connection="sim") < 60
    ids = set(batches.values_list("batch_id", flat=True))
    assert not any(value in ids for _, labels in samples for _, value in labels)  # never a label per batch


def test_sync_cycles_requests_and_errors_by_kind_are_counted(client, settings, simulator, connection):
    settings.METRICS_TOKEN = TOKEN
    sync_connection(connection_id=connection.pk)
    simulator.set_faults(next=10, kinds="500")
    connection.refresh_from_db()
    connection.next_sync_at = None
    connection.save()
    assert sync_connection(connection_id=connection.pk).error
    samples = _samples(client.get("/metrics", **BEARER))
    assert _value(samples, "batchboard_sync_cycle_seconds_count", connection="sim") == 2
    assert _value(samples, "batchboard_sync_cycle_seconds_sum", connection="sim") > 0
    assert _value(samples, "batchboard_sync_requests_total", connection="sim") >= 2
    assert _value(samples, "batchboard_sync_errors_total", connection="sim", kind="server") == 1
    assert _value(samples, "batchboard_sync_consecutive_failures", connection="sim") == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_sync_run_by_a_worker_shows_in_the_metrics_the_web_serves(client, settings, simulator, connection):
    from dashboard.celery import app

    from batches.tasks import sync_connection as sync_task

    settings.METRICS_TOKEN = TOKEN
    app.control.purge()
    simulator.simulator.populate(historical=5, active=1)

    def cycles():
        return _value(_samples(client.get("/metrics", **BEARER)), "batchboard_sync_cycle_seconds_count",
                      connection="sim")

    assert cycles() is None
    worker = start_worker()
    try:
        sync_task.delay(connection.pk)
        counted = wait_for(lambda: cycles() == 1, seconds=30)
    finally:
        output = stop_worker(worker)
    assert counted, output[-3000:]
    samples = _samples(client.get("/metrics", **BEARER))
    assert _value(samples, "batchboard_sync_requests_total", connection="sim") >= 1
    assert sum(v for (name, _), v in samples.items() if name == "batchboard_batches") == 6


def test_alert_deliveries_are_counted_by_channel_and_result(client, settings, connection):
    from notifications.models import Channel, Delivery, Event

    settings.METRICS_TOKEN = TOKEN
    channel = Channel(name="Ops mail", kind="email", events=["batch.failed"])
    channel.set_target("ops@example.com")
    channel.save()
    for n, state in enumerate(["sent", "sent", "failed"]):
        event = Event.objects.create(kind="batch.failed", connection=connection, dedupe_key=f"metrics-{n}")
        Delivery.objects.create(event=event, channel=channel, state=state)
    samples = _samples(client.get("/metrics", **BEARER))
    assert _value(samples, "batchboard_alert_deliveries_total", channel="Ops mail", result="sent") == 2
    assert _value(samples, "batchboard_alert_deliveries_total", channel="Ops mail", result="failed") == 1


def test_cost_tokens_and_requests_come_from_the_rollup_and_equal_the_usage_page(client, login, settings, connection,
                                                                                store_usage, set_prices):
    """Each day at its own price, as the usage page prices it; a batch's tokens counted once however many
    metadata keys the rollup also counts it by."""
    from datetime import date

    from usage.models import DailyUsage

    settings.METRICS_TOKEN = TOKEN
    set_prices(("gpt-4o-mini", date(2024, 1, 1), 2, 1, 8), ("gpt-4o-mini", date(2026, 3, 10), 4, 2, 16))
    store_usage(connection, "batch_before", date(2026, 3, 5), input=1_000_000, output=1000, team="growth")
    store_usage(connection, "batch_after", date(2026, 3, 12), input=1_000_000, output=1000, failed=7, project="x")
    samples = _samples(client.get("/metrics", **BEARER))
    labels = {"connection": "sim", "model": "gpt-4o-mini"}
    assert _value(samples, "batchboard_estimated_cost_usd", **labels) == pytest.approx(1.004 + 2.008)
    assert _value(samples, "batchboard_tokens_total", kind="input", **labels) == 2_000_000
    assert _value(samples, "batchboard_requests_total", outcome="failed", **labels) == 7
    login("viewer")
    page = client.get("/usage/?period=custom&start=2026-03-01&end=2026-03-31").content.decode()
    assert "<dt>Estimated cost</dt><dd>$3.01</dd>" in page and "<dt>Input tokens</dt><dd>2,000,000</dd>" in page
    DailyUsage.objects.update(input_tokens=0)  # the series read the rollup, not the batches
    samples = _samples(client.get("/metrics", **BEARER))
    assert _value(samples, "batchboard_tokens_total", kind="input", **labels) == 0
