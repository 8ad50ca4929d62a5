"""Keeping the history table bounded: thin old snapshots of finished batches."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import TERMINAL_STATUSES, BatchSnapshot


def thin_snapshots(*, now=None, chunk: int = 500) -> int:
    """For terminal batches unchanged for SNAPSHOT_RETENTION_DAYS, keep only the first and the last
    snapshot of each run of one status (so every status change stays). Returns the rows deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.SNAPSHOT_RETENTION_DAYS)
    rows = (
        BatchSnapshot.objects.filter(batch__status__in=TERMINAL_STATUSES, batch__last_changed_at__lt=cutoff)
        .order_by("batch_id", "version")
        .values_list("pk", "batch_id", "status")
    )
    doomed, previous = [], None  # previous = (batch_id, status, pk of a deletable candidate)
    deleted = 0
    for pk, batch_id, status in rows.iterator(chunk_size=2000):
        if previous and previous[0] == batch_id and previous[1] == status and previous[2] is not None:
            doomed.append(previous[2])  # a middle row of a run of one status
        keep_first = not previous or previous[0] != batch_id or previous[1] != status
        previous = (batch_id, status, None if keep_first else pk)
        if len(doomed) >= chunk:
            deleted += BatchSnapshot.objects.filter(pk__in=doomed).delete()[0]
            doomed = []
    if doomed:
        deleted += BatchSnapshot.objects.filter(pk__in=doomed).delete()[0]
    return deleted
