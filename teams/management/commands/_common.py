"""What the team commands share: finding the team, the connection and the user named on the command line."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from batches.models import Connection
from teams.models import Team


def connection_named(slug: str | None) -> Connection | None:
    if slug is None:
        return None  # --all-connections
    connection = Connection.objects.filter(slug=slug).first()
    if connection is None:
        raise CommandError(f"No connection with slug {slug!r}.")
    return connection


def team_named(name: str) -> Team:
    team = Team.objects.filter(name=name).first()
    if team is None:
        raise CommandError(f"No team named {name!r} (grant_access creates teams).")
    return team


def user_named(username: str):
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user named {username!r}.")
    return user


def add_target_arguments(parser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--connection", metavar="SLUG", help="the connection's slug")
    target.add_argument("--all-connections", action="store_true", help="every connection, present and future")


class MembershipCommand(BaseCommand):
    """USERNAME TEAM, then `change` (a teams.services function); `done` or `unchanged` says what happened."""

    change = None
    done = unchanged = ""

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("team")

    def handle(self, *args, username, team, **options):
        if self.change(team=team_named(team), user=user_named(username)):
            self.stdout.write(self.style.SUCCESS(self.done.format(username=username, team=team)))
        else:
            self.stdout.write(self.unchanged.format(username=username, team=team))
