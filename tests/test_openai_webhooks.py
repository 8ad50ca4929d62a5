"""POST /webhooks/openai/<slug>/: signed batch events queue a refresh of that batch; everything else is refused
or ignored. The end-to-end test runs simulator → receiver (a live server) → broker → worker → database."""

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from batches.models import Batch, ReceivedWebhook
from batches.webhooks import forget_old_webhooks
from tests.conftest import WEBHOOK_SECRET, signed_webhook
from tests.processes import start_worker, stop_worker, wait_for

URL = "/webhooks/openai/sim/"


def _event(kind: str = "batch.completed", batch_id: str = "batch_abc", **extra) -> bytes:
    return json.dumps({"object": "event", "id": "evt_1", "type": kind, "created_at": 1750000000,
                       "data": {"id": batch_id}, **extra}).encode()


def _post(client, body: bytes, headers: dict, url: str = URL, **extra):
    return client.post(url, body, content_type="application/json", **headers, **extra)


def test_a_signed_batch_event_queues_a_refresh_of_that_batch(client, webhook_connection, task_queue):
    body = _event("batch.completed", "batch_abc")
    response = _post(client, body, signed_webhook(body))
    assert response.status_code == 200
    assert task_queue() == [("batches.tasks.refresh_batch", [webhook_connection.pk, "batch_abc"])]


@pytest.mark.parametrize("kind", ["batch.failed", "batch.expired", "batch.cancelled"])
def test_every_terminal_batch_event_queues_a_refresh(client, webhook_connection, task_queue, kind):
    body = _event(kind, "batch_xyz")
    assert _post(client, body, signed_webhook(body)).status_code == 200
    assert task_queue() == [("batches.tasks.refresh_batch", [webhook_connection.pk, "batch_xyz"])]


def test_other_event_types_get_200_and_are_ignored(client, webhook_connection, task_queue):
    body = _event("response.completed", "resp_123")
    response = _post(client, body, signed_webhook(body))
    assert response.status_code == 200 and response.content == b"ignored\n"
    assert task_queue() == []


def test_a_bad_signature_gets_400_and_queues_nothing(client, webhook_connection, task_queue):
    body = _event()
    forged = signed_webhook(body, secret="whsec_" + "B" * 43 + "=")
    assert _post(client, body, forged).status_code == 400
    tampered = signed_webhook(body)
    assert _post(client, _event(batch_id="batch_other"), tampered).status_code == 400
    assert _post(client, body, {}).status_code == 400
    assert _post(client, body, {**signed_webhook(body), "HTTP_WEBHOOK_SIGNATURE": "v1"}).status_code == 400
    assert task_queue() == [] and not ReceivedWebhook.objects.exists()


def test_an_unknown_slug_gets_the_same_400_as_a_bad_signature(client, webhook_connection):
    body = _event()
    unknown = _post(client, body, signed_webhook(body), url="/webhooks/openai/nobody/")
    bad = _post(client, body, signed_webhook(body, secret="whsec_" + "B" * 43 + "="))
    assert unknown.status_code == bad.status_code == 400
    assert unknown.content == bad.content and unknown.headers == bad.headers


def test_a_connection_without_a_secret_or_disabled_refuses_webhooks(client, webhook_connection):
    body = _event()
    webhook_connection.enabled = False
    webhook_connection.save()
    assert _post(client, body, signed_webhook(body)).status_code == 400
    webhook_connection.enabled = True
    webhook_connection.set_webhook_secret("")
    webhook_connection.save()
    assert _post(client, body, signed_webhook(body)).status_code == 400


def test_a_timestamp_more_than_five_minutes_away_is_refused(client, webhook_connection, task_queue):
    body = _event()
    now = datetime.now(tz=timezone.utc)
    old = signed_webhook(body, at=now - timedelta(minutes=5, seconds=10))
    ahead = signed_webhook(body, at=now + timedelta(minutes=5, seconds=10))
    assert _post(client, body, old).status_code == 400
    assert _post(client, body, ahead).status_code == 400
    assert _post(client, body, signed_webhook(body, at=now - timedelta(minutes=4))).status_code == 200
    assert len(task_queue()) == 1


def test_a_replayed_message_is_acknowledged_and_refreshes_once(client, webhook_connection, task_queue):
    body = _event()
    assert _post(client, body, signed_webhook(body, webhook_id="msg_1")).status_code == 200
    again = _post(client, body, signed_webhook(body, webhook_id="msg_1"))  # a retry: the same id, a new signature
    assert again.status_code == 200 and again.content == b"duplicate\n"
    assert _post(client, body, signed_webhook(body, webhook_id="msg_2")).status_code == 200
    assert [args for _, args in task_queue()] == [[webhook_connection.pk, "batch_abc"]] * 2


def test_message_ids_are_forgotten_after_the_replay_window(client, webhook_connection, settings):
    body = _event()
    _post(client, body, signed_webhook(body, webhook_id="msg_old"))
    assert forget_old_webhooks() == 0
    later = datetime.now(tz=timezone.utc) + timedelta(hours=settings.WEBHOOK_REPLAY_HOURS, minutes=1)
    assert forget_old_webhooks(now=later) == 1


def test_refusals_are_rate_limited_per_client_address(client, webhook_connection, settings, task_queue):
    settings.WEBHOOK_FAILURE_LIMIT = 3
    body = _event()
    for _ in range(3):
        assert _post(client, body, {}, REMOTE_ADDR="203.0.113.9").status_code == 400
    limited = _post(client, body, signed_webhook(body), REMOTE_ADDR="203.0.113.9")
    assert limited.status_code == 429 and limited["Retry-After"] == str(settings.WEBHOOK_FAILURE_WINDOW)
    assert _post(client, body, signed_webhook(body), REMOTE_ADDR="203.0.113.10").status_code == 200
    assert len(task_queue()) == 1


def test_the_limit_counts_the_real_client_behind_trusted_proxies(client, webhook_connection, settings):
    settings.WEBHOOK_FAILURE_LIMIT, settings.TRUSTED_PROXY_COUNT = 2, 1
    body = _event()
    for forged in ("1.1.1.1", "2.2.2.2"):  # the client writes what it likes left of the proxy's entry
        _post(client, body, {}, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"{forged}, 198.51.100.7")
    response = _post(client, body, {}, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="3.3.3.3, 198.51.100.7")
    assert response.status_code == 429


def test_a_refusal_is_logged_without_the_body(client, webhook_connection, caplog):
    body = _event(note="private-words-in-the-body")
    with caplog.at_level(logging.WARNING, logger="batches.views"):
        assert _post(client, body, {}).status_code == 400
    assert "refused" in caplog.text and "private-words" not in caplog.text


def test_a_body_over_the_cap_is_refused_unread(client, webhook_connection, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 1024
    body = _event(padding="x" * 2000)
    assert _post(client, body, signed_webhook(body)).status_code == 413


def test_only_post_is_answered(client, webhook_connection):
    assert client.get(URL).status_code == 405


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_batch_finishing_in_the_simulator_reaches_the_database_through_its_webhook(
        live_server, simulator, webhook_connection):
    from dashboard.celery import app

    from batches.sync import refresh_batch

    app.control.purge()
    payload = simulator.inject_batch("in_progress", lines=50)
    refresh_batch(connection=webhook_connection, batch_id=payload["id"])
    simulator.send_webhooks(f"{live_server.url}{URL}", WEBHOOK_SECRET)
    worker = start_worker()
    try:
        simulator.advance(7 * 3600)  # it finishes at the API; nothing syncs, only the webhook tells
        finished = wait_for(lambda: Batch.objects.get(batch_id=payload["id"]).status == "completed", seconds=30)
    finally:
        output = stop_worker(worker)
    assert finished, output[-3000:]
    sent = simulator.webhooks_sent()
    assert [(s["type"], s["batch_id"], s["status_code"]) for s in sent] == [
        ("batch.completed", payload["id"], 200)]
    assert "Task batches.tasks.refresh_batch[" in output and "Task batches.tasks.sync_connection[" not in output
