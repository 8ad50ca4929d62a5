from django.core.management.base import BaseCommand

from batches.models import BatchCount
from batches.store import rebuild_batch_counts


def _kept() -> dict:
    return {(c, s, f): n for c, s, f, n in BatchCount.objects.values_list("connection_id", "status", "all_failed", "n")
            if n}


class Command(BaseCommand):
    help = ("Recount the batches per connection and status from the batch table (the list's status cards and "
            "counts read them); prints any count that was off.")

    def handle(self, *args, **options):
        kept = _kept()
        total = rebuild_batch_counts()
        recounted = _kept()
        for key in sorted(kept.keys() | recounted.keys()):
            if kept.get(key, 0) != recounted.get(key, 0):
                connection_id, status, all_failed = key
                self.stdout.write(f"connection {connection_id}, {status}{' (all failed)' if all_failed else ''}: "
                                  f"{kept.get(key, 0)} kept, {recounted.get(key, 0)} counted")
        self.stdout.write(f"Counted {total} batches.")
