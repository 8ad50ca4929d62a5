"""Celery tasks of usage/: a decorator and one call each."""

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from . import budgets, prices

_DB_RETRY = {"autoretry_for": (DatabaseError,), "retry_backoff": 2, "retry_backoff_max": 60, "max_retries": 8}


@shared_task(ignore_result=True, acks_late=True, expires=settings.BUDGET_CHECK_SECONDS, **_DB_RETRY)
def check_budgets() -> int:
    return budgets.check_budgets()


@shared_task(ignore_result=True, acks_late=True, **_DB_RETRY)
def reprice_batches(prefix: str) -> int:
    return prices.reprice(prefix=prefix)
