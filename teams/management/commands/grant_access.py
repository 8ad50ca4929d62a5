from django.core.management.base import BaseCommand

from teams import services
from teams.models import CEILINGS, Team

from ._common import add_target_arguments, connection_named


class Command(BaseCommand):
    help = ("Let a team use a connection (or every connection) up to a role; creates the team if it is missing. "
            "Running it again with another role changes the role. Audited.")

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, metavar="NAME")
        add_target_arguments(parser)
        parser.add_argument("--role", required=True, choices=[value for value, _ in CEILINGS],
                            help="the most members may do there; each member's own role still applies")

    def handle(self, *args, team, connection, all_connections, role, **options):
        target = connection_named(connection)
        team_obj, created = Team.objects.get_or_create(name=team)
        if created:
            self.stdout.write(f"Created team {team!r}.")
        services.grant_access(team=team_obj, connection=target, role=role)
        where = f"connection {target.slug!r}" if target else "every connection"
        self.stdout.write(self.style.SUCCESS(f"Team {team!r} may use {where} as {role}."))
