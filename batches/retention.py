"""Keeping the history table bounded: thin old snapshots of finished batches."""

from datetime import timedelta

from django.conf import settings
from django.db.models import F, Window
from django.db.models.functions import Lag, Lead
from django.utils import timezone

from .models import TERMINAL_STATUSES, Batch, BatchSnapshot, SnapshotRetention


def thin_snapshots(*, now=None, chunk: int = 2000) -> int:
    """For terminal batches unchanged for SNAPSHOT_RETENTION_DAYS, keep only the first and the last
    snapshot of each run of one status (so every status change stays). Returns the rows deleted.

    A run looks only at the batches whose last change crossed the cutoff since the previous run (the
    high-water mark in SnapshotRetention): a batch that changes again later crosses again. The first run
    looks at every batch older than the cutoff."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.SNAPSHOT_RETENTION_DAYS)
    mark = SnapshotRetention.objects.values_list("thinned_until", flat=True).first()
    if mark is not None and mark >= cutoff:
        return 0
    crossed = Batch.objects.filter(status__in=TERMINAL_STATUSES, last_changed_at__lt=cutoff)
    if mark is not None:
        crossed = crossed.filter(last_changed_at__gte=mark)
    batch_ids = list(crossed.values_list("pk", flat=True))
    deleted = 0
    for start in range(0, len(batch_ids), chunk):
        deleted += _thin(batch_ids[start:start + chunk])
    if not SnapshotRetention.objects.filter(pk=1).update(thinned_until=cutoff):
        SnapshotRetention.objects.update_or_create(pk=1, defaults={"thinned_until": cutoff})
    return deleted


def _thin(batch_ids: list[int]) -> int:
    """Delete the snapshots of these batches whose neighbours on both sides have the same status."""
    by_version = {"partition_by": [F("batch_id")], "order_by": F("version").asc()}
    middle = (BatchSnapshot.objects.filter(batch_id__in=batch_ids)
              .annotate(before=Window(Lag("status"), **by_version), after=Window(Lead("status"), **by_version))
              .filter(before=F("status"), after=F("status")).values_list("pk", flat=True))
    doomed = list(middle)
    return BatchSnapshot.objects.filter(pk__in=doomed).delete()[0] if doomed else 0
