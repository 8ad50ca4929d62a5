"""Celery tasks: a decorator and one call into batches/sync.py (or files.py, retention.py, archive.py, results.py)
each."""

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from . import archive, files, results, retention, sync, webhooks

_LIMITS = {"time_limit": settings.SYNC_TASK_TIME_LIMIT, "soft_time_limit": settings.SYNC_TASK_SOFT_TIME_LIMIT}
# The database unreachable for a moment: try again shortly instead of dropping the work.
_DB_RETRY = {"autoretry_for": (DatabaseError,), "retry_backoff": 2, "retry_backoff_max": 60, "max_retries": 8}


@shared_task(ignore_result=True, acks_late=True, expires=60, **_LIMITS, **_DB_RETRY)
def sync_due_connections() -> None:
    for connection_id in sync.due_connection_ids():
        sync_connection.delay(connection_id)


# A sync waiting in the queue longer than a lease is dropped: beat claims the connection again by then.
@shared_task(ignore_result=True, acks_late=True, expires=settings.SYNC_LEASE_SECONDS, **_LIMITS, **_DB_RETRY)
def sync_connection(connection_id: int, full: bool = False) -> str:
    return sync.sync_connection(connection_id=connection_id, full=full).summary()


@shared_task(ignore_result=True, acks_late=True, **_LIMITS, **_DB_RETRY)
def refresh_batch(connection_id: int, batch_id: str) -> None:
    sync.refresh_batch_by_id(connection_id=connection_id, batch_id=batch_id)


@shared_task(ignore_result=True, acks_late=True, **_DB_RETRY)
def forget_old_webhooks() -> int:
    return webhooks.forget_old_webhooks()


@shared_task(ignore_result=True, acks_late=True, **_LIMITS)
def thin_snapshots() -> int:
    return retention.thin_snapshots()


# Metadata calls and a scan that stops itself after ERROR_FILE_SCAN_SECONDS; the limits only catch a bug.
_FILE_SOFT_LIMIT = int(settings.ERROR_FILE_SCAN_SECONDS + 4 * settings.API_CALL_DEADLINE + 30)


@shared_task(ignore_result=True, acks_late=True, expires=files.QUEUED_SECONDS, soft_time_limit=_FILE_SOFT_LIMIT,
             time_limit=_FILE_SOFT_LIMIT + 30, **_DB_RETRY)
def read_batch_files(batch_pk: int) -> None:
    files.read_batch_files(batch_pk)


# ----- the archive (the `archive` queue, see CELERY_TASK_ROUTES) --------------------------------------------
@shared_task(ignore_result=True, acks_late=True, expires=settings.ARCHIVE_TICK_SECONDS, **_DB_RETRY)
def archive_due_files() -> None:
    for archived_pk, claimed_until in archive.claim_due_files():
        archive_file.delay(archived_pk, claimed_until)


# The download stops itself after ARCHIVE_COPY_SECONDS; the limits leave time to store it, and only catch a bug.
_COPY_SOFT_LIMIT = int(settings.ARCHIVE_COPY_SECONDS + 600)


@shared_task(ignore_result=True, acks_late=True, expires=archive.QUEUED_SECONDS, soft_time_limit=_COPY_SOFT_LIMIT,
             time_limit=_COPY_SOFT_LIMIT + 60, **_DB_RETRY)
def archive_file(archived_pk: int, claimed_until: str) -> str:
    return archive.copy_file(archived_pk, claimed_until=claimed_until)


@shared_task(ignore_result=True, acks_late=True, **_DB_RETRY)
def remove_expired_archive_copies() -> int:
    return archive.remove_expired_copies()


@shared_task(ignore_result=True, acks_late=True, **_DB_RETRY)
def index_batch_requests(batch_pk: int) -> None:
    results.index_batch(batch_pk)
