"""Alerts as an outbox: an Event row per status transition or derived event, a Delivery row per (event, channel),
and the Channels they go to. As healthchecks' Flip and Notification: events are fanned out one at a time with a
`processed` marker, deliveries are sent at least once."""

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import models
from django.utils import timezone

from batches.models import KNOWN_STATUSES, TERMINAL_STATUSES, Batch, Connection, decrypt_secret, encrypt_secret

# Event kinds: one per status a batch enters, then the derived ones.
TRANSITION_KINDS = [f"batch.{status}" for status in KNOWN_STATUSES]
DERIVED_KINDS = ["batch.high_failure_rate", "batch.stuck", "batch.expiring_soon", "connection.failing",
                 "connection.recovered", "budget.nearly_spent", "budget.spent"]
EVENT_KINDS = TRANSITION_KINDS + DERIVED_KINDS
TEST_KIND = "channel.test"
# Never dropped by a channel's minimum interval: how a batch ended is the message people wait for.
ALWAYS_SENT = {f"batch.{status}" for status in TERMINAL_STATUSES} | {"batch.high_failure_rate", TEST_KIND}
# A new channel's events: what needs someone's attention.
DEFAULT_KINDS = ["batch.failed", "batch.expired", "batch.high_failure_rate", "batch.stuck", "batch.expiring_soon",
                 "connection.failing", "connection.recovered", "budget.nearly_spent",
                 "budget.spent"]


class Event(models.Model):
    """Something to tell people about, once (`dedupe_key`), with what the messages say frozen in `data`."""

    kind = models.CharField(max_length=40)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    # One event per transition, per stuck or expiring episode, per failing episode: a second try is a no-op.
    dedupe_key = models.CharField(max_length=200, unique=True)
    created = models.DateTimeField(default=timezone.now)
    data = models.JSONField(default=dict)
    # Set once the event has its delivery rows (healthchecks' Flip.processed).
    processed = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # fan_out_one_event: the oldest event not yet fanned out
            models.Index(fields=["created"], condition=models.Q(processed__isnull=True), name="event_unprocessed"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.dedupe_key}"


class Channel(models.Model):
    """Where alerts go (Slack, email or a signed webhook), and which of them."""

    SLACK, EMAIL, WEBHOOK = "slack", "email", "webhook"
    KINDS = [(SLACK, "Slack incoming webhook"), (EMAIL, "Email"), (WEBHOOK, "Webhook (Standard Webhooks, signed)")]

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=KINDS)
    # The webhook URL (a secret for Slack) or the email addresses, and a webhook's signing secret: encrypted
    # with BATCHBOARD_ENCRYPTION_KEYS, as API keys are.
    target_encrypted = models.TextField(editable=False)
    secret_encrypted = models.TextField(blank=True, editable=False)
    events = models.JSONField(default=list, blank=True)
    connections = models.ManyToManyField(Connection, blank=True, related_name="+",
                                         help_text="None chosen: every connection")
    metadata_match = models.CharField(max_length=500, blank=True,
                                      help_text="key=value pairs, comma-separated; every one must match")
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    quiet_time_zone = models.CharField(max_length=64, default="UTC")
    min_interval_seconds = models.PositiveIntegerField(default=0)
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def set_target(self, plain: str) -> None:
        self.target_encrypted = encrypt_secret(plain.strip())

    @property
    def target(self) -> str:
        return decrypt_secret(self.target_encrypted)

    def set_secret(self, plain: str) -> None:
        self.secret_encrypted = encrypt_secret(plain)

    @property
    def secret(self) -> str:
        return decrypt_secret(self.secret_encrypted) if self.secret_encrypted else ""

    def metadata_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for part in self.metadata_match.split(","):
            key, sep, value = part.partition("=")
            if sep and key.strip():
                pairs.append((key.strip(), value.strip()))
        return pairs

    def metadata_matches(self, metadata) -> bool:
        metadata = metadata if isinstance(metadata, dict) else {}
        return all(str(metadata.get(key, "")) == value for key, value in self.metadata_pairs())

    def quiet_until(self, now: datetime) -> datetime | None:
        """When the quiet hours around `now` end, or None outside them (or without any)."""
        if self.quiet_start is None or self.quiet_end is None or self.quiet_start == self.quiet_end:
            return None
        local = now.astimezone(ZoneInfo(self.quiet_time_zone))
        clock = local.time().replace(tzinfo=None)
        start, end = self.quiet_start, self.quiet_end
        inside = start <= clock < end if start < end else (clock >= start or clock < end)
        if not inside:
            return None
        day = local.date() if clock < end else local.date() + timedelta(days=1)
        return datetime.combine(day, end, tzinfo=local.tzinfo).astimezone(UTC)


class Delivery(models.Model):
    """One event to one channel. Its id is the message's `webhook-id`, so a receiver drops a repeated send."""

    PENDING, SENT, FAILED, SKIPPED = "pending", "sent", "failed", "skipped"
    STATES = [(PENDING, "pending"), (SENT, "sent"), (FAILED, "failed"), (SKIPPED, "skipped")]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    created = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=10, choices=STATES, default=PENDING)
    # When it is due; a worker claims it by moving this forward by ALERT_LEASE_SECONDS (the claim is the
    # new value), so a worker killed mid-send leaves it due again once the lease ends.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # Our own words and the HTTP status; never the receiver's body.
    result = models.CharField(max_length=200, blank=True)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "channel"], name="delivery_unique_per_event_and_channel"),
        ]
        indexes = [
            # claim_due_deliveries: pending deliveries whose time has come
            models.Index(fields=["next_attempt_at"], condition=models.Q(state="pending"), name="delivery_due"),
            # the channel page's delivery log, newest first
            models.Index(fields=["channel", "-created"], name="delivery_channel_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.event.kind} → {self.channel} ({self.state})"
