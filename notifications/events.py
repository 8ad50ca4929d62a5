"""Where events come from: the store's hook on every status a batch enters, and derive_events(), run by beat,
for what only time reveals (stuck, expiring soon, a connection failing and recovered).

Each event has a dedupe key, so it is created once per transition or per episode however often it is seen.
Nothing here may break a sync: the hook runs in a savepoint and logs its own failures.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.urls import reverse
from django.utils import timezone

from batches.models import KNOWN_STATUSES, STATUS_TIMESTAMP, Batch, Connection

from .models import Event

log = logging.getLogger(__name__)


# Batches looked at per kind and status in one derive_events() run; the rest wait for the next run.
DERIVE_LIMIT = 500

def status_changed(batch: Batch, *, was: str | None) -> None:
    """batches/store.py stored `batch` in a new status (`was` None: a batch first seen). Called inside the
    store's transaction, so the event is committed with the transition or not at all."""
    if was == batch.status or batch.status not in KNOWN_STATUSES:
        return
    _safely(lambda: create_events(_transition_events(batch)) if _imported(batch.connection_id) else None)


def batches_added(connection: Connection, batches: list[Batch]) -> None:
    """batches/store.py inserted new batches in bulk (an import's page, or several new ones at the head)."""
    _safely(lambda: create_events([event for batch in batches if batch.status in KNOWN_STATUSES
                             for event in _transition_events(batch)]) if _imported(connection.pk) else None)


def _safely(work) -> None:
    try:
        with transaction.atomic():  # a savepoint: a failure here never undoes the sync's own writes
            work()
    except Exception:  # noqa: BLE001 - an alert lost is logged; a sync broken by one would be worse
        log.exception("could not record a notification event")


def _imported(connection_id: int) -> bool:
    """A connection's first full walk is complete: what it finds from now on is news, not history."""
    return Connection.objects.filter(pk=connection_id, imported_at__isnull=False).exists()


def _transition_events(batch: Batch) -> list[Event]:
    events = [_batch_event(batch, f"batch.{batch.status}", f"batch:{batch.pk}:{batch.status}")]
    rate = failure_rate(batch)
    if batch.status == "completed" and rate is not None and rate >= settings.ALERT_FAILURE_RATE_PERCENT:
        events.append(_batch_event(batch, "batch.high_failure_rate", f"batch:{batch.pk}:high_failure_rate",
                                   reason=f"{rate:g}% of requests failed"))
    return events


def create_events(events: list[Event]) -> int:
    """Store the events not stored before (by dedupe key). Returns how many were new."""
    if not events:
        return 0
    known = set(Event.objects.filter(dedupe_key__in=[e.dedupe_key for e in events]).values_list("dedupe_key",
                                                                                                 flat=True))
    fresh = [event for event in events if event.dedupe_key not in known]
    Event.objects.bulk_create(fresh, ignore_conflicts=True)  # a concurrent sync may store the same key: fine
    return len(fresh)


def failure_rate(batch: Batch) -> float | None:
    """Percent of finished requests that failed; None before any finished."""
    completed, failed = max(batch.completed_requests, 0), max(batch.failed_requests, 0)
    if completed + failed <= 0:
        return None
    return round(100.0 * failed / (completed + failed), 1)


def batch_reason(batch: Batch) -> str:
    """Why a batch is where it is, in a few words: the first validation error's code, or the failed share."""
    errors = batch.errors if isinstance(batch.errors, list) else []
    first = next((e for e in errors if isinstance(e, dict)), None)
    if first:
        code = str(first.get("code") or "error")[:100]
        more = len(errors) - 1
        return code + (f" and {more} more" if more > 0 else "")
    if batch.failed_requests > 0:
        return f"{batch.failed_requests} requests failed"
    return ""


def absolute_url(path: str) -> str:
    return settings.BATCHBOARD_BASE_URL.rstrip("/") + path


def _batch_event(batch: Batch, kind: str, key: str, *, reason: str = "") -> Event:
    """What a message about `batch` says, frozen now: names, status, counts, reason and a link; never a key,
    a URL of the API or request content."""
    connection = batch.connection
    data = {
        "batch_id": batch.batch_id, "name": batch.display_name, "status": batch.status,
        "connection": connection.slug, "connection_name": connection.name,
        "total_requests": batch.total_requests, "completed_requests": batch.completed_requests,
        "failed_requests": batch.failed_requests, "reason": reason or batch_reason(batch),
        "url": absolute_url(reverse("batch-detail", kwargs={"slug": connection.slug, "batch_id": batch.batch_id})),
    }
    return Event(kind=kind, connection_id=batch.connection_id, batch=batch, dedupe_key=key, data=data)


def _connection_event(connection: Connection, kind: str, key: str, *, reason: str) -> Event:
    data = {"connection": connection.slug, "connection_name": connection.name, "reason": reason,
            "url": absolute_url(reverse("batch-list") + f"?connection={connection.slug}")}
    return Event(kind=kind, connection=connection, dedupe_key=key, data=data)


def derive_events(*, now: datetime | None = None) -> int:
    """Create the events only time reveals, once per episode. Returns how many were created."""
    now = now or timezone.now()
    imported = list(Connection.objects.filter(imported_at__isnull=False, enabled=True))
    ids = [c.pk for c in imported]
    events = []
    events += _stuck_events(ids, now)
    expiring = (Batch.objects.filter(
        connection_id__in=ids, status__in=("validating", "in_progress"), expires_at__gt=now,
        expires_at__lte=now + timedelta(hours=settings.ALERT_EXPIRING_HOURS),
        done_permille__lt=settings.ALERT_EXPIRING_DONE_PERCENT * 10)
        .exclude(_told("expiring_soon")).select_related("connection").order_by("expires_at", "pk")[:DERIVE_LIMIT])
    events += [_batch_event(b, "batch.expiring_soon", f"batch:{b.pk}:expiring_soon",
                            reason=f"expires in {_duration(b.expires_at - now)} with {b.progress()['done']:g}% done")
               for b in expiring]
    for connection in imported:
        events += _connection_health_events(connection, now)
    return create_events(events)


def _told(episode: str) -> Exists:
    """The batch already has this episode's event (its dedupe key ends so), so it need not be looked at."""
    return Exists(Event.objects.filter(batch=OuterRef("pk"), dedupe_key__endswith=f":{episode}"))


def _stuck_events(connection_ids: list[int], now: datetime) -> list[Event]:
    """Batches in validating, finalizing or cancelling for longer than their connection's p95 for that status,
    model and endpoint (usage/baselines.py), or than STUCK_*_SECONDS without enough history."""
    from usage import baselines

    events, known = [], {}
    for status, seconds in settings.STUCK_AFTER_SECONDS.items():
        shortest = min(seconds, settings.STUCK_BASELINE_FLOOR_SECONDS)
        # The oldest first, and not those already told about: a stuck batch behind 500 others is still seen.
        since = STATUS_TIMESTAMP[status]
        candidates = (Batch.objects.filter(connection_id__in=connection_ids, status=status,
                                           **{f"{since}__lt": now - timedelta(seconds=shortest)})
                      .exclude(_told(f"stuck:{status}"))
                      .select_related("connection").order_by(since, "pk")[:DERIVE_LIMIT])
        for batch in candidates:
            group = (batch.connection_id, batch.model, batch.endpoint)
            if group not in known:
                known[group] = baselines.for_batch(batch, today=now.date())
            limit = baselines.stuck_limit(batch, known[group])
            if not baselines.is_stuck(batch, known[group], now):
                continue
            usual = (f", longer than the p95 of {limit['n']} earlier batches of this model "
                     f"({_duration(timedelta(seconds=limit['seconds']))})" if limit["n"] else "")
            events.append(_batch_event(batch, "batch.stuck", f"batch:{batch.pk}:stuck:{status}",
                                       reason=f"in {status} for {_duration(batch.time_in_status(now))}{usual}"))
    return events


def _connection_health_events(connection: Connection, now: datetime) -> list[Event]:
    """"failing" once the last sync failed and the last success is ALERT_CONNECTION_FAILING_MINUTES old (one
    episode per last success), and "recovered" after a success that follows such an event."""
    since = connection.last_success_at or connection.imported_at
    if connection.is_failing:
        if now - since < timedelta(minutes=settings.ALERT_CONNECTION_FAILING_MINUTES):
            return []
        return [_connection_event(connection, "connection.failing",
                                  f"connection:{connection.pk}:failing:{since.isoformat()}",
                                  reason=f"no successful sync for {_duration(now - since)}: "
                                         f"{connection.last_error[:300]}")]
    failing = Event.objects.filter(kind="connection.failing", connection=connection).order_by("-created").first()
    if failing is None or connection.last_success_at is None or connection.last_success_at <= failing.created:
        return []
    return [_connection_event(connection, "connection.recovered",
                              failing.dedupe_key.replace(":failing:", ":recovered:"),
                              reason="syncing again")]


def _duration(delta: timedelta | None) -> str:
    seconds = int(delta.total_seconds()) if delta else 0
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min"
