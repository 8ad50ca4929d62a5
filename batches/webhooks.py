"""OpenAI webhooks in: verify a message, drop one already received, and queue a refresh of the batch it names.

The API signs each message with the project's endpoint secret by the Standard Webhooks scheme (`webhook-id`,
`webhook-timestamp`, `webhook-signature`; see https://platform.openai.com/docs/guides/webhooks). The body names
the batch only (`data.id`), so every event becomes a refresh of that batch through the normal store.
"""

import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from .models import Connection, KeyUnreadable, ReceivedWebhook

log = logging.getLogger(__name__)

BATCH_EVENTS = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")
# Checked against when the slug names no connection, so that a refusal costs the same either way.
_NO_SECRET = Webhook("whsec_" + "A" * 43 + "=")


@dataclass
class Outcome:
    accepted: bool  # signed by the connection's secret, in time
    action: str  # queued, duplicate, ignored, or why it was refused
    batch_id: str = ""


def receive(*, slug: str, body: bytes, headers) -> Outcome:
    """Check one message for the connection `slug` and act on it: a batch event seen for the first time queues a
    refresh of that batch. The signature is checked on the raw bytes before the body is parsed. When the queue
    cannot take the refresh, the message is forgotten again and the error raised: the API delivers it again."""
    connection = Connection.objects.filter(slug=slug, enabled=True).exclude(webhook_secret_encrypted="").first()
    try:
        secret = connection.webhook_secret if connection else ""
    except KeyUnreadable:
        secret = ""
    problem = _verification_problem(Webhook(secret) if secret else _NO_SECRET, body, headers)
    if connection is None or not secret:
        return Outcome(False, "no connection with this slug takes webhooks")
    if problem:
        return Outcome(False, problem)
    if not _first_delivery(connection, headers["webhook-id"]):
        return Outcome(True, "duplicate")
    try:
        event = json.loads(body)
        kind, batch_id = event.get("type"), event.get("data", {}).get("id")
    except (ValueError, AttributeError):
        return Outcome(True, "ignored")
    if kind not in BATCH_EVENTS or not isinstance(batch_id, str) or not 0 < len(batch_id) <= 255:
        return Outcome(True, "ignored")
    try:
        _queue_refresh(connection, batch_id)
    except Exception:
        ReceivedWebhook.objects.filter(connection=connection, webhook_id=headers["webhook-id"]).delete()
        raise
    return Outcome(True, "queued", batch_id)


def _verification_problem(webhook: Webhook, body: bytes, headers) -> str:
    wanted = {name: headers.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    if len(wanted["webhook-id"]) > 255:
        return "webhook-id too long"
    try:
        webhook.verify(body, wanted, json_parse=False)
    except WebhookVerificationError as exc:
        return str(exc)
    except ValueError:  # a malformed signature entry, bad base64, or a body that is not UTF-8
        return "malformed signature or body"
    return ""


def _first_delivery(connection: Connection, webhook_id: str) -> bool:
    try:
        with transaction.atomic():
            ReceivedWebhook.objects.create(connection=connection, webhook_id=webhook_id)
    except IntegrityError:
        return False
    return True


def _queue_refresh(connection: Connection, batch_id: str) -> None:
    from .tasks import refresh_batch  # tasks import this module's neighbours; imported late to keep them apart

    refresh_batch.delay(connection.pk, batch_id)


def forget_old_webhooks(now=None) -> int:
    """Delete message ids older than WEBHOOK_REPLAY_HOURS (the API retries for 72 hours at most); run hourly."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.WEBHOOK_REPLAY_HOURS)
    deleted, _ = ReceivedWebhook.objects.filter(received_at__lt=cutoff).delete()
    return deleted


# ----- refusals per client address (the shared cache: every web process counts in one place) ------------------
def _failure_key(ip: str) -> str:
    return f"webhook-failures:{ip}"


def too_many_failures(ip: str) -> bool:
    return (cache.get(_failure_key(ip)) or 0) >= settings.WEBHOOK_FAILURE_LIMIT


def count_failure(ip: str) -> None:
    """One more refusal from `ip`, in a window of WEBHOOK_FAILURE_WINDOW seconds from its first."""
    key = _failure_key(ip)
    cache.add(key, 0, timeout=settings.WEBHOOK_FAILURE_WINDOW)
    try:
        cache.incr(key)
    except ValueError:  # the window ended between add and incr
        cache.set(key, 1, timeout=settings.WEBHOOK_FAILURE_WINDOW)
