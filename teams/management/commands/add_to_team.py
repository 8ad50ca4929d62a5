from teams import services

from ._common import MembershipCommand


class Command(MembershipCommand):
    help = "Put a user in a team (which must exist: grant_access creates teams). Audited."
    change = staticmethod(services.add_member)
    done, unchanged = "{username} is now in team {team!r}.", "{username} was already in team {team!r}."
