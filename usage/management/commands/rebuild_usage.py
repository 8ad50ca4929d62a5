import time

from django.core.management.base import BaseCommand

from usage.rollup import rebuild


class Command(BaseCommand):
    help = ("Recompute the daily usage rollup (the usage page, budgets, timing baselines, /metrics) from every "
            "stored batch. Run it after changing USAGE_METADATA_KEYS. Syncs wait while it runs on PostgreSQL.")

    def handle(self, *args, **options):
        started = time.monotonic()
        counted = rebuild()
        self.stdout.write(f"Rolled up {counted:,} batches in {time.monotonic() - started:.1f} s.")
