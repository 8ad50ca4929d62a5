from django.core.management.base import BaseCommand

from teams import services

from ._common import team_named, user_named


class Command(BaseCommand):
    help = "Take a user out of a team. Audited."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("team")

    def handle(self, *args, username, team, **options):
        if services.remove_member(team=team_named(team), user=user_named(username)):
            self.stdout.write(self.style.SUCCESS(f"{username} is no longer in team {team!r}."))
        else:
            self.stdout.write(f"{username} was not in team {team!r}.")
