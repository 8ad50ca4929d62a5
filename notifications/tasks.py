"""Celery tasks of the `notifications` queue: a decorator and one call each (outbox.py, events.py)."""

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from . import events, outbox

_DB_RETRY = {"autoretry_for": (DatabaseError,), "retry_backoff": 2, "retry_backoff_max": 60, "max_retries": 8}


@shared_task(ignore_result=True, acks_late=True, expires=settings.ALERT_TICK_SECONDS, **_DB_RETRY)
def send_alerts() -> dict:
    return outbox.run_outbox()


@shared_task(ignore_result=True, acks_late=True, expires=settings.ALERT_DERIVE_SECONDS, **_DB_RETRY)
def derive_events() -> int:
    return events.derive_events()
