from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from batches.archive import plan_stored_batches


class Command(BaseCommand):
    help = ("Queue for the archive the files of batches already stored that finished within the last DAYS days "
            "(after upgrading, or after raising ARCHIVE_BACKFILL_DAYS); the archive queue then copies them while "
            "the API still has them.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=float, default=None,
                            help="how far back (default: ARCHIVE_BACKFILL_DAYS, or 30 when that is 0)")

    def handle(self, *args, days=None, **options):
        days = days if days is not None else (settings.ARCHIVE_BACKFILL_DAYS or 30)
        if days <= 0:
            raise CommandError("--days must be more than 0")
        if settings.ARCHIVE_FILES == "none":
            raise CommandError("ARCHIVE_FILES is none: nothing is archived")
        added = plan_stored_batches(days=days)
        self.stdout.write(f"Queued {added} files of batches that finished within {days:g} days for the archive.")
