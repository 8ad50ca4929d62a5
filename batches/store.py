"""Writing API observations into the database: upsert, snapshot on visible change, transitions.

Safe to call twice with the same payload and safe under concurrent callers: updates are
conditional on the version read (optimistic), and unique constraints back that up.
"""

from collections import Counter
from datetime import datetime

from django.db import IntegrityError, connection as db, transaction
from django.db.models import BooleanField, Case, Count, F, Value, When
from django.utils import timezone

from notifications.events import batches_added, status_changed
from usage import rollup
from usage.prices import PriceTable, batch_cost

from .archive import plan_copies
from .models import (ALL_FAILED, STATUS_TIMESTAMP, TERMINAL_STATUSES, Batch, BatchCount, BatchSnapshot,
                     BatchTransition, Connection, SubmissionPart, sort_columns)
from .payload import VISIBLE_FIELDS, batch_fields, search_text, visible_state
from .results import request_error_codes

# Batch.all_requests_failed in SQL.
_FAILED_ALL = Case(When(ALL_FAILED, then=Value(True)), default=Value(False), output_field=BooleanField())


def store_batch(connection: Connection, payload, *, observed_at: datetime | None = None) -> tuple[Batch, str]:
    """Upsert one API payload. Returns the batch and what happened: "new", "changed" or "unchanged".

    Raises MalformedPayload for a payload without a usable id.
    """
    return store_fields(connection, batch_fields(payload), observed_at=observed_at)


def store_fields(connection: Connection, fields: dict, *, observed_at: datetime | None = None,
                 known: dict | None = None) -> tuple[Batch, str]:
    """store_batch() for a payload already parsed by batch_fields(). `known` maps batch ids to rows the
    caller already loaded (a whole page in one query), so an unchanged batch costs no query at all."""
    observed_at = observed_at or timezone.now()
    fields = {**fields, **sort_columns(fields)}
    preloaded = (known or {}).get(fields["batch_id"])
    for attempt in range(5):
        if attempt == 0 and preloaded is not None:
            batch = preloaded
        else:
            batch = Batch.objects.filter(connection=connection, batch_id=fields["batch_id"]).first()
        if batch is None:
            try:
                with transaction.atomic():
                    batch = Batch.objects.create(
                        connection=connection,
                        first_seen_at=observed_at,
                        last_synced_at=observed_at,
                        last_changed_at=observed_at,
                        version=1,
                        **_priced(fields, observed_at),
                    )
                    _write_history(batch, observed_at)
                    _count_changes({_bucket(batch): 1})
                    rollup.apply((None, rollup.values_of(batch)))
                    link_submission(batch)
                    plan_copies(batch, was=None, now=observed_at)
                    status_changed(batch, was=None)
                    bump_data_version(connection)
                return batch, "new"
            except IntegrityError:
                continue  # another worker stored it first: compare against theirs
        if _is_stale_observation(batch, fields):
            return batch, "unchanged"
        if visible_state(fields) == visible_state(batch):
            if batch.raw != fields["raw"] or batch.missing_since is not None:
                # Only invisible parts changed (timestamps, unknown keys, found again): no snapshot. The rollup
                # counts by model, endpoint and timestamps too, so it follows them.
                with transaction.atomic():
                    if Batch.objects.filter(**_as_read(batch)).update(
                            last_synced_at=observed_at, missing_since=None,
                            **_keep_request_codes(batch, _priced(fields, batch.first_seen_at))):
                        usage_before = rollup.values_of(batch)
                        rollup.apply((usage_before, {**usage_before, **{
                            name: fields[name] for name in rollup.FIELDS if name in fields}}))
                if batch.missing_since is not None:
                    bump_data_version(connection)
            return batch, "unchanged"
        with transaction.atomic():
            updated = Batch.objects.filter(**_as_read(batch)).update(
                version=batch.version + 1, last_synced_at=observed_at, last_changed_at=observed_at,
                missing_since=None, **_keep_request_codes(batch, _priced(fields, batch.first_seen_at))
            )
            if not updated:
                continue  # somebody changed it between our read and write: read again
            before = _bucket(batch)  # the row had this version, so these values
            was, usage_before = batch.status, rollup.values_of(batch)
            batch.refresh_from_db()
            _write_history(batch, observed_at)
            if _bucket(batch) != before:
                _count_changes({_bucket(batch): 1, before: -1})
            rollup.apply((usage_before, rollup.values_of(batch)))
            plan_copies(batch, was=was, now=observed_at)
            status_changed(batch, was=was)
            bump_data_version(connection)
        return batch, "changed"
    raise RuntimeError(f"batch {fields['batch_id']} kept changing under us")


def _as_read(batch: Batch) -> dict:
    """A filter matching the row only as it was read: its version, and the fields the usage rollup counts by that
    change without a new version (model, endpoint, timestamps). Of two stores of one change, one updates the row
    and moves its rollup rows; the other finds nothing to update and reads the row again."""
    return {"pk": batch.pk, "version": batch.version,
            **{name: getattr(batch, name) for name in rollup.FIELDS if name not in _SAME_OR_VERSIONED}}


# Fields that never change (connection_id, first_seen_at) or change only with a new version (the visible ones).
_SAME_OR_VERSIONED = {"connection_id", "first_seen_at", *VISIBLE_FIELDS}


def _priced(fields: dict, first_seen_at: datetime, prices: PriceTable | None = None) -> dict:
    """The fields with the batch's estimated cost at the price of its day (usage/prices.py); the price table is
    read only for a batch with usage."""
    if fields.get("input_tokens") is None:
        return {**fields, "cost_usd": None}
    return {**fields, "cost_usd": batch_cost({**fields, "first_seen_at": first_seen_at}, prices or PriceTable.load())}


def _keep_request_codes(batch: Batch, fields: dict) -> dict:
    """A finished batch may have an indexed archive (batches/results.py): its search text keeps the error codes
    of its requests when the API's payload changes."""
    if not batch.is_terminal:
        return fields
    return {**fields, "search_text": search_text(fields, request_error_codes=request_error_codes(batch.pk))}


def store_new_batches(connection: Connection, field_list: list[dict], *, observed_at: datetime) -> list[Batch] | None:
    """Insert batches we have never seen, with their first snapshot and transitions, in one transaction.

    The cold import's fast path. Returns None when any of them appeared meanwhile (a concurrent sync);
    the caller then stores them one at a time through store_batch().
    """
    prices = PriceTable.load()
    rows = [
        Batch(connection=connection, first_seen_at=observed_at, last_synced_at=observed_at, last_changed_at=observed_at,
              version=1, **_priced({**fields, **sort_columns(fields)}, observed_at, prices))
        for fields in field_list
    ]
    try:
        with transaction.atomic():
            Batch.objects.bulk_create(rows)
            BatchSnapshot.objects.bulk_create([_snapshot(batch, observed_at) for batch in rows])
            BatchTransition.objects.bulk_create(
                [t for batch in rows for t in _transitions(batch, observed_at)], ignore_conflicts=True)
            _count_changes(Counter(_bucket(batch) for batch in rows))
            rollup.apply(*((None, rollup.values_of(batch)) for batch in rows))
            for batch in rows:
                link_submission(batch)
                plan_copies(batch, was=None, now=observed_at)
            batches_added(connection, rows)
            bump_data_version(connection)
    except IntegrityError:
        return None
    return rows


def link_submission(batch: Batch) -> bool:
    """A batch created from Batchboard names its submission part in its metadata (`batchboard_intent`): link
    them, whoever stores it first (the create's answer, or a sync that found it after that answer was lost).
    This is where the lineage is made, and the one place. Returns whether a part was linked now."""
    intent = batch.metadata.get("batchboard_intent") if isinstance(batch.metadata, dict) else None
    token, _, number = intent.rpartition("-") if isinstance(intent, str) else ("", "", "")
    if not token or not number.isdigit() or len(number) > 6:
        return False
    return bool(SubmissionPart.objects.filter(
        submission__token=token, submission__connection_id=batch.connection_id, number=int(number),
        batch__isnull=True).update(batch=batch, batch_id_text=batch.batch_id,
                                   created_batch_at=timezone.now()))


def touch_batches(batch_ids: list[int], *, observed_at: datetime) -> None:
    """Mark batches seen unchanged in one query (keeps `last_synced_at` honest without a write per row)."""
    if batch_ids:
        Batch.objects.filter(pk__in=batch_ids).update(last_synced_at=observed_at)


def mark_missing(connection: Connection, batch_id: str, *, now: datetime) -> None:
    """The API answered 404 for a batch we hold as active: remember since when (once), show it."""
    if Batch.objects.filter(connection=connection, batch_id=batch_id, missing_since__isnull=True).update(
            missing_since=now):
        bump_data_version(connection)


def bump_data_version(connection: Connection) -> None:
    Connection.objects.filter(pk=connection.pk).update(data_version=F("data_version") + 1)


def delete_batches(batches) -> int:
    """Delete the batches of a queryset, with their history, and take them out of the counts. Returns how
    many batches were deleted."""
    with transaction.atomic():
        # Locked, so that no sync moves one of them to another status between counting and deleting.
        rows = list(batches.select_for_update().annotate(failed_all=_FAILED_ALL)
                    .values_list("pk", "connection_id", "status", "failed_all"))
        for start in range(0, len(rows), 500):
            pks = [row[0] for row in rows[start:start + 500]]
            rollup.apply(*((value, None) for value in Batch.objects.filter(pk__in=pks).values(*rollup.FIELDS)))
            Batch.objects.filter(pk__in=pks).delete()
        _count_changes({key: -n for key, n in Counter(row[1:] for row in rows).items()})
        for connection_id in {row[1] for row in rows}:
            bump_data_version(Connection(pk=connection_id))
    return len(rows)


def rebuild_batch_counts(*, batch_model=Batch, count_model=BatchCount) -> int:
    """Recount BatchCount from the batch table, replacing what it held (migrations pass their historical
    models). Stores wait meanwhile on PostgreSQL, so none of their changes is lost or counted twice.
    Returns the number of batches counted."""
    table = count_model._meta.db_table
    with transaction.atomic():
        if db.vendor == "postgresql":
            with db.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        count_model.objects.all().delete()
        groups = (batch_model.objects.order_by().annotate(failed_all=_FAILED_ALL)
                  .values_list("connection_id", "status", "failed_all").annotate(n=Count("id")))
        rows = [count_model(connection_id=c, status=s, all_failed=f, n=n) for c, s, f, n in groups]
        count_model.objects.bulk_create(rows, batch_size=1000)
    return sum(row.n for row in rows)


def _bucket(batch: Batch) -> tuple:
    """Where a batch is counted in BatchCount."""
    return batch.connection_id, batch.status, batch.all_requests_failed


def _count_changes(changes: dict) -> None:
    """Add each change ((connection id, status, all failed) -> +n or -n) to BatchCount in one upsert, which
    creates missing rows and adds to existing ones without reading them first. Rows are written in one
    fixed order, so two transactions changing the same rows cannot deadlock."""
    rows = sorted((key, n) for key, n in changes.items() if n)
    if not rows:
        return
    table = BatchCount._meta.db_table
    with db.cursor() as cursor:
        # The same statement on PostgreSQL and SQLite (3.24+); the ORM's upsert cannot add to a column.
        cursor.execute(
            f"INSERT INTO {table} (connection_id, status, all_failed, n) VALUES "
            + ", ".join(["(%s, %s, %s, %s)"] * len(rows))
            + f" ON CONFLICT (connection_id, status, all_failed) DO UPDATE SET n = {table}.n + excluded.n",
            [value for (connection_id, status, all_failed), n in rows for value in (connection_id, status,
                                                                                      all_failed, n)])


def _is_stale_observation(batch: Batch, fields: dict) -> bool:
    """A payload read before a newer one we already stored (a terminal batch never becomes active again)."""
    return batch.status in TERMINAL_STATUSES and fields["status"] not in TERMINAL_STATUSES


def _write_history(batch: Batch, observed_at: datetime) -> None:
    _snapshot(batch, observed_at).save()
    BatchTransition.objects.bulk_create(_transitions(batch, observed_at), ignore_conflicts=True)


def _snapshot(batch: Batch, observed_at: datetime) -> BatchSnapshot:
    return BatchSnapshot(batch=batch, version=batch.version, observed_at=observed_at,
                         **{name: getattr(batch, name) for name in VISIBLE_FIELDS})


def _transitions(batch: Batch, observed_at: datetime) -> list[BatchTransition]:
    """Every status the API's timestamps say the batch entered (polls can skip states), and the current one."""
    entered = [
        BatchTransition(batch=batch, status=status, at=getattr(batch, field), observed_at=observed_at)
        for status, field in STATUS_TIMESTAMP.items()
        if getattr(batch, field) is not None and status != batch.status
    ]
    entered.append(BatchTransition(batch=batch, status=batch.status, at=batch.status_since, observed_at=observed_at))
    return entered
