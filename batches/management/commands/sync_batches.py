import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from batches.models import Connection
from batches.sync import due_connection_ids, sync_connection


class Command(BaseCommand):
    help = "Sync batches from the API without a broker; prints one summary line per connection."

    def add_arguments(self, parser):
        parser.add_argument("--connection", metavar="SLUG", help="only this connection")
        parser.add_argument("--full", action="store_true", help="walk every page of the batch list")
        parser.add_argument("--loop", action="store_true",
                            help="keep going: sync each connection whenever it is due (Ctrl-C stops)")

    def handle(self, *args, connection=None, full=False, loop=False, **options):
        connections = Connection.objects.filter(enabled=True)
        if connection:
            connections = Connection.objects.filter(slug=connection)
            if not connections.exists():
                raise CommandError(f"No connection with slug {connection!r}")
        ids = list(connections.values_list("pk", flat=True))
        if not ids:
            raise CommandError("No enabled connection. Add one with `manage.py add_connection`.")
        for pk in ids:
            self.stdout.write(sync_connection(connection_id=pk, full=full).summary())
        while loop:
            time.sleep(settings.SYNC_TICK_SECONDS)
            for pk in due_connection_ids(only=ids):  # claims only these: other schedules stay as they are
                self.stdout.write(sync_connection(connection_id=pk).summary())
