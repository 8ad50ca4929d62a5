from teams import services

from ._common import MembershipCommand


class Command(MembershipCommand):
    help = "Take a user out of a team. Audited."
    change = staticmethod(services.remove_member)
    done, unchanged = "{username} is no longer in team {team!r}.", "{username} was not in team {team!r}."
