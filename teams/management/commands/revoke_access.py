from django.core.management.base import BaseCommand

from teams import services

from ._common import add_target_arguments, connection_named, team_named


class Command(BaseCommand):
    help = "Remove a team's grant of a connection (or of every connection). Audited; nothing to revoke is not an error."

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, metavar="NAME")
        add_target_arguments(parser)

    def handle(self, *args, team, connection, all_connections, **options):
        target = connection_named(connection)
        where = f"connection {target.slug!r}" if target else "every connection"
        if services.revoke_access(team=team_named(team), connection=target):
            self.stdout.write(self.style.SUCCESS(f"Team {team!r} may no longer use {where}."))
        else:
            self.stdout.write(f"Team {team!r} had no grant of {where}; nothing to revoke.")
