from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from accounts import identities
from accounts.models import OIDCIdentity
from teams.management.commands._common import user_named


class Command(BaseCommand):
    help = ("Let an identity provider account (issuer and subject, the ID token's iss and sub) log in as an existing "
            "user. Single sign-on never takes over an existing account by itself. Audited.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("issuer", help="the provider's issuer URL, as in OIDC_ISSUER")
        parser.add_argument("subject", help="the account's sub claim at the provider (not its e-mail address)")
        parser.add_argument("--unlink", action="store_true", help="remove the link instead")

    def handle(self, *args, username, issuer, subject, unlink, **options):
        user = user_named(username)
        if unlink:
            if not identities.unlink(user=user, issuer=issuer, subject=subject, by="manage.py"):
                raise CommandError(f"{username} is not linked to {subject} at {issuer}.")
            self.stdout.write(self.style.SUCCESS(f"{username} is no longer linked to {subject} at {issuer}."))
            return
        existing = (OIDCIdentity.objects.filter(issuer=issuer.rstrip("/"), subject=subject)
                    .select_related("user").first())
        if existing:
            raise CommandError(f"{subject} at {issuer} already logs in as {existing.user.get_username()}; "
                               "unlink it first (--unlink).")
        try:
            identities.link(user=user, issuer=issuer, subject=subject, by="manage.py")
        except IntegrityError:
            raise CommandError(f"{subject} at {issuer} was linked meanwhile.") from None
        superuser = " (a superuser: this provider account now has full control)" if user.is_superuser else ""
        self.stdout.write(self.style.SUCCESS(f"{subject} at {issuer} now logs in as {username}{superuser}."))
