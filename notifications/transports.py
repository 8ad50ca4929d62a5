"""Channel kinds, keyed by Channel.kind (as healthchecks' TRANSPORTS): each turns an event into one message and
sends it. A transport raises TransportError with our own words and the status code, never the receiver's body."""

import json
from datetime import UTC, datetime

import requests
from django.core.mail import send_mail
from standardwebhooks import Webhook as StandardWebhook

from .outbound import AddressRefused, post_json

TITLES = {
    "batch.validating": "submitted", "batch.in_progress": "in progress", "batch.finalizing": "finalizing",
    "batch.completed": "completed", "batch.failed": "failed", "batch.expired": "expired",
    "batch.cancelling": "cancelling", "batch.cancelled": "cancelled",
    "batch.high_failure_rate": "completed with many failed requests", "batch.stuck": "looks stuck",
    "batch.expiring_soon": "expires soon", "connection.failing": "is failing", "connection.recovered": "recovered",
    "budget.nearly_spent": "is 80% spent", "budget.spent": "is spent", "channel.test": "test message",
}


class TransportError(Exception):
    def __init__(self, reason: str, *, code: int | None = None, retry: bool = True):
        super().__init__(reason)
        self.reason, self.code, self.retry = reason, code, retry


def title(kind: str, data: dict) -> str:
    what = TITLES.get(kind, kind)
    if kind.startswith("batch."):
        return f"Batch {data.get('name') or data.get('batch_id')} {what}"
    if kind.startswith("connection."):
        return f"Connection {data.get('connection_name')} {what}"
    if kind.startswith("budget."):
        return f"Budget {data.get('budget')} ({data.get('scope')}) {what}"
    return f"Batchboard {what}"


def text(kind: str, data: dict) -> str:
    """The message in a few lines: what happened, the counts, the reason, the link."""
    lines = [title(kind, data)]
    if "batch_id" in data:
        lines.append(f"{data['batch_id']} on {data['connection_name']}: {data['status']}, "
                     f"{data['completed_requests']} of {data['total_requests']} requests completed, "
                     f"{data['failed_requests']} failed")
    if data.get("reason"):
        lines.append(f"Reason: {data['reason']}")
    if data.get("url"):
        lines.append(data["url"])
    return "\n".join(lines)


class Transport:
    def __init__(self, channel):
        self.channel = channel

    def send(self, *, delivery_id: str, kind: str, data: dict, created: datetime) -> int | None:
        """Send one message; returns the HTTP status code (None for email). Raises TransportError."""
        raise NotImplementedError


def _post(url: str, body: str, headers: dict | None = None) -> int:
    try:
        code = post_json(url, body, headers or {})
    except AddressRefused as refused:
        raise TransportError(f"refused: {refused}", retry=False) from None
    except requests.Timeout:
        raise TransportError("timed out") from None
    except requests.RequestException:
        raise TransportError("could not connect") from None
    if 200 <= code < 300:
        return code
    # 408, 429 and server errors may pass; other answers will not change by asking again.
    raise TransportError(f"HTTP {code}", code=code, retry=code in (408, 429) or code >= 500)


class Slack(Transport):
    def send(self, *, delivery_id, kind, data, created):
        return _post(self.channel.target, json.dumps({"text": text(kind, data)}))


class Email(Transport):
    def send(self, *, delivery_id, kind, data, created):
        recipients = [address.strip() for address in self.channel.target.split(",") if address.strip()]
        try:
            send_mail(f"[Batchboard] {title(kind, data)}", text(kind, data), None, recipients)
        except OSError as exc:  # smtplib's errors are OSErrors; their text names only our SMTP server
            raise TransportError(f"email not sent: {type(exc).__name__}") from None
        return None


class Webhook(Transport):
    """A JSON body signed per Standard Webhooks: `webhook-id` is the delivery's id, so a receiver drops a repeat."""

    def send(self, *, delivery_id, kind, data, created):
        body = json.dumps({"type": kind, "timestamp": created.astimezone(UTC).isoformat(), "data": data})
        now = datetime.now(UTC)
        signature = StandardWebhook(self.channel.secret).sign(delivery_id, now, body)
        return _post(self.channel.target, body, {"webhook-id": delivery_id, "webhook-timestamp": str(int(now.timestamp())),
                                                 "webhook-signature": signature})


TRANSPORTS = {"slack": Slack, "email": Email, "webhook": Webhook}
