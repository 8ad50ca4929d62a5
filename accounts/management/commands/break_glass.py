from django.core.management.base import BaseCommand, CommandError

from accounts import identities
from teams.management.commands._common import user_named


class Command(BaseCommand):
    help = ("Mark a superuser as break-glass: with LOCAL_LOGIN=0 only break-glass accounts may still log in with a "
            "password (on /login/ and /admin/login/), and every such log-in is audited. --off removes the mark.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--off", action="store_true", help="remove the mark")

    def handle(self, *args, username, off, **options):
        user = user_named(username)
        try:
            changed = identities.mark_break_glass(user=user, on=not off, by="manage.py")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        state = "no longer a break-glass account" if off else "a break-glass account"
        if changed:
            self.stdout.write(self.style.SUCCESS(f"{username} is {state}."))
        else:
            self.stdout.write(f"{username} was already {state}.")
