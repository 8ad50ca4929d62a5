"""Sending (notifications/outbox.py, transports.py): Slack and signed webhooks to a local receiver, email to a
real SMTP server, at least once with retries, and a worker killed before or after a send."""

import json
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from tests import payloads
from tests.processes import ROOT, subprocess_env, wait_for


def _failed_batch(connection):
    from batches.store import store_batch

    fields = {"id": "batch_nightly", "metadata": {"description": "nightly eval", "team": "growth"},
              "in_progress_at": payloads.CREATED + 5}
    store_batch(connection, payloads.batch(status="in_progress", **fields))
    batch, _ = store_batch(connection, {**payloads.VALIDATION_FAILED, **fields,
                                        "request_counts": {"total": 40, "completed": 30, "failed": 10}})
    return batch


def _verified(channel, request) -> dict:
    """The body, after the receiver's check of the Standard Webhooks signature (raises when it is wrong)."""
    return Webhook(channel.secret).verify(request["body"], {k: request["headers"][k] for k in (
        "webhook-id", "webhook-timestamp", "webhook-signature")})


def test_a_webhook_delivery_is_signed_and_carries_what_happened(imported, make_channel, receiver, settings):
    from notifications.models import Delivery
    from notifications.outbox import run_outbox

    settings.BATCHBOARD_BASE_URL = "https://batchboard.example.com/"
    channel = make_channel("webhook", receiver.url, events=["batch.failed"])
    _failed_batch(imported)
    run_outbox()
    [request] = receiver.requests
    body = _verified(channel, request)
    delivery = Delivery.objects.get()
    assert request["headers"]["webhook-id"] == str(delivery.pk)
    assert body["type"] == "batch.failed"
    assert {
        "batch_id": "batch_nightly", "name": "nightly eval", "status": "failed", "connection": "sim",
        "total_requests": 40, "completed_requests": 30, "failed_requests": 10,
        "reason": "invalid_json_line and 1 more",
        "url": "https://batchboard.example.com/batches/sim/batch_nightly/"}.items() <= body["data"].items()
    assert (delivery.state, delivery.response_code, delivery.attempts) == ("sent", 200, 1)


def test_a_slack_delivery_is_a_json_post_of_text(imported, make_channel, receiver):
    from notifications.outbox import run_outbox

    make_channel("slack", receiver.url, events=["batch.failed"])
    _failed_batch(imported)
    run_outbox()
    text = json.loads(receiver.requests[0]["body"])["text"]
    assert text.startswith("Batch nightly eval failed\n")
    assert "30 of 40 requests completed, 10 failed" in text and "invalid_json_line" in text
    assert "http://127.0.0.1:8000/batches/sim/batch_nightly/" in text


def test_no_secret_is_in_any_message(imported, make_channel, receiver, smtp_server):
    from tests.conftest import SIM_KEY
    from notifications.outbox import run_outbox

    webhook = make_channel("webhook", receiver.url, events=["batch.failed"])
    make_channel("slack", receiver.url, events=["batch.failed"])
    make_channel("email", "ops@example.com", events=["batch.failed"])
    _failed_batch(imported)
    run_outbox()
    sent = [r["body"] + json.dumps(r["headers"]) for r in receiver.requests] + [m.as_string() for m in smtp_server]
    assert len(sent) == 3
    for text in sent:
        assert SIM_KEY not in text and webhook.secret not in text and imported.base_url not in text


def test_an_email_delivery_goes_through_django_to_a_real_smtp_server(imported, make_channel, smtp_server, settings):
    from notifications.models import Delivery
    from notifications.outbox import run_outbox

    settings.DEFAULT_FROM_EMAIL = "alerts@batchboard.example.com"
    make_channel("email", "ops@example.com, ml@example.com", events=["batch.failed"])
    _failed_batch(imported)
    run_outbox()
    [message] = smtp_server
    assert message["Subject"] == "[Batchboard] Batch nightly eval failed"
    assert message["From"] == "alerts@batchboard.example.com" and message["To"] == "ops@example.com, ml@example.com"
    assert "10 failed" in message.get_payload()
    assert Delivery.objects.get().state == "sent"


def test_a_failed_send_is_retried_with_backoff_and_the_log_keeps_only_the_status_code(imported, make_channel,
                                                                                       receiver, settings):
    from notifications.models import Delivery
    from notifications.outbox import run_outbox

    settings.ALERT_RETRY_SECONDS = 60
    channel = make_channel("webhook", receiver.url, events=["batch.failed"])
    _failed_batch(imported)
    receiver.status, receiver.body = 503, b"internal detail: db password hunter2"
    run_outbox()
    delivery = Delivery.objects.get()
    assert (delivery.state, delivery.response_code, delivery.attempts) == ("pending", 503, 1)
    assert "hunter2" not in delivery.result
    assert timedelta(seconds=55) < delivery.next_attempt_at - timezone.now() <= timedelta(seconds=60)
    run_outbox()
    assert len(receiver.requests) == 1  # not due yet
    receiver.status = 200
    run_outbox(now=timezone.now() + timedelta(seconds=61))
    delivery.refresh_from_db()
    assert (delivery.state, delivery.response_code, delivery.attempts) == ("sent", 200, 2)
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [str(delivery.pk)] * 2
    _verified(channel, receiver.requests[1])


def test_a_refusal_is_not_retried(imported, make_channel, receiver):
    from notifications.models import Delivery
    from notifications.outbox import run_outbox

    make_channel("slack", receiver.url, events=["batch.failed"])
    _failed_batch(imported)
    receiver.status = 410
    run_outbox()
    run_outbox(now=timezone.now() + timedelta(hours=1))
    assert len(receiver.requests) == 1
    assert Delivery.objects.get().state == "failed"


def test_attempts_are_bounded(imported, make_channel, receiver, settings):
    from notifications.models import Delivery
    from notifications.outbox import run_outbox

    settings.ALERT_RETRY_SECONDS, settings.ALERT_MAX_ATTEMPTS = 0, 3
    make_channel("webhook", receiver.url, events=["batch.failed"])
    _failed_batch(imported)
    receiver.status = 500
    for _ in range(5):
        run_outbox()
    assert len(receiver.requests) == 3
    down = Delivery.objects.get()
    assert (down.state, down.attempts, down.result) == ("failed", 3, "HTTP 500")


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_send_delivers_after_restart_and_repeats_with_the_same_webhook_id(
        imported, make_channel, receiver):
    """Two deliveries claimed by one `send_alerts` run: it is killed while the first send waits for its answer,
    the second not yet sent. After the claims lapse the next run sends both; the first again, same id."""
    from notifications.models import Delivery, Event
    from notifications.outbox import fan_out_one_event, run_outbox

    first = make_channel("webhook", receiver.url, events=["batch.failed"], name="first")
    second = make_channel("webhook", receiver.url, events=["batch.failed"], name="second")
    _failed_batch(imported)
    while fan_out_one_event():
        pass
    assert Delivery.objects.count() == 2 and not Event.objects.filter(processed__isnull=True).exists()
    receiver.hold = True
    worker = subprocess.Popen([sys.executable, "manage.py", "send_alerts"], cwd=ROOT, env=subprocess_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert receiver.arrived.wait(30), "the worker sent nothing"
        worker.send_signal(signal.SIGKILL)  # after the first send, before it could record it
        worker.wait(10)
    finally:
        receiver.release()
    assert wait_for(lambda: len(receiver.requests) == 1, 5)
    assert set(Delivery.objects.values_list("state", "attempts")) == {("pending", 1)}  # both were claimed

    run_outbox()  # the claims still hold: nothing is sent twice meanwhile
    assert len(receiver.requests) == 1
    run_outbox(now=timezone.now() + timedelta(minutes=10))  # the restarted worker, once the claims lapsed
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    deliveries = {str(d.pk): d for d in Delivery.objects.all()}
    assert len(ids) == 3 and set(ids) == set(deliveries) and ids[1:].count(ids[0]) == 1
    assert {d.state for d in deliveries.values()} == {"sent"}
    for request in receiver.requests:
        channel = first if deliveries[request["headers"]["webhook-id"]].channel_id == first.pk else second
        _verified(channel, request)


def test_a_claimed_delivery_whose_worker_died_before_sending_is_sent_once_its_claim_lapses(
        imported, make_channel, receiver):
    from notifications.outbox import claim_due_deliveries, fan_out_one_event, run_outbox

    make_channel("slack", receiver.url, events=["batch.failed"])
    _failed_batch(imported)
    while fan_out_one_event():
        pass
    assert len(claim_due_deliveries()) == 1  # claimed, then the worker died: nothing sent
    run_outbox()
    assert receiver.requests == []
    run_outbox(now=timezone.now() + timedelta(minutes=10))
    assert len(receiver.requests) == 1


def test_the_beat_task_drains_the_outbox(imported, make_channel, receiver):
    from notifications.tasks import derive_events, send_alerts

    make_channel("slack", receiver.url, events=["batch.failed"])
    _failed_batch(imported)
    derive_events.apply()
    send_alerts.apply()
    assert len(receiver.requests) == 1
