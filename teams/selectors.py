"""The access review: who may use which connection, and how, as batches/selectors.py decides it."""

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model

from batches.models import Connection
from batches.selectors import ACTIONS, UNLIMITED, effective_actions, scope_from_grants, visible_connections

from .models import Team, TeamGrant


def level(actions: set[str]) -> str:
    """How an access reads on the page: operator (may act), viewer (may read), or "" (none)."""
    return "operator" if actions - {"view"} else "viewer" if actions else ""


@dataclass
class UserAccess:
    user: object
    roles: list[str]
    teams: list[str]
    provider_teams: set[str] = field(default_factory=set)  # the teams of `teams` single sign-on gave
    single_sign_on: bool = False  # logs in with single sign-on: their other memberships read "manual"
    everywhere: str = ""  # their level on every connection, present and future, when they have one
    connections: list[tuple[Connection, str]] = field(default_factory=list)  # (connection, level) otherwise


@dataclass
class ConnectionAccess:
    connection: Connection
    grants: list[TeamGrant]
    users: list[tuple[object, str, str]] = field(default_factory=list)  # (user, level, through what)


def _role_actions(user) -> set[str]:
    """As user.has_perm would answer, from the prefetched groups and permissions (no query per user)."""
    if user.is_superuser:
        return set(ACTIONS)
    perms = {p.codename for p in user.user_permissions.all() if p.content_type.app_label == "batches"}
    perms |= {p.codename for g in user.groups.all() for p in g.permissions.all()
              if p.content_type.app_label == "batches"}
    return {action for action, perm in ACTIONS.items() if perm in perms}


def _through(user, connection: Connection, teams_exist: bool) -> str:
    if user.is_superuser:
        return "superuser"
    if not teams_exist:
        return "no teams are defined"
    return ", ".join(t.name for t in user.teams.all() for g in t.grants.all()
                     if g.connection_id in (None, connection.pk))


def access_review(*, viewer) -> tuple[list[ConnectionAccess], list[UserAccess], bool]:
    """Per connection the viewer may see, and per active user: who may do what there, and through what."""
    teams_exist = Team.objects.exists()
    connections = list(visible_connections(viewer))
    grants = list(TeamGrant.objects.select_related("team", "connection"))
    by_connection = [ConnectionAccess(c, [g for g in grants if g.connection_id in (None, c.pk)]) for c in connections]
    users = get_user_model().objects.filter(is_active=True).order_by("username").prefetch_related(
        "groups__permissions__content_type", "user_permissions__content_type", "teams__grants",
        "provider_memberships__team", "oidc_identities")
    by_user = []
    for user in users:
        actions = _role_actions(user)
        user_scope = UNLIMITED if user.is_superuser or not teams_exist else scope_from_grants(
            (g.connection_id, g.role) for t in user.teams.all() for g in t.grants.all())
        row = UserAccess(user, [g.name for g in user.groups.all()], [t.name for t in user.teams.all()],
                         provider_teams={m.team.name for m in user.provider_memberships.all()},
                         single_sign_on=bool(user.oidc_identities.all()),
                         everywhere=level(effective_actions(actions, user_scope.everywhere)))
        for entry in by_connection:
            reach = level(effective_actions(actions, user_scope.ceiling(entry.connection.pk)))
            if reach:
                entry.users.append((user, reach, _through(user, entry.connection, teams_exist)))
                if not row.everywhere or reach != row.everywhere:
                    row.connections.append((entry.connection, reach))
        by_user.append(row)
    return by_connection, by_user, teams_exist
