import time

from django.core.management.base import BaseCommand

from usage.prices import reprice
from usage.rollup import rebuild


class Command(BaseCommand):
    help = ("Recompute the daily usage rollup (the usage page, budgets, timing baselines, /metrics) from every "
            "stored batch, and every batch's stored cost. Run it after changing USAGE_METADATA_KEYS. Syncs wait "
            "while the rollup is rebuilt on PostgreSQL.")

    def handle(self, *args, **options):
        started = time.monotonic()
        counted = rebuild()
        self.stdout.write(f"Rolled up {counted:,} batches in {time.monotonic() - started:.1f} s.")
        started = time.monotonic()
        changed = reprice()
        self.stdout.write(f"Re-priced {changed:,} batches in {time.monotonic() - started:.1f} s.")
