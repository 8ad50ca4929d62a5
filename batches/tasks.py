"""Celery tasks: a decorator and one call into batches/sync.py (or files.py, retention.py) each."""

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from . import files, retention, sync

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


@shared_task(ignore_result=True, acks_late=True, **_LIMITS)
def thin_snapshots() -> int:
    return retention.thin_snapshots()


# Metadata calls and a scan that stops itself after ERROR_FILE_SCAN_SECONDS; the limits only catch a bug.
_FILE_SOFT_LIMIT = int(settings.ERROR_FILE_SCAN_SECONDS + 4 * settings.API_CALL_DEADLINE + 30)


@shared_task(ignore_result=True, acks_late=True, expires=files.QUEUED_SECONDS, soft_time_limit=_FILE_SOFT_LIMIT,
             time_limit=_FILE_SOFT_LIMIT + 30, **_DB_RETRY)
def read_batch_files(batch_pk: int) -> None:
    files.read_batch_files(batch_pk)
