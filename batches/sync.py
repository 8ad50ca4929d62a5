"""The sync algorithm: make the stored batches a faithful, fresh and cheap copy of each connection's API.

The Celery tasks, the `sync_batches` command and the dashboard's refresh button all call these
functions; there is no other sync code path.
"""

import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone

from .client import ApiError, BatchApi, PermanentError, TransientError
from .models import (ACTIVE_STATUSES, NEWEST_FIRST, OLDEST_FIRST, TRANSITIONAL_STATUSES, Batch, Connection,
                     SyncCounter)
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
    cut_short: bool = False  # the cycle budget (or a soft time limit) ended it; the next cycle goes on
    error: str = ""
    error_kind: str = ""  # error_kind(): the /metrics label of a failed cycle
    warning: str = ""
    retry_after: float | None = None
    unreadable: int = 0  # batches on the pages read that could not be stored
    walk_unreadable: int = 0  # of those, the ones on the full walk's own pages (the walk sums its cycles)
    problems: list = field(default_factory=list)

    def summary(self) -> str:
        if self.skipped:
            return f"{self.connection}: skipped (another sync holds the lease)"
        text = (f"{self.connection}: seen {self.seen}, new {self.new}, changed {self.changed}, "
                f"{self.requests} HTTP requests, {self.seconds:.2f}s" + (" (full walk)" if self.full_walk else ""))
        if self.cut_short:
            text += "; budget spent, continues next cycle"
        if self.unreadable:
            text += f"; {self.unreadable} unreadable"
        if self.warning:
            text += f"; warning: {self.warning}"
        if self.error:
            text += f"; FAILED: {self.error}"
        return text


class _LeaseLost(Exception):
    """Our lease expired and another worker may hold the connection now: stop touching it."""


@dataclass
class _Cycle:
    """What one cycle carries between its steps: the budget, the lease, the ids it has seen."""

    connection: Connection
    api: BatchApi
    result: SyncResult
    token: str
    started: float
    covered: set = field(default_factory=set)
    walk_done: bool = False
    head_pages: int = 0  # list pages the head read took
    progressed: bool = False  # some page or batch was read and stored
    order_steps: list = field(default_factory=lambda: [0, 0])  # rising, falling steps seen before deciding
    unreadable_ids: set = field(default_factory=set)
    reading: str = ""  # what is being read now: head, walk, tail, deep or refresh
    head_cursor: str | None = None  # where the head read stopped (the next page's `after`), unless it ended

    def has_time(self) -> bool:
        return time.monotonic() - self.started < settings.SYNC_CYCLE_BUDGET_SECONDS

    def renew_lease(self, **fields) -> None:
        """Push the lease forward (and save `fields` with it); a cycle that lost its lease stops."""
        until = timezone.now() + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
        if not Connection.objects.filter(pk=self.connection.pk, lease_token=self.token).update(
                lease_until=until, **fields):
            raise _LeaseLost
        for name, value in fields.items():
            setattr(self.connection, name, value)


def sync_connection(*, connection_id: int, full: bool = False, now: datetime | None = None) -> SyncResult:
    """One sync cycle for one connection, never longer than SYNC_CYCLE_BUDGET_SECONDS (plus one request).

    1. Take the connection's lease (a conditional UPDATE, SYNC_LEASE_SECONDS long, renewed after every
       request), so concurrent workers never sync one connection at once; without it return `skipped`.
    2. Read the head of the list: from the top, page by page, until a page holds a batch stored before
       this cycle (everything older is known) or the list ends. An oldest-first server (detected on the
       first page it sends) is read forward from its tail cursor instead. Every page is stored whatever
       its order; ids repeating, order broken or a cursor that does not move mark the connection
       degraded (a warning) and schedule a full walk.
    3. Retrieve individually each stored active batch the pages did not cover, least recently synced first;
       when many active batches sit below the head, read on down the list instead if that takes fewer
       requests (a page holds SYNC_PAGE_SIZE batches).
    4. A full walk (first import, `full=True`, every SYNC_FULL_WALK_HOURS, or after an anomaly) goes on
       from the cursor it saved after its last page; when it starts at the top it is the head read too.
       A clean walk to the end clears the warning.
    5. Store through store_fields() (each payload parsed once): a snapshot only on a visible change,
       transitions from the API's own timestamps. A batch that cannot be read is counted and skipped.
    6. Record health and schedule the next cycle (adaptive cadence, soon when work is left, or the
       server's Retry-After), and release the lease.
    Steps 2-4 stop when the budget is spent: progress is saved page by page, so a cut cycle, a killed
    worker or a Celery soft time limit loses at most one page. A failed cycle never changes a batch.
    """
    started = time.monotonic()
    now = now or timezone.now()
    _release_orphaned_leases()
    connection = Connection.objects.filter(pk=connection_id).first()
    if connection is None:  # deleted while its task waited in the queue
        return SyncResult(connection=f"#{connection_id}", skipped=True, error="the connection no longer exists")
    result = SyncResult(connection=connection.slug)
    token = _take_lease(connection, now)
    if token is None:
        result.skipped = True
        return result
    cycle = None
    try:
        with BatchApi.for_connection(connection) as api:
            cycle = _Cycle(connection=connection, api=api, result=result, token=token, started=started)
            try:
                _run(cycle, full=full, now=now)
            finally:
                result.requests = api.requests_made
    except SoftTimeLimitExceeded:
        result.cut_short = True
        log.warning("sync %s: soft time limit reached; the next cycle goes on", connection.slug)
        if cycle is None or not cycle.progressed:  # nothing was read: that is no success
            result.error, result.error_kind = "the cycle reached its time limit before the API answered", "time_limit"
            _record_failure(connection, token, TransientError(result.error), result)
    except _LeaseLost:
        result.error, result.error_kind = "the lease expired during the cycle; another sync took over", "lease_lost"
        log.warning("sync %s: %s", connection.slug, result.error)
        result.seconds = time.monotonic() - started
        count_cycle(connection.pk, result)
        return result
    except ApiError as exc:
        result.error, result.retry_after, result.error_kind = str(exc), exc.retry_after, error_kind(exc)
        log.warning("sync %s failed: %s", connection.slug, exc)
        _record_failure(connection, token, exc, result)
    except (OperationalError, InterfaceError):
        # The database itself is away. Give the lease back if it can be reached again already; if not,
        # this process gives it back as soon as the database answers again (the task's retry, or the next
        # sync here), and in any case it expires after SYNC_LEASE_SECONDS.
        _orphaned_leases[token] = connection.pk
        _release_orphaned_leases()
        raise
    except Exception as exc:  # a bug: recorded, never a crashed worker
        log.exception("sync %s crashed", connection.slug)
        result.error, result.error_kind = f"internal error: {type(exc).__name__}", "internal"
        try:
            _record_failure(connection, token, TransientError(result.error), result)
        except Exception:
            log.exception("sync %s: could not record the failure; the lease expires by itself", connection.slug)
    result.seconds = time.monotonic() - started
    if not result.error:
        _record_success(connection, token, result, started_at=now)
    count_cycle(connection.pk, result)
    return result


def error_kind(exc: ApiError) -> str:
    """What went wrong, as a /metrics label: rate_limited, network, server (transient); auth, refused (permanent);
    configuration (nothing was sent: the key is unreadable, or its host not allowed)."""
    if exc.error_type == "configuration":
        return "configuration"
    if isinstance(exc, PermanentError):
        return "auth" if exc.status in (401, 403) else "refused"
    if exc.status == 429:
        return "rate_limited"
    return "network" if exc.status is None else "server"


def count_cycle(connection_id: int, result: SyncResult) -> None:
    """Add one cycle to the connection's SyncCounter row for its outcome (one UPDATE; the row is made once)."""
    row = SyncCounter.objects.filter(connection_id=connection_id, error_kind=result.error_kind)
    changes = {"cycles": F("cycles") + 1, "seconds": F("seconds") + result.seconds,
               "requests": F("requests") + result.requests}
    if row.update(**changes):
        return
    try:
        with transaction.atomic():
            SyncCounter.objects.create(connection_id=connection_id, error_kind=result.error_kind, cycles=1,
                                       seconds=result.seconds, requests=result.requests)
    except IntegrityError:  # another worker made it first (or the connection was deleted meanwhile)
        row.update(**changes)


# Leases this process took and could not give back because the database was away: token -> connection.
_orphaned_leases: dict[str, int] = {}


def _release_orphaned_leases() -> None:
    for token, pk in list(_orphaned_leases.items()):
        try:
            Connection.objects.filter(pk=pk, lease_token=token).update(lease_until=None, lease_token="")
        except DatabaseError:
            return  # still away; the leases expire by themselves meanwhile
        del _orphaned_leases[token]


def _run(cycle: _Cycle, *, full: bool, now: datetime) -> None:
    connection = cycle.connection
    walking = full or connection.full_walk_due or bool(connection.walk_cursor) or _full_walk_due(connection, now)
    if connection.list_order == OLDEST_FIRST:
        if connection.tail_cursor:
            _read_list(cycle, kind="tail", after=connection.tail_cursor)
    elif walking and not connection.walk_cursor:
        _read_list(cycle, kind="walk", after=None)  # a walk from the top reads the head too
    else:
        _read_list(cycle, kind="head", after=None)
        _read_deeper_when_cheaper(cycle)
    _refresh_uncovered(cycle)
    if walking and not cycle.walk_done and cycle.has_time():
        _read_list(cycle, kind="walk", after=connection.walk_cursor or None)
    if walking and not cycle.walk_done:
        cycle.result.cut_short = True


def refresh_batch(*, connection: Connection, batch_id: str) -> tuple[Batch, str]:
    """Re-read one batch from the API now and store it. Raises ApiError on failure."""
    api = BatchApi.for_connection(connection)
    try:
        payload = api.retrieve_batch(batch_id)
    finally:
        api.close()
    return store_batch(connection, payload)


def due_connection_ids(now: datetime | None = None, *, only: list[int] | None = None) -> list[int]:
    """Connections whose next sync time has come (of `only`, when given); each is pushed back by one
    lease so it is enqueued once per lease, not once per tick."""
    now = now or timezone.now()
    # Due within half a tick: run it now rather than a whole tick late.
    soon = now + timedelta(seconds=settings.SYNC_TICK_SECONDS / 2)
    due = Connection.objects.filter(enabled=True).filter(Q(next_sync_at__isnull=True) | Q(next_sync_at__lte=soon))
    due = due.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    if only is not None:
        due = due.filter(pk__in=only)
    claimed = []
    hold = now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    for pk, next_sync_at in list(due.values_list("pk", "next_sync_at")):
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


def _read_list(cycle: _Cycle, *, kind: str, after: str | None, until: datetime | None = None) -> None:
    """Read list pages from `after` and store what they hold, until the list ends, the budget is spent,
    an anomaly makes the cursor untrustworthy, (kind "head") a page reaches batches stored before, or
    (kind "deep") the pages reach batches created before `until`.

    kind "walk" saves its cursor after every page and completes the full walk at the end of the list;
    kind "tail" (oldest-first servers) saves the tail cursor after every page."""
    connection, result = cycle.connection, cycle.result
    if kind == "walk":
        result.full_walk = True
        if not after:  # a walk starts: forget what the previous one found
            cycle.renew_lease(walk_anomaly=False, walk_unreadable=0, full_walk_due=True)
    resumed_from, seen, reread, last_created = after, set(), set(), None
    cycle.reading = kind
    while True:
        if not cycle.has_time():
            return
        try:
            page = cycle.api.list_batches(after=after, limit=settings.SYNC_PAGE_SIZE)
        except PermanentError as exc:
            refused = kind in ("walk", "tail") and after and after == resumed_from and exc.status in (400, 404)
            if refused:  # the API refuses our saved cursor (the batch is gone): start over from the top
                log.warning("sync %s: the API refused the saved %s cursor; reading from the top", connection.slug,
                            kind)
                if kind == "tail":
                    cycle.renew_lease(tail_cursor="", full_walk_due=True)
                    return
                cycle.renew_lease(walk_cursor="")
                after = resumed_from = None
                continue
            raise
        data = page["data"]
        ids = [item.get("id") if isinstance(item, dict) else None for item in data]
        last_created = _check_order(cycle, data, last_created)
        if kind == "head" and connection.list_order == OLDEST_FIRST:
            kind = cycle.reading = "walk"  # an oldest-first list's top is its oldest end: this is the import
            result.full_walk = True
            cycle.renew_lease(walk_anomaly=False, walk_unreadable=0, full_walk_due=True)
        named = [i for i in ids if isinstance(i, str) and i]
        repeated = bool(seen.difference(reread).intersection(named)) or len(set(named)) != len(named)
        reached_known = _store_page(cycle, data)
        seen.update(i for i in ids if i)
        cursor = next((i for i in reversed(ids) if _usable_cursor(i)), None)
        # Items after the cursor (unusable ids at the page's end) come again on the next page.
        reread = set(ids[ids.index(cursor) + 1:]) if cursor else set()
        end = not page.get("has_more") or not data
        if kind in ("head", "deep"):
            cycle.head_pages += 1
            cycle.head_cursor = None if end else cursor
        if kind == "walk" and cursor:
            cycle.renew_lease(walk_cursor=cursor)
        elif kind == "tail" and cursor:
            cycle.renew_lease(tail_cursor=cursor)
        else:
            cycle.renew_lease()
        if repeated:
            _anomaly(cycle, "the batch list repeated ids across pages", kind=kind)
            return
        if end:
            if kind == "walk" or (kind == "head" and after is None):
                _complete_walk(cycle, tail=cursor or after)  # the whole list, from the top to its end
            return
        if kind == "head" and reached_known:
            return
        if kind == "deep" and last_created is not None and last_created < until:
            return
        if not cursor or cursor == after:
            _anomaly(cycle, "the list cursor did not advance", kind=kind)
            return
        after = cursor


def _usable_cursor(batch_id) -> bool:
    """An id we can store and send back as `after`; a page ending in anything else continues from the last
    usable one (reading a few batches twice)."""
    return isinstance(batch_id, str) and 0 < len(batch_id) <= 255 and "\x00" not in batch_id


def _order_steps(data: list, previous=None) -> tuple[int, int]:
    created = [previous] if previous else []
    created += [to_datetime(item.get("created_at")) for item in data if isinstance(item, dict)]
    created = [c for c in created if c is not None]
    rising = sum(1 for a, b in zip(created, created[1:]) if b > a)
    falling = sum(1 for a, b in zip(created, created[1:]) if b < a)
    return rising, falling


def _check_order(cycle: _Cycle, data: list, previous):
    """Which way the server lists batches is decided once, by the majority of the first three steps between
    creation times (over one page or more); from then on, note (never stop at) a page that breaks that
    order. Returns the last created_at seen."""
    rising, falling = _order_steps(data, previous)
    if not cycle.connection.list_order:
        cycle.order_steps[0] += rising
        cycle.order_steps[1] += falling
        rising, falling = cycle.order_steps
        if rising + falling >= 3:
            order = OLDEST_FIRST if rising > falling else NEWEST_FIRST
            cycle.renew_lease(list_order=order)
            if order == OLDEST_FIRST:
                log.info("sync %s: the server lists oldest first; reading it forward from a tail cursor",
                         cycle.connection.slug)
    order = cycle.connection.list_order
    if order and (rising if order == NEWEST_FIRST else falling):
        words = "newest first" if order == NEWEST_FIRST else "oldest first"
        _anomaly(cycle, f"the batch list is not ordered {words}", kind=None)
    stamps = [to_datetime(item.get("created_at")) for item in data if isinstance(item, dict)]
    return next((c for c in reversed(stamps) if c is not None), previous)


def _anomaly(cycle: _Cycle, text: str, *, kind: str | None) -> None:
    """The list looked inconsistent: say so (degraded until a clean walk), and schedule a full walk the
    first time. A walk whose cursor cannot be trusted is given up until its next scheduled time."""
    result, connection = cycle.result, cycle.connection
    if text not in result.warning:
        result.warning = f"{result.warning}; {text}" if result.warning else text
    log.warning("sync %s: %s", connection.slug, text)
    fields = {"walk_anomaly": True}
    if not connection.warning:
        fields["full_walk_due"] = True
    if kind == "walk":  # cursor untrustworthy: this walk cannot go on
        fields.update(walk_cursor="", last_full_walk_at=timezone.now())
        fields.setdefault("full_walk_due", False)
        cycle.walk_done = True
    cycle.renew_lease(**fields)


def _complete_walk(cycle: _Cycle, *, tail: str | None) -> None:
    connection = cycle.connection
    fields = {"walk_cursor": "", "full_walk_due": False, "last_full_walk_at": timezone.now(),
              "unreadable_batches": connection.walk_unreadable + cycle.result.walk_unreadable,
              "walk_unreadable": 0}
    if connection.imported_at is None:  # the first import is over: from now on changes alert
        fields["imported_at"] = fields["last_full_walk_at"]
    cycle.result.walk_unreadable = 0
    if not connection.walk_anomaly and not cycle.result.warning:
        fields["warning"] = ""
    if connection.list_order == OLDEST_FIRST and tail:
        fields["tail_cursor"] = tail
    cycle.renew_lease(**fields)
    cycle.walk_done = True


def _store_page(cycle: _Cycle, data: list) -> bool:
    """Store one list page (new batches in one transaction). Returns whether it held a batch stored
    before this cycle. A batch that cannot be parsed or stored is counted, logged and skipped."""
    connection, result = cycle.connection, cycle.result
    observed_at = timezone.now()
    cycle.progressed = True
    parsed = []
    for payload in data:
        fields = _parse(cycle, payload)
        if fields is not None and fields["batch_id"] not in cycle.covered:
            parsed.append(fields)
    known = {b.batch_id: b for b in Batch.objects.filter(
        connection=connection, batch_id__in=[f["batch_id"] for f in parsed])}
    reached_known, unchanged, fresh = False, [], []
    for fields in parsed:
        cycle.covered.add(fields["batch_id"])
        result.seen += 1
        if fields["batch_id"] not in known:
            fresh.append(fields)
            continue
        reached_known = True
        outcome = _store_one(cycle, fields, observed_at=observed_at, known=known)
        if outcome == "unchanged":
            unchanged.append(known[fields["batch_id"]].pk)
    if fresh and _store_new(connection, fresh, observed_at) is not None:
        result.new += len(fresh)
    else:
        for fields in fresh:  # a concurrent sync stored some of them (or one is bad): one at a time
            outcome = _store_one(cycle, fields, observed_at=observed_at)
            reached_known = reached_known or outcome not in ("new", None)
    touch_batches(unchanged, observed_at=observed_at)
    return reached_known


def _parse(cycle: _Cycle, payload) -> dict | None:
    try:
        return batch_fields(payload)
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:  # any problem of one payload is that batch's problem, never the connection's
        _unreadable(cycle, payload, exc)
        return None


def _store_one(cycle: _Cycle, fields: dict, **kwargs) -> str | None:
    try:
        _, outcome = store_fields(cycle.connection, fields, **kwargs)
    except (OperationalError, InterfaceError, SoftTimeLimitExceeded):
        raise  # the database is away, or the task's time is up: not this batch's fault
    except Exception as exc:
        _unreadable(cycle, fields.get("raw"), exc)
        return None
    cycle.result.new += outcome == "new"
    cycle.result.changed += outcome == "changed"
    return outcome


def _store_new(connection: Connection, fresh: list, observed_at: datetime):
    try:
        return store_new_batches(connection, fresh, observed_at=observed_at)
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:  # one row the database refuses: the caller stores them one by one
        return None


def _unreadable(cycle: _Cycle, payload, exc: Exception) -> None:
    batch_id = payload.get("id") if isinstance(payload, dict) else None
    label = batch_id if isinstance(batch_id, str) else "a batch without a usable id"
    text = f"{label[:100]}: could not be read ({type(exc).__name__}: {str(exc)[:200]})"
    if isinstance(batch_id, str):
        if batch_id in cycle.unreadable_ids:
            return  # the same batch on a page read again: counted once
        cycle.unreadable_ids.add(batch_id)
    cycle.result.unreadable += 1
    cycle.result.walk_unreadable += cycle.reading == "walk"
    cycle.result.problems.append(text)
    log.warning("sync %s: skipped %s", cycle.connection.slug, redact(text))


def _uncovered_active(cycle: _Cycle) -> list[tuple[str, datetime | None]]:
    """Stored batches still moving that no page of this cycle held, least recently synced first."""
    give_up = timezone.now() - timedelta(hours=settings.SYNC_MISSING_GIVE_UP_HOURS)
    pending = (
        Batch.objects.filter(connection=cycle.connection, status__in=ACTIVE_STATUSES)
        .filter(Q(missing_since__isnull=True) | Q(missing_since__gt=give_up))
        .order_by("last_synced_at")
        .values_list("batch_id", "created_at")
    )
    return [(batch_id, created) for batch_id, created in pending if batch_id not in cycle.covered]


def _read_deeper_when_cheaper(cycle: _Cycle) -> None:
    """Many active batches below the head: reading on down the list (100 a page) can cost fewer requests
    than retrieving each of them. Pick the cheaper of the two from what is stored."""
    if cycle.head_cursor is None:
        return
    uncovered = _uncovered_active(cycle)
    oldest = min((created for _, created in uncovered if created is not None), default=None)
    if oldest is None:
        return
    depth = Batch.objects.filter(connection=cycle.connection, created_at__gte=oldest).count()
    more_pages = math.ceil(depth / settings.SYNC_PAGE_SIZE) - cycle.head_pages
    if more_pages < len(uncovered):
        _read_list(cycle, kind="deep", after=cycle.head_cursor, until=oldest)


def _refresh_uncovered(cycle: _Cycle) -> None:
    """Step 3: every stored batch that is still moving but was not on the pages read, oldest news first."""
    connection, result = cycle.connection, cycle.result
    cycle.reading = "refresh"
    for batch_id, _ in _uncovered_active(cycle):
        if not cycle.has_time():
            result.cut_short = True
            return
        try:
            payload = cycle.api.retrieve_batch(batch_id)
        except ApiError as exc:
            if not _one_batchs_problem(exc):
                raise  # the API as a whole is in trouble (rate limit, network): stop the cycle
            # One batch the API no longer knows, or cannot show right now: keep what we have, say so, go on
            # with the others (it goes to the back of the queue).
            if exc.status == 404:
                mark_missing(connection, batch_id, now=timezone.now())
            result.problems.append(f"{batch_id}: {exc}")
            log.warning("sync %s: could not refresh %s: %s", connection.slug, batch_id, exc)
            continue
        finally:
            cycle.renew_lease()
            # least recently synced first: one asked about now goes to the back, changed or not
            Batch.objects.filter(connection=connection, batch_id=batch_id).update(last_synced_at=timezone.now())
        cycle.progressed = True
        fields = _parse(cycle, payload)
        if fields is not None:
            cycle.covered.add(batch_id)
            result.seen += 1
            _store_one(cycle, fields)


def _one_batchs_problem(exc: ApiError) -> bool:
    """An error about one batch (unknown id, a server error or an unreadable answer for it), not about the
    connection (rate limit, quota, key, network)."""
    if isinstance(exc, PermanentError):
        return exc.status in (400, 404, 409, 422)
    return exc.status is not None and exc.status != 429


def _record_success(connection: Connection, token: str, result: SyncResult, *, started_at: datetime) -> None:
    now = timezone.now()
    connection.refresh_from_db(fields=["walk_cursor", "full_walk_due", "walk_unreadable", "unreadable_batches",
                                       "warning", "tail_cursor"])
    interval = next_interval(connection)
    if result.cut_short:  # more to read: go on soon, whatever the cadence
        interval = min(interval, settings.SYNC_TRANSITION_INTERVAL)
    fields = {
        "last_success_at": now,
        "last_error": "",
        "consecutive_failures": 0,
        "sync_interval": interval,
        # From the start of the cycle, so a 5 s cadence is every 5 s, not every 5 s plus the cycle's length.
        "next_sync_at": max(started_at + timedelta(seconds=interval), now),
        "lease_until": None,
        "lease_token": "",
    }
    if result.warning and result.warning not in connection.warning:
        fields["warning"] = result.warning[:2000]
    if result.walk_unreadable:  # a walk is on and goes on next cycle: it sums its cycles
        fields["walk_unreadable"] = connection.walk_unreadable + result.walk_unreadable
    if result.unreadable:
        fields["unreadable_batches"] = max(connection.unreadable_batches, result.unreadable)
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
