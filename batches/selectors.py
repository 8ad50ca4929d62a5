"""Reads the pages share, and what a user may see and do: every page, fragment, count, download and action
gets its batches and connections here, so access scoping has exactly one home.

Roles (Viewer, Operator, Admin) say *what* a user may do; team grants (teams/models.py) say *where*. Once one
team exists, a user sees only the connections granted to their teams, and on each may do what their role
allows, capped by the best grant (viewer: read; operator: also cancel, download, refresh). Superusers, and
members of a team granted all connections, see every connection. With no team at all, every role sees
everything, as before teams existed.

The batch list is built to stay fast at millions of batches: counts come from BatchCount (kept by
batches/store.py) or stop at LIST_COUNT_LIMIT, and the pager's links carry the position of the row they
continue from (keyset pagination), so a deep page costs what the first one does.
"""

import base64
import binascii
import hashlib
import json
import math
import string
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, time as dt_time, timedelta, timezone as dt_timezone
from typing import NamedTuple
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.db import connection as db, transaction
from django.db.models import (Avg, BooleanField, Count, DateTimeField, Exists, F, IntegerField, Max, Min, OuterRef, Q,
                              QuerySet, Subquery, Sum, Window)
from django.db.models.functions import Collate, Lower

from teams.models import OPERATOR, VIEWER, Team

from .converters import LongRequestId
from .models import (ALL_FAILED, KNOWN_STATUSES, ArchivedFile, AuditEvent, Batch, BatchCount,
                     BatchRequest, Connection, RequestOutcome, SubmissionPart)
from .retries import RETRYABLE

# What a user may do with a batch, and the permission their role must hold for it.
ACTIONS = {"view": "view_batch", "cancel": "cancel_batch", "download": "download_batch_file",
           "refresh": "refresh_batch", "content": "view_request_content", "submit": "submit_batch"}
CEILING_ACTIONS = {VIEWER: {"view"}, OPERATOR: set(ACTIONS)}
_RANK = {None: 0, VIEWER: 1, OPERATOR: 2}


def _best(a: str | None, b: str | None) -> str | None:
    return a if _RANK[a] >= _RANK[b] else b


@dataclass(frozen=True)
class Scope:
    """Where a user may act: a ceiling over every connection (`everywhere`), and one per granted connection."""

    everywhere: str | None = None
    grants: dict[int, str] = field(default_factory=dict)

    def ceiling(self, connection_id: int) -> str | None:
        return _best(self.everywhere, self.grants.get(connection_id))

    def covers(self, connection_id: int | None, role: str) -> bool:
        """May act on this connection (None: on all connections) at least as `role`."""
        ceiling = self.everywhere if connection_id is None else self.ceiling(connection_id)
        return _RANK[ceiling] >= _RANK[role]

    def within(self, other: "Scope") -> bool:
        """Everything this scope allows, `other` allows too (so its holder may manage this one's)."""
        return _RANK[self.everywhere] <= _RANK[other.everywhere] and all(
            other.covers(connection_id, role) for connection_id, role in self.grants.items())


UNLIMITED = Scope(everywhere=OPERATOR)


def scope_from_grants(grants) -> Scope:
    """The best ceiling per connection over (connection id or None, role) pairs."""
    everywhere, per_connection = None, {}
    for connection_id, role in grants:
        if connection_id is None:
            everywhere = _best(everywhere, role)
        else:
            per_connection[connection_id] = _best(per_connection.get(connection_id), role)
    return Scope(everywhere, per_connection)


def _read_scope(user) -> Scope:
    """One query: the grants of the user's teams, plus one row of any team, so that no row means no team at all."""
    membership = Team.members.through.objects.filter(team=OuterRef("pk"), user=user)
    rows = list(Team.objects.annotate(member=Exists(membership))
                .filter(Q(member=True) | Q(pk=Subquery(Team.objects.order_by("pk").values("pk")[:1])))
                .values_list("member", "grants__connection_id", "grants__role"))
    if not rows:
        return UNLIMITED
    return scope_from_grants((connection_id, role) for member, connection_id, role in rows if member and role)


def scope(user) -> Scope:
    """The user's scope, read once per user object (a request's user), like Django's own permission cache."""
    if not hasattr(user, "_batchboard_scope"):
        if not user.is_active:
            user._batchboard_scope = Scope()
        elif user.is_superuser:
            user._batchboard_scope = UNLIMITED
        else:
            user._batchboard_scope = _read_scope(user)
    return user._batchboard_scope


def role_actions(user) -> set[str]:
    return {action for action, perm in ACTIONS.items() if user.has_perm(f"batches.{perm}")}


def effective_actions(actions: set[str], ceiling: str | None) -> set[str]:
    """A role's actions capped by a grant's ceiling; nothing at all without "view" (every page needs it)."""
    allowed = actions & CEILING_ACTIONS.get(ceiling, set())
    return allowed if "view" in allowed else set()


def rights(user, connection: Connection) -> dict[str, bool]:
    """What the user may do on this connection's batches: their role's actions capped by their best grant."""
    allowed = effective_actions(role_actions(user), scope(user).ceiling(connection.pk))
    can = {action: action in allowed for action in ACTIONS}
    can["download"] = can["download"] and can["content"]  # a file is what its requests asked and answered
    return can


def visible_connection_ids(user) -> list[int] | None:
    """The ids of the connections the user may see; None means every connection, present and future."""
    if not user.has_perm("batches.view_batch"):
        return []
    user_scope = scope(user)
    return None if user_scope.everywhere else sorted(user_scope.grants)


def only_visible(queryset: QuerySet, user, *, connection: str = "connection") -> QuerySet:
    """The rows of `queryset` whose connection (the field path `connection`) the user may see."""
    ids = visible_connection_ids(user)
    return queryset if ids is None else queryset.filter(**{f"{connection}__in": ids})


def visible_connections(user) -> QuerySet[Connection]:
    return only_visible(Connection.objects.all(), user, connection="pk")


def visible_batches(user) -> QuerySet[Batch]:
    return only_visible(Batch.objects.all(), user)


def visible_audit_events(user, events: QuerySet[AuditEvent] | None = None) -> QuerySet[AuditEvent]:
    """Events (of `events`, or all) on the user's connections, and events on no connection (such as grants
    of all connections)."""
    ids = visible_connection_ids(user)
    events = AuditEvent.objects.all() if events is None else events
    return events if ids is None else events.filter(Q(connection__in=ids) | Q(connection__isnull=True))


# ----- the batch list ------------------------------------------------------------------------------
class Key(NamedTuple):
    """One column of a sort order; `nulls_last` None leaves NULLs where the database puts them. `few` marks a
    column with few distinct values, each shared by many rows (a status): a page never reads on from inside
    one of its values by a bound on that column alone (see _ranges)."""

    field: str
    descending: bool = False
    nulls_last: bool | None = None
    few: bool = False


# Each sort's columns, ending with a unique one that is never NULL, so that a row's values in them say
# exactly where it stands; each sort has an index on them (batches/models.py).
SORTS = {
    "-created": (Key("created_at", True), Key("id", True)),
    "created": (Key("created_at"), Key("id")),
    "status": (Key("status", few=True), Key("created_at", True), Key("id", True)),
    "-status": (Key("status", True, few=True), Key("created_at", True), Key("id", True)),
    "-tokens": (Key("total_tokens", True, nulls_last=True), Key("id", True)),
    "tokens": (Key("total_tokens", nulls_last=True), Key("id")),
    "-requests": (Key("total_requests", True), Key("id", True)),
    "requests": (Key("total_requests"), Key("id")),
    # stored by store.py (models.sort_columns): running batches first, then by progress
    "active": (Key("in_flight", True, few=True), Key("created_at", True), Key("id", True)),
    "-progress": (Key("done_permille", True, few=True), Key("id", True)),
    "progress": (Key("done_permille", few=True), Key("id")),
}
SORT_LABELS = {"-created": "newest first", "created": "oldest first", "active": "active first",
               "status": "status A–Z", "-status": "status Z–A", "-progress": "most done first",
               "progress": "least done first", "-tokens": "most tokens first", "tokens": "fewest tokens first",
               "-requests": "most requests first", "requests": "fewest requests first"}
DEFAULT_SORT = "-created"
_COUNTED_FILTERS = ("status", "connection")  # what BatchCount can count


def _day_start(day) -> datetime:
    return datetime.combine(day, dt_time.min, dt_timezone.utc)


def filtered_batches(filters: dict, user):
    """The batches of the user's connections that a list with these (validated) filters shows, in its
    sort order."""
    batches = visible_batches(user)
    statuses = filters.get("status") or []
    if statuses:
        condition = Q(status__in=[s for s in statuses if s in KNOWN_STATUSES])
        if "all_failed" in statuses:
            condition |= ALL_FAILED
        if "unknown" in statuses:
            condition |= ~Q(status__in=KNOWN_STATUSES)
        batches = batches.filter(condition)
    if filters.get("connection"):
        batches = batches.filter(connection__slug=filters["connection"])
    if filters.get("endpoint"):
        batches = batches.filter(endpoint=filters["endpoint"])
    if filters.get("model"):
        batches = batches.filter(model=filters["model"])
    if filters.get("created_from"):
        batches = batches.filter(created_at__gte=_day_start(filters["created_from"]))
    if filters.get("created_to"):
        batches = batches.filter(created_at__lt=_day_start(filters["created_to"]) + timedelta(days=1))
    if filters.get("q") and filters["q"].strip():
        # ids, file ids, the model, validation error codes, metadata values and `key:value` (payload.search_text)
        batches = batches.filter(search_text__contains=filters["q"].strip().lower())
    if filters.get("request_error"):
        # batches with a request that failed with this code: the request index's partial index (error_code, batch)
        batches = batches.filter(pk__in=BatchRequest.objects.filter(error_code=filters["request_error"])
                                 .values("batch"))
    sort = filters.get("sort") or DEFAULT_SORT
    return batches.order_by(*_order(SORTS[sort]))


def _order(keys) -> list:
    order = []
    for key in keys:
        nulls = {} if key.nulls_last is None else {"nulls_last": True} if key.nulls_last else {"nulls_first": True}
        order.append(F(key.field).desc(**nulls) if key.descending else F(key.field).asc(**nulls))
    return order


# ----- counts ------------------------------------------------------------------------------------
def batch_counts(user) -> list[tuple]:
    """(connection id, status, all failed, batches) for every non-empty group of the user's connections: a
    few dozen rows."""
    counts = only_visible(BatchCount.objects.exclude(n=0), user)
    return list(counts.values_list("connection_id", "status", "all_failed", "n"))


def status_cards(counts: list[tuple]) -> list[dict]:
    """Batches per status (every known one, then "unknown" when there are any)."""
    per_status = {}
    for _, status, _, n in counts:
        per_status[status] = per_status.get(status, 0) + n
    cards = [{"status": s, "count": per_status.get(s, 0)} for s in KNOWN_STATUSES]
    unknown = sum(n for s, n in per_status.items() if s not in KNOWN_STATUSES)
    if unknown:
        cards.append({"status": "unknown", "count": unknown})
    return cards


def list_count(filters: dict, counts: list[tuple], connections, batches) -> tuple[int, bool]:
    """How many batches the filtered list holds, and whether that is exact. Lists filtered by status and
    connection at most are summed from `counts`; others are counted in SQL, but only up to
    LIST_COUNT_LIMIT + 1 rows, so a search matching most of the table costs no more than one matching
    10,000 (the page then says "10,000+")."""
    if not any(filters.get(k) for k in ("endpoint", "model", "created_from", "created_to", "request_error")) and not (
            filters.get("q") or "").strip():
        slug = filters.get("connection")
        connection_id = next((c.pk for c in connections if c.slug == slug), None) if slug else None
        statuses = set(filters.get("status") or [])
        return sum(n for conn, status, all_failed, n in counts
                   if (not slug or conn == connection_id)
                   and (not statuses or status in statuses or (all_failed and "all_failed" in statuses)
                        or (status not in KNOWN_STATUSES and "unknown" in statuses))), True
    limit = settings.LIST_COUNT_LIMIT
    found = batches.order_by()[:limit + 1].count()
    return min(found, limit), found <= limit


# ----- pages -------------------------------------------------------------------------------------
@dataclass
class ListPage:
    rows: list
    number: int
    count: int
    exact: bool  # False: the list holds more than `count` batches
    size: int
    next_query: str = ""  # query-string parameters of the pager's links ("" when there is no such page)
    previous_query: str = ""

    @property
    def object_list(self) -> list:
        return self.rows

    @property
    def num_pages(self) -> int | None:
        return max(1, math.ceil(self.count / self.size)) if self.exact else None


def batch_page(batches, *, sort: str, number: int, size: int, count: int, exact: bool, after: str = "",
               before: str = "", sorts: dict = SORTS, one_query: bool = False) -> ListPage:
    """Page `number` of an ordered list. With `after` (or `before`), the cursor of the row the page follows
    (or precedes), the rows are read from that row on through the sort's index, whatever the depth;
    without one (a page number typed or shared without its cursor), by OFFSET. Either way the page's
    links carry cursors. `sorts` names the orders `batches` may have; `one_query` reads the rows after a
    cursor in one query instead of one per index range (for a sort no index serves)."""
    keys = sorts[sort]
    values = _values(after or before, keys, batches.model) if after or before else None
    rows = []
    if values is not None and after:
        rows = _rows_after(batches, keys, values, size + 1, one_query)
    elif values is not None:
        rows = _rows_after(batches.reverse(), [_reversed(k) for k in keys], values, size + 1, one_query)
        if len(rows) > size:  # a full page, and more before it
            page = ListPage(rows[size - 1::-1], number, count, exact, size)
            return _with_links(page, keys, has_next=True, has_previous=True)
        rows = []  # fewer: that is the top of the list, read below as page 1
        number = 1
    if not rows:
        rows = list(batches[(number - 1) * size:number * size + 1])
        if not rows and number > 1:  # past the end: the last page
            total = count if exact else batches.count()
            number = max(1, math.ceil(total / size))
            rows = list(batches[(number - 1) * size:number * size + 1])
    page = ListPage(rows[:size], number, count, exact, size)
    return _with_links(page, keys, has_next=len(rows) > size, has_previous=number > 1)


def _with_links(page: ListPage, keys, *, has_next: bool, has_previous: bool) -> ListPage:
    if has_next and page.rows:
        following = {"page": page.number + 1}
        page.next_query = urlencode({**following, "after": _cursor(page.rows[-1], keys)})
    if has_previous and page.rows:
        previous = {"page": page.number - 1}
        if page.number > 2:
            previous["before"] = _cursor(page.rows[0], keys)
        page.previous_query = urlencode(previous)
    return page


def _rows_after(batches, keys, values, limit: int, one_query: bool = False) -> list:
    ranges = _ranges(keys, values, batches.model)
    if one_query:
        return list(batches.filter(Q(*ranges, _connector=Q.OR))[:limit])
    rows = []
    for condition in ranges:
        rows += batches.filter(condition)[:limit - len(rows)]
        if len(rows) >= limit:
            break
    return rows


def _nulls_last(key: Key) -> bool:
    if key.nulls_last is not None:
        return key.nulls_last
    return key.descending != db.features.nulls_order_largest


def _reversed(key: Key) -> Key:
    return Key(key.field, not key.descending, not _nulls_last(key), key.few)


def _ranges(keys, values, model=Batch) -> list[Q]:
    """The rows after `values` in the order of `keys`, as consecutive ranges in that order, each one a
    range of an index on `keys`: equal leading columns, then a bound on one run of columns sorted the
    same way. Usually one range; a second one when a page crosses from one status to the next, or into
    the rows whose sort column is NULL. A `few` column is never part of a bound on the columns after it:
    `status <= 'b' AND (status < 'b' OR created_at < t)` reads every 'b' row before t in the index, where
    `status = 'b' AND created_at < t` starts at t (and the rows after 'b' are a second range)."""
    parts = []  # [first column, condition on the columns from there, could take in the column before]
    for j in reversed(range(len(keys))):
        key, value = keys[j], values[j]
        if value is None:
            if not _nulls_last(key):
                parts.append([j, Q(**{f"{key.field}__isnull": False}), False])
            continue
        after = Q(**{f"{key.field}__{'lt' if key.descending else 'gt'}": value})
        if (parts and parts[-1][2] and parts[-1][0] == j + 1 and keys[j + 1].descending == key.descending
                and not key.few):
            bound = Q(**{f"{key.field}__{'lte' if key.descending else 'gte'}": value})
            parts[-1] = [j, bound & (after | parts[-1][1]), True]
        else:
            parts.append([j, after, True])
        if _nulls_last(key) and model._meta.get_field(key.field).null:
            parts.append([j, Q(**{f"{key.field}__isnull": True}), False])
    return [Q(*[Q(**{keys[i].field: values[i]} if values[i] is not None else {f"{keys[i].field}__isnull": True})
                for i in range(j)]) & condition for j, condition, _ in parts]


def _cursor(row, keys) -> str:
    values = [getattr(row, k.field) for k in keys]
    text = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _values(cursor: str, keys, model=Batch) -> list | None:
    """The row position a cursor from the query string holds, or None if it is not one for this sort."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):  # deeply nested JSON recurses in the decoder
        return None
    if not isinstance(values, list) or len(values) != len(keys):
        return None
    for index, (key, value) in enumerate(zip(keys, values)):
        field = model._meta.get_field(key.field)
        if value is None:
            if not field.null:
                return None
        elif isinstance(field, DateTimeField):
            try:
                values[index] = datetime.fromisoformat(value).astimezone(dt_timezone.utc)
            except (TypeError, ValueError, OverflowError):  # naive ones are taken as local time: no harm
                return None
        elif isinstance(field, BooleanField):
            if type(value) is not bool:
                return None
        elif isinstance(field, IntegerField):
            if type(value) is not int or not -2**63 <= value < 2**63:
                return None
        elif not isinstance(value, str) or "\x00" in value or not _encodable(value):
            return None
    return values


def _encodable(text: str) -> bool:
    """Whether the text is valid Unicode: a JSON `\\ud800` escape gives a lone surrogate no database takes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# ----- retries and lineage ---------------------------------------------------------------------------------
def retryable_requests(batch: Batch) -> QuerySet[BatchRequest]:
    """The batch's indexed requests a retry may send again: failed, expired and not run."""
    return BatchRequest.objects.filter(batch=batch, outcome__in=list(RETRYABLE.values()))


def retry_choices(batch: Batch) -> dict:
    """What a retry of this batch can choose from: how many indexed requests of each retryable outcome, the
    error codes among them with their counts, and whether the input is archived (the lines come from it)."""
    names = {value: name for name, value in RETRYABLE.items()}
    rows = retryable_requests(batch)
    outcomes = {name: 0 for name in RETRYABLE}
    for outcome, n in rows.order_by().values_list("outcome").annotate(n=Count("pk")):
        outcomes[names[outcome]] = n
    codes = list(rows.exclude(error_code="").order_by().values_list("error_code").annotate(n=Count("pk"))
                 .order_by("-n", "error_code")[:50])
    archived = ArchivedFile.objects.filter(batch=batch, kind="input", state=ArchivedFile.STORED).first()
    return {"outcomes": outcomes, "codes": codes, "input_archived": archived is not None,
            "indexed": BatchRequest.objects.filter(batch=batch).exists(),
            "succeeded": BatchRequest.objects.filter(batch=batch, outcome=RequestOutcome.SUCCEEDED).count()}


def retry_summary(batch: Batch, rows) -> dict:
    """A chosen retry set: how many requests, how many have their input line in the archive, the bytes of
    those lines, and the average output tokens of the batch's successes (for the cost estimate)."""
    with_input = rows.filter(input_offset__isnull=False)
    totals = with_input.aggregate(n=Count("pk"), size=Sum("input_length"))
    average = (BatchRequest.objects.filter(batch=batch, outcome=RequestOutcome.SUCCEEDED, output_tokens__isnull=False)
               .aggregate(a=Avg("output_tokens"))["a"])
    count = totals["n"] or 0
    requests = rows.count()
    return {"requests": requests, "sendable": count, "left_out": requests - count, "bytes": (totals["size"] or 0) + count,
            "output_tokens": round(average * count) if average is not None else None}


def parent_batch(batch: Batch) -> Batch | None:
    """The batch this one retries (it was made by a Batchboard retry of it), or None."""
    part = (SubmissionPart.objects.filter(batch=batch, submission__parent__isnull=False)
            .select_related("submission__parent__connection").first())
    return part.submission.parent if part else None


def child_batches(batch: Batch) -> list[Batch]:
    """The batches made by retries of this one, oldest first."""
    return list(Batch.objects.filter(submission_parts__submission__parent=batch).select_related("connection")
                .order_by("created_at", "pk").distinct())


def lineage(batch: Batch, *, limit: int = 200) -> dict:
    """The family of a batch: its root (the first batch, which no retry made), every generation of retries
    below it (at most `limit` batches), and per custom_id the latest outcome across the family."""
    root, seen = batch, {batch.pk}
    while (parent := parent_batch(root)) is not None and parent.pk not in seen:
        root = parent
        seen.add(root.pk)
    generations, tree, known = [[root]], [], {root.pk}
    level, depth = [root], 0
    rows = [{"batch": root, "depth": 0, "generation": 0, "prefix": ""}]
    while level and len(known) < limit:
        depth += 1
        nxt = []
        for parent in level:
            for child in child_batches(parent):
                if child.pk not in known and len(known) < limit:
                    known.add(child.pk)
                    nxt.append(child)
                    rows.append({"batch": child, "depth": depth, "generation": depth, "parent": parent,
                                 "prefix": "↳ " * depth})
        if nxt:
            generations.append(nxt)
        level = nxt
    tree = _tree_order(rows)
    return {"root": root, "generations": generations, "tree": tree,
            "family": [b for generation in reversed(generations) for b in generation],
            "outcomes": _family_outcomes(generations)}


def _tree_order(rows: list[dict]) -> list[dict]:
    """Depth-first: each batch followed by its retries."""
    children: dict = {}
    for row in rows[1:]:
        children.setdefault(row["parent"].pk, []).append(row)
    ordered, stack = [], [rows[0]]
    while stack:
        row = stack.pop()
        ordered.append(row)
        stack.extend(reversed(children.get(row["batch"].pk, [])))
    return ordered


def _family_outcomes(generations: list[list[Batch]]) -> dict:
    """Per custom_id across the family: in which generation it first succeeded (0: the first time), or that it
    never did. Read from the request index, one pass over the family's rows."""
    generation_of = {b.pk: n for n, generation in enumerate(generations) for b in generation}
    first_success: dict[str, int] = {}
    everyone: set[str] = set()
    rows = (BatchRequest.objects.filter(batch_id__in=list(generation_of)).values_list("batch_id", "custom_id", "outcome")
            .iterator(chunk_size=5000))
    for batch_pk, custom_id, outcome in rows:
        everyone.add(custom_id)
        if outcome == RequestOutcome.SUCCEEDED:
            generation = generation_of[batch_pk]
            if first_success.get(custom_id, generation + 1) > generation:
                first_success[custom_id] = generation
    by_generation = [0] * len(generations)
    for generation in first_success.values():
        by_generation[generation] += 1
    return {"requests": len(everyone), "succeeded_by_generation": by_generation,
            "still_failing": len(everyone) - len(first_success), "indexed": bool(everyone)}


# ----- the request explorer (one batch's requests, from the request index) --------------------------------------
# Each sort ends with custom_id, unique within a batch. By custom_id the primary key (batch, custom_id) reads
# the rows in order; by tokens there is no index (each costs bytes per request): one batch's rows are sorted.
REQUEST_SORTS = {
    "custom_id": (Key("custom_id"),),
    "-tokens": (Key("total_tokens", True, nulls_last=True), Key("custom_id")),
    "tokens": (Key("total_tokens", nulls_last=True), Key("custom_id")),
}
REQUEST_SORT_LABELS = {"custom_id": "custom id A–Z", "-tokens": "most tokens first", "tokens": "fewest tokens first"}
DEFAULT_REQUEST_SORT = "custom_id"
_FOLD_ASCII = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def filtered_requests(batch: Batch, filters: dict, *, content: bool) -> QuerySet[BatchRequest]:
    """The batch's indexed requests that an explorer with these (validated) filters shows, in its sort order.
    The preview's text is searched only for a user who may see content (`content`): a search is an oracle."""
    rows = BatchRequest.objects.filter(batch=batch)
    if filters.get("outcome"):
        rows = rows.filter(outcome__in=[RequestOutcome[name.upper()] for name in filters["outcome"]])
    if filters.get("error"):
        rows = rows.filter(error_code=filters["error"])
    if filters.get("custom_id"):
        rows = rows.filter(custom_id__contains=filters["custom_id"])
    if content and filters.get("q") and filters["q"].strip():
        # Case folds A–Z only, as SQLite's LIKE does; on PostgreSQL byte by byte ("C"): a search reads every
        # preview of the batch, and a locale's lower() made that pass twice as slow (bench/pages.py).
        term = filters["q"].strip().translate(_FOLD_ASCII)
        if db.vendor == "postgresql":
            rows = rows.alias(folded=Lower(Collate("preview", "C"))).filter(folded__contains=term)
        else:
            rows = rows.filter(preview__contains=term)
    return rows.order_by(*_order(REQUEST_SORTS[filters.get("sort") or DEFAULT_REQUEST_SORT]))


# Once a batch's index is complete its rows never change: counts over them are kept this long, keyed by the
# index's state (a file removed or indexed again makes new keys).
REQUEST_COUNTS_SECONDS = 24 * 3600


def _counts_key(kind: str, batch: Batch, index_version, *parts) -> str | None:
    if index_version is None:
        return None
    digest = hashlib.sha256(repr((batch.pk, index_version, parts)).encode()).hexdigest()[:32]
    return f"{kind}:{batch.pk}:{digest}"


@contextmanager
def _whole_batch_reads(enabled: bool = True):
    """Reads that visit every row of one batch, on PostgreSQL: through a bitmap of the primary key's range, page
    by page, instead of an index scan in custom_id order. A batch's rows sit together on disk, but in the order
    of its files, not of custom_id; the planner sees only batch_id's correlation (~1) and takes the index
    scan, which then touches a page per row: 2-4x slower over 50,000 rows (bench/pages.py)."""
    if not enabled or db.vendor != "postgresql":
        yield
        return
    outer = db.in_atomic_block
    with transaction.atomic():
        with db.cursor() as cursor:
            cursor.execute("SET LOCAL enable_indexscan = off")
        try:
            yield
        finally:
            if outer:  # SET LOCAL lasts until the outermost transaction ends: give it back now
                with db.cursor() as cursor:
                    cursor.execute("SET LOCAL enable_indexscan = on")


def request_tally(batch: Batch, *, index_version=None) -> list[tuple[int, str, int]]:
    """(outcome, error code, requests) over the batch's whole index: one pass over its rows gives the counts
    per outcome, per error code, and of any filter by those two. With `index_version` (a complete index's
    state) the answer is cached."""
    key = _counts_key("request-tally", batch, index_version)
    if key and (tally := cache.get(key)) is not None:
        return tally
    with _whole_batch_reads():
        tally = list(BatchRequest.objects.filter(batch=batch).order_by().values_list("outcome", "error_code")
                     .annotate(n=Count("*")))
    if key:
        cache.set(key, tally, REQUEST_COUNTS_SECONDS)
    return tally


_SAMPLE_ROWS = 1000


def _expected_matches(batch: Batch, rows, total: int) -> float:
    """How many of the batch's `total` rows a search may match, from its first _SAMPLE_ROWS by custom_id (two
    small reads of a range of the primary key)."""
    last = BatchRequest.objects.filter(batch=batch).order_by("custom_id").values_list("custom_id", flat=True)[
        _SAMPLE_ROWS - 1:_SAMPLE_ROWS].first()
    if last is None:  # a small batch: count it all
        return rows.order_by().count()
    return rows.filter(custom_id__lte=last).order_by().count() * total / _SAMPLE_ROWS


def _counted_with_rows(*, by_key: bool, expected: float, limit: int, total: int) -> bool:
    """Whether a search's first page is best counted in the same pass as its rows (a window over its matches,
    which holds them all) rather than by a count of its own that stops at `limit` + 1. By custom_id a dense
    search's page is then found early in key order, so only a sparse one gains; by tokens every page reads
    the whole batch, so the window gains until holding the matches costs more than the count would read
    (about when matches² > limit × rows)."""
    return expected * 250 < total if by_key else expected * expected <= limit * total


def request_page(batch: Batch, filters: dict, tally: list[tuple], rows, *, size: int,
                 index_version=None) -> ListPage:
    """A page of the explorer's (validated) filters and how many requests they match, `rows` being
    filtered_requests(). Counts come from the tally when the filters are by outcome and error code at most;
    a search's is counted once (up to LIST_COUNT_LIMIT) and kept with `index_version`, so that paging
    through it reads the batch once a page; its first page is counted the cheaper of two ways for what a
    sample says it matches (_counted_with_rows).

    By custom_id the primary key reads a page in order and stops after it: cheap while matches are dense.
    Sparse ones are read in one pass over the batch instead, which that walk would have made row by row; by
    tokens every row of the batch is sorted anyway."""
    sort = filters.get("sort") or DEFAULT_REQUEST_SORT
    by_key = sort == DEFAULT_REQUEST_SORT
    after, before, number = filters.get("after") or "", filters.get("before") or "", filters.get("page") or 1
    total = sum(n for *_, n in tally)
    key = found = None
    limit = settings.LIST_COUNT_LIMIT
    if not filters.get("custom_id") and not (filters.get("q") or "").strip():
        limit = math.inf  # an exact sum, whatever its size
        outcomes = {RequestOutcome[name.upper()] for name in filters.get("outcome") or []}
        code = filters.get("error")
        found = sum(n for outcome, error_code, n in tally
                    if (not outcomes or outcome in outcomes) and (not code or error_code == code))
    else:
        key = _counts_key("request-count", batch, index_version, limit,
                          *(repr(filters.get(k)) for k in ("outcome", "error", "custom_id", "q")))
        found = cache.get(key) if key else None
    counted = found is None
    one_pass = counted and not (after or before) and number == 1 and _counted_with_rows(
        by_key=by_key, expected=_expected_matches(batch, rows, total), limit=limit, total=total)
    if one_pass:
        rows = rows.annotate(matching=Window(Count("*")))
    elif counted:
        with _whole_batch_reads():
            found = rows.order_by()[:limit + 1].count()
    # Under 1 match in 250 rows, a walk in key order to a page of 50 matches would visit most of a batch.
    sparse = one_pass or found * 250 < total
    with _whole_batch_reads(not by_key or sparse):
        page = batch_page(rows, sort=sort, number=number, size=size, count=min(found or 0, limit),
                          exact=(found or 0) <= limit, after=after, before=before, sorts=REQUEST_SORTS,
                          one_query=not by_key)
    if one_pass:
        found = page.rows[0].matching if page.rows else 0
        page.count, page.exact = min(found, limit), found <= limit
    if key and counted:
        cache.set(key, found, REQUEST_COUNTS_SECONDS)
    return page


def find_request(batch: Batch, custom_id: str) -> BatchRequest | None:
    """The batch's request with this custom_id; a long id's URL names its prefix and the one id it matches."""
    rows = BatchRequest.objects.filter(batch=batch)
    if isinstance(custom_id, LongRequestId):
        return next((row for row in rows.filter(custom_id__startswith=str(custom_id)).iterator()
                     if custom_id.matches(row.custom_id)), None)
    return rows.filter(custom_id=custom_id).first()


def failed_neighbours(row: BatchRequest, tally: list[tuple]) -> tuple[str | None, str | None]:
    """The custom ids of the failed requests before and after `row`, in custom_id order. The tally says how
    many there are: none, no query; few (under 1 in 100), one pass over the batch's failed rows, however far
    apart they are; many, the primary key in order from `row`, which meets one within a few rows."""
    failed = sum(n for outcome, _, n in tally if outcome == RequestOutcome.FAILED)
    if not failed:
        return None, None
    rows = BatchRequest.objects.filter(batch_id=row.batch_id, outcome=RequestOutcome.FAILED)
    if failed * 100 < sum(n for *_, n in tally):
        with _whole_batch_reads():
            found = rows.aggregate(previous=Max("custom_id", filter=Q(custom_id__lt=row.custom_id)),
                                   following=Min("custom_id", filter=Q(custom_id__gt=row.custom_id)))
        return found["previous"], found["following"]
    previous = rows.filter(custom_id__lt=row.custom_id).order_by("-custom_id").values_list("custom_id", flat=True)
    following = rows.filter(custom_id__gt=row.custom_id).order_by("custom_id").values_list("custom_id", flat=True)
    return previous.first(), following.first()
