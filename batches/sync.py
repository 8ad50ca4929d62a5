"""The sync algorithm: make the stored batches a faithful, fresh and cheap copy of each connection's API.

The Celery tasks, the `sync_batches` command and the dashboard's refresh button all call these
functions; there is no other sync code path.
"""

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone

from .client import ApiError, BatchApi, PermanentError, TransientError
from .models import ACTIVE_STATUSES, TRANSITIONAL_STATUSES, Batch, Connection
from .payload import MalformedPayload, batch_fields, to_datetime
from .redact import redact
from .store import mark_missing, store_batch, store_fields, store_new_batches, touch_batches

log = logging.getLogger(__name__)


@dataclass
class SyncResult:
    connection: str
    seen: int = 0
    new: int = 0
    changed: int = 0
    requests: int = 0
    seconds: float = 0.0
    full_walk: bool = False
    skipped: bool = False  # another worker holds the lease
    error: str = ""
    warning: str = ""
    retry_after: float | None = None
    problems: list = field(default_factory=list)

    def summary(self) -> str:
        if self.skipped:
            return f"{self.connection}: skipped (another sync holds the lease)"
        text = (f"{self.connection}: seen {self.seen}, new {self.new}, changed {self.changed}, "
                f"{self.requests} HTTP requests, {self.seconds:.2f}s" + (" (full walk)" if self.full_walk else ""))
        if self.warning:
            text += f"; warning: {self.warning}"
        if self.error:
            text += f"; FAILED: {self.error}"
        return text


class _WalkAnomaly(Exception):
    """The list walk saw something impossible (ids repeating, order broken, a cursor that does not move)."""


def sync_connection(*, connection_id: int, full: bool = False, now: datetime | None = None) -> SyncResult:
    """One sync cycle for one connection.

    1. Take the connection's lease (a conditional UPDATE), so concurrent workers never walk the same
       connection at once; a worker that cannot take it returns `skipped`.
    2. Walk GET /batches?limit=SYNC_PAGE_SIZE from the newest, upserting every batch, and stop at the
       first page that holds a batch stored before this cycle (everything older is known), or when
       `has_more` is false. A full walk (first import, `full=True`, every SYNC_FULL_WALK_HOURS, or
       after an anomaly) reads every page. Guards: ids repeating, `created_at` increasing along the
       walk, or a cursor that does not advance stop the walk, set a warning and schedule a full walk.
    3. Retrieve individually each stored non-terminal batch the walk did not cover.
    4. Upsert through store_fields() (each payload parsed once): a snapshot only on a visible change,
       transitions from the API's own timestamps (polls can skip states).
    5. Record health (last attempt/success, error text, consecutive failures), schedule the next
       cycle (adaptive cadence, or the server's Retry-After), and release the lease.
    A failed cycle never changes a batch's status: what was stored stays, and the page shows it stale.
    """
    started = time.monotonic()
    now = now or timezone.now()
    connection = Connection.objects.filter(pk=connection_id).first()
    if connection is None:  # deleted while its task waited in the queue
        return SyncResult(connection=f"#{connection_id}", skipped=True, error="the connection no longer exists")
    result = SyncResult(connection=connection.slug)
    token = _take_lease(connection, now)
    if token is None:
        result.skipped = True
        return result
    api = None
    try:
        api = BatchApi.for_connection(connection)
        result.full_walk = full or _full_walk_due(connection, now)
        covered = _walk(api, connection, result, full=result.full_walk)
        _refresh_uncovered(api, connection, covered, result)
    except _WalkAnomaly as exc:
        result.warning = str(exc)
        log.warning("sync %s: %s; a full walk runs next cycle", connection.slug, exc)
    except ApiError as exc:
        result.error, result.retry_after = str(exc), exc.retry_after
        log.warning("sync %s failed: %s", connection.slug, exc)
        _record_failure(connection, token, exc, result)
    except DatabaseError:
        # The database itself is away. Give the lease back if it can be reached again already; if not,
        # the lease expires by itself. Either way the task retries, and beat picks the connection up.
        try:
            Connection.objects.filter(pk=connection.pk, lease_token=token).update(lease_until=None, lease_token="")
        except DatabaseError:
            pass
        raise
    except Exception as exc:  # a bug: recorded, never a crashed worker
        log.exception("sync %s crashed", connection.slug)
        result.error = f"internal error: {type(exc).__name__}"
        try:
            _record_failure(connection, token, TransientError(result.error), result)
        except Exception:
            log.exception("sync %s: could not record the failure; the lease expires by itself", connection.slug)
    finally:
        if api is not None:
            result.requests = api.requests_made
            api.close()
        result.seconds = time.monotonic() - started
    if not result.error:
        _record_success(connection, token, result)
    return result


def refresh_batch(*, connection: Connection, batch_id: str) -> tuple[Batch, str]:
    """Re-read one batch from the API now and store it. Raises ApiError on failure."""
    api = BatchApi.for_connection(connection)
    try:
        payload = api.retrieve_batch(batch_id)
    finally:
        api.close()
    return store_batch(connection, payload)


def due_connection_ids(now: datetime | None = None) -> list[int]:
    """Connections whose next sync time has come; each is pushed back by one lease so it is enqueued once."""
    now = now or timezone.now()
    due = list(
        Connection.objects.filter(enabled=True)
        .filter(Q(next_sync_at__isnull=True) | Q(next_sync_at__lte=now))
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .values_list("pk", "next_sync_at")
    )
    claimed = []
    hold = now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    for pk, next_sync_at in due:
        # Conditional on the value we read, so two beat processes cannot both enqueue it.
        if Connection.objects.filter(pk=pk, next_sync_at=next_sync_at).update(next_sync_at=hold):
            claimed.append(pk)
    return claimed


def next_interval(connection: Connection) -> float:
    """Adaptive cadence: fast while batches move between states, often while active, rarely when idle."""
    statuses = set(
        Batch.objects.filter(connection=connection, status__in=ACTIVE_STATUSES).values_list("status", flat=True)
    )
    base = float(connection.poll_interval)
    if statuses & set(TRANSITIONAL_STATUSES):
        return min(base, settings.SYNC_TRANSITION_INTERVAL)
    if statuses:
        return base
    return max(base, settings.SYNC_IDLE_INTERVAL)


# ----- the steps ---------------------------------------------------------------------------------
def _take_lease(connection: Connection, now: datetime) -> str | None:
    token = secrets.token_hex(8)
    taken = Connection.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now), pk=connection.pk
    ).update(lease_until=now + timedelta(seconds=settings.SYNC_LEASE_SECONDS), lease_token=token,
             last_attempt_at=now)
    return token if taken else None


def _full_walk_due(connection: Connection, now: datetime) -> bool:
    if connection.full_walk_due or connection.last_full_walk_at is None:
        return True
    return now - connection.last_full_walk_at > timedelta(hours=settings.SYNC_FULL_WALK_HOURS)


def _walk(api: BatchApi, connection: Connection, result: SyncResult, *, full: bool) -> set[str]:
    """Step 2: page through the list from the newest. Returns the ids it saw.

    A full walk that fails half-way (a rate limit on page 60 of 101, say) leaves its cursor on the
    connection, and the next full walk resumes from there: under steady 429s it still finishes."""
    seen: set[str] = set()
    after = resumed_from = connection.walk_cursor if full and connection.walk_cursor else None
    last_created = None
    while True:
        try:
            page = api.list_batches(after=after, limit=settings.SYNC_PAGE_SIZE)
        except PermanentError:
            if resumed_from and after == resumed_from:  # the API refuses the saved cursor: from the top
                _save_cursor(connection, "")
                after = resumed_from = None
                continue
            raise
        except ApiError:
            if full and after:
                _save_cursor(connection, after)
            raise
        data = page["data"]
        ids = [item.get("id") for item in data if isinstance(item, dict)]
        if seen.intersection(ids) or len(set(ids)) != len(ids):
            raise _WalkAnomaly("the batch list repeated ids across pages")
        observed_at = timezone.now()
        known = {b.batch_id: b for b in Batch.objects.filter(
            connection=connection, batch_id__in=[i for i in ids if isinstance(i, str)])}
        reached_known, unchanged, fresh = False, [], []
        for payload in data:
            created = to_datetime(payload.get("created_at")) if isinstance(payload, dict) else None
            if created is not None and last_created is not None and created > last_created:
                raise _WalkAnomaly("the batch list is not ordered newest first")
            last_created = created or last_created
            try:
                fields = batch_fields(payload)
            except MalformedPayload as exc:
                result.problems.append(str(exc))
                log.warning("sync %s: skipped a malformed batch: %s", connection.slug, exc)
                continue
            seen.add(fields["batch_id"])
            result.seen += 1
            if fields["batch_id"] not in known:
                fresh.append(fields)
                continue
            reached_known = True
            _, outcome = store_fields(connection, fields, observed_at=observed_at, known=known)
            if outcome == "changed":
                result.changed += 1
            elif outcome == "unchanged":
                unchanged.append(known[fields["batch_id"]].pk)
        if fresh and store_new_batches(connection, fresh, observed_at=observed_at) is not None:
            result.new += len(fresh)
        else:
            for fields in fresh:  # a concurrent sync stored some of them: one at a time, safely
                _, outcome = store_fields(connection, fields, observed_at=observed_at)
                result.new += outcome == "new"
                result.changed += outcome == "changed"
                reached_known = reached_known or outcome != "new"
        touch_batches(unchanged, observed_at=observed_at)
        if not page.get("has_more") or not data or (reached_known and not full):
            return seen
        next_after = ids[-1] if ids else None
        if not next_after or next_after == after:
            raise _WalkAnomaly("the list cursor did not advance")
        after = next_after


def _save_cursor(connection: Connection, cursor: str) -> None:
    Connection.objects.filter(pk=connection.pk).update(walk_cursor=cursor)


def _refresh_uncovered(api: BatchApi, connection: Connection, covered: set[str], result: SyncResult) -> None:
    """Step 3: every stored batch that is still moving but was not on the pages we read."""
    give_up = timezone.now() - timedelta(hours=settings.SYNC_MISSING_GIVE_UP_HOURS)
    pending = (
        Batch.objects.filter(connection=connection, status__in=ACTIVE_STATUSES)
        .filter(Q(missing_since__isnull=True) | Q(missing_since__gt=give_up))
        .exclude(batch_id__in=covered)
        .values_list("batch_id", flat=True)
    )
    for batch_id in list(pending):
        try:
            payload = api.retrieve_batch(batch_id)
        except PermanentError as exc:
            # One batch the API no longer knows: keep what we have, say so, go on with the others.
            if exc.status == 404:
                mark_missing(connection, batch_id, now=timezone.now())
            result.problems.append(f"{batch_id}: {exc}")
            log.warning("sync %s: could not refresh %s: %s", connection.slug, batch_id, exc)
            continue
        try:
            _, outcome = store_batch(connection, payload)
        except MalformedPayload as exc:
            result.problems.append(f"{batch_id}: {exc}")
            continue
        result.seen += 1
        result.changed += outcome == "changed"


def _record_success(connection: Connection, token: str, result: SyncResult) -> None:
    now = timezone.now()
    fields = {
        "last_success_at": now,
        "last_error": "",
        "consecutive_failures": 0,
        "warning": result.warning,
        "next_sync_at": now + timedelta(seconds=next_interval(connection)),
        "lease_until": None,
        "lease_token": "",
    }
    if result.warning:
        fields["full_walk_due"] = True
    elif result.full_walk:
        fields.update(full_walk_due=False, last_full_walk_at=now, walk_cursor="")
    Connection.objects.filter(pk=connection.pk, lease_token=token).update(**fields)


def _record_failure(connection: Connection, token: str, exc: ApiError, result: SyncResult) -> None:
    now = timezone.now()
    failures = connection.consecutive_failures + 1
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        delay = min(exc.retry_after, settings.SYNC_RETRY_AFTER_CAP)
    else:
        # Exponential backoff from the normal interval; permanent errors go straight to the cap.
        cap = settings.SYNC_FAILURE_BACKOFF_CAP
        delay = cap if isinstance(exc, PermanentError) else min(cap, connection.poll_interval * 2 ** (failures - 1))
    Connection.objects.filter(pk=connection.pk, lease_token=token).update(
        last_error=redact(str(exc))[:2000],
        consecutive_failures=failures,
        next_sync_at=now + timedelta(seconds=delay),
        lease_until=None,
        lease_token="",
    )


def refresh_batch_by_id(*, connection_id: int, batch_id: str) -> str:
    """refresh_batch() for a background task: failures are logged and returned, not raised."""
    connection = Connection.objects.filter(pk=connection_id).first()
    if connection is None:
        return "the connection no longer exists"
    try:
        _, outcome = refresh_batch(connection=connection, batch_id=batch_id)
    except (ApiError, MalformedPayload) as exc:
        log.warning("refresh %s/%s failed: %s", connection.slug, batch_id, exc)
        return str(exc)
    return outcome
