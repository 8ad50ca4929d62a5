"""Draining the outbox, as healthchecks' sendalerts: fan out one event at a time into a delivery per matching
channel (marking it processed in the same transaction), then send the deliveries due.

At least once: a delivery is claimed for ALERT_LEASE_SECONDS before it is sent and marked sent only after. A
worker killed before the send leaves it due again when the claim ends; one killed after the send but before
recording it sends it again, with the same `webhook-id` (the delivery's id), so a receiver drops the repeat.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from batches.models import KeyUnreadable

from .models import ALWAYS_SENT, TEST_KIND, Channel, Delivery, Event
from .transports import TRANSPORTS, TransportError

log = logging.getLogger(__name__)


def run_outbox(*, now: datetime | None = None, limit: int = 200) -> dict:
    """One pass: fan out waiting events, then send the deliveries due. What the beat task and the
    `send_alerts` command run. Returns counts."""
    fanned = 0
    while fanned < limit and fan_out_one_event(now=now):
        fanned += 1
    results = [send_delivery(pk, claim) for pk, claim in claim_due_deliveries(now=now, limit=limit)]
    return {"events": fanned, "sent": results.count(Delivery.SENT), "attempted": len(results)}


def fan_out_one_event(*, now: datetime | None = None) -> bool:
    """Give the oldest unprocessed event its delivery rows, one per matching channel, and mark it processed,
    in one transaction. Returns False when there was none."""
    now = now or timezone.now()
    with transaction.atomic():
        event = (Event.objects.filter(processed__isnull=True).order_by("created", "pk")  # event_unprocessed
                 .select_for_update(skip_locked=True).first())
        if event is None:
            return False
        rows = [_delivery(event, channel, now) for channel in matching_channels(event)]
        Delivery.objects.bulk_create(rows, ignore_conflicts=True)  # (event, channel) is unique
        Event.objects.filter(pk=event.pk).update(processed=now)
    return True


def matching_channels(event: Event) -> list[Channel]:
    """The enabled channels whose rules take this event: its kind, its connection (none chosen: every one) and,
    for a batch's event or a budget's for a metadata value, the metadata match."""
    channels = Channel.objects.filter(enabled=True).prefetch_related("connections")
    chosen = []
    for channel in channels:
        if event.kind not in channel.events:
            continue
        connection_ids = {c.pk for c in channel.connections.all()}
        if connection_ids and event.connection_id not in connection_ids:
            continue
        metadata = event.batch.metadata if event.batch is not None else event.data.get("metadata")
        if metadata is not None and not channel.metadata_matches(metadata):
            continue
        chosen.append(channel)
    return chosen


def _delivery(event: Event, channel: Channel, now: datetime) -> Delivery:
    delivery = Delivery(event=event, channel=channel, created=now, next_attempt_at=now)
    if event.batch_id and event.kind not in ALWAYS_SENT and channel.min_interval_seconds and (
            Delivery.objects.filter(channel=channel, event__batch_id=event.batch_id, state__in=(
                Delivery.PENDING, Delivery.SENT), created__gte=now - timedelta(seconds=channel.min_interval_seconds))
            .exists()):
        delivery.state, delivery.result = Delivery.SKIPPED, "skipped: within the channel's minimum interval"
    elif until := channel.quiet_until(now):
        delivery.next_attempt_at, delivery.result = until, "held for quiet hours"
    return delivery


def claim_due_deliveries(*, now: datetime | None = None, limit: int = 50) -> list[tuple[str, datetime]]:
    """Claim the deliveries due, oldest first, for ALERT_LEASE_SECONDS each. Returns (id, claim) pairs; the claim
    is the delivery's new next_attempt_at, which only its holder may record a result against."""
    now = now or timezone.now()
    until = now + timedelta(seconds=settings.ALERT_LEASE_SECONDS)
    due = (Delivery.objects.filter(state=Delivery.PENDING, next_attempt_at__lte=now)  # delivery_due
           .order_by("next_attempt_at").values_list("pk", "next_attempt_at", "attempts")[:limit])
    claimed = []
    for pk, held, attempts in due:
        if attempts >= settings.ALERT_MAX_ATTEMPTS:  # its last attempts never came back (a worker died each time)
            Delivery.objects.filter(pk=pk, state=Delivery.PENDING, next_attempt_at=held).update(
                state=Delivery.FAILED, result="gave up: no attempt finished")
            continue
        if Delivery.objects.filter(pk=pk, state=Delivery.PENDING, next_attempt_at=held).update(
                next_attempt_at=until, attempts=F("attempts") + 1, last_attempt_at=now):
            claimed.append((pk, until))
    return claimed


def send_delivery(pk, claim: datetime) -> str:
    """Send one claimed delivery and record what happened (if the claim is still ours). Returns the state."""
    delivery = Delivery.objects.select_related("event", "channel").get(pk=pk)
    channel, event = delivery.channel, delivery.event
    state, result, code, retry_at = Delivery.SENT, "sent", None, None
    if not channel.enabled and event.kind != TEST_KIND:
        state, result = Delivery.SKIPPED, "skipped: the channel is disabled"
    else:
        try:
            code = TRANSPORTS[channel.kind](channel).send(delivery_id=str(delivery.pk), kind=event.kind,
                                                          data=event.data, created=event.created)
        except KeyUnreadable:
            state, result = Delivery.FAILED, "the channel's target is unreadable: enter it again"
        except TransportError as error:
            code = error.code
            if error.retry and delivery.attempts < settings.ALERT_MAX_ATTEMPTS:
                state, result = Delivery.PENDING, f"{error.reason}; will try again"
                backoff = settings.ALERT_RETRY_SECONDS * 2 ** (delivery.attempts - 1)
                retry_at = timezone.now() + timedelta(seconds=min(backoff, 6 * 3600))
            else:
                state, result = Delivery.FAILED, error.reason
    fields = {"state": state, "result": result[:200], "response_code": code}
    if retry_at:
        fields["next_attempt_at"] = retry_at
    if not Delivery.objects.filter(pk=pk, next_attempt_at=claim, state=Delivery.PENDING).update(**fields):
        log.warning("delivery %s: the claim lapsed before its result was recorded", pk)
    log.info("delivery %s to channel %s: %s", pk, channel.pk, result)
    return state


def send_test(channel: Channel) -> Delivery:
    """The channel page's "Send test": a test event for this channel only, sent now through the same path."""
    now = timezone.now()
    with transaction.atomic():
        event = Event.objects.create(kind=TEST_KIND, dedupe_key=f"test:{channel.pk}:{now.timestamp()}", created=now,
                                     processed=now, data={"reason": f"a test from channel {channel.name}"})
        delivery = Delivery.objects.create(event=event, channel=channel, created=now, next_attempt_at=now)
    claim = now + timedelta(seconds=settings.ALERT_LEASE_SECONDS)
    if Delivery.objects.filter(pk=delivery.pk, next_attempt_at=now).update(
            next_attempt_at=claim, attempts=1, last_attempt_at=now):
        send_delivery(delivery.pk, claim)
    delivery.refresh_from_db()
    return delivery
