"""Changes to teams: grants, revokes and members. Each is checked against who makes it and audited.

`by` is the user making the change, or None for the command line (manage.py), which may do anything.
A user may change only the teams within their own reach (every grant of the team is on connections they
may already use at least as high), and may grant only what they may use themselves; superusers may do all.
"""

import logging

from django.core.exceptions import PermissionDenied
from django.db import transaction

from batches import audit as audit_trail
from batches.models import AuditEvent, Connection
from batches.selectors import scope

from .models import ProviderMembership, Team, TeamGrant

log = logging.getLogger(__name__)

COMMAND_LINE = "manage.py"


def audit(*, by, action: str, target: str, detail: str, connection: Connection | None = None) -> AuditEvent:
    """The one place access changes are written to the audit trail: grant and revoke (target: the team; no
    connection for all connections), member_add and member_remove (target: the user)."""
    return audit_trail.record(action, actor=by, username=COMMAND_LINE, target=target, detail=detail,
                              connection=connection)


def may_grant(by, *, connection: Connection | None, role: str) -> bool:
    return by is None or by.is_superuser or scope(by).covers(connection.pk if connection else None, role)


def may_manage(by, team: Team) -> bool:
    return by is None or by.is_superuser or all(
        may_grant(by, connection=grant.connection, role=grant.role) for grant in team.grants.all())


def _require_manage(by, team: Team) -> None:
    if not may_manage(by, team):
        raise PermissionDenied(f"Team {team.name} holds a grant beyond your own access.")


def _what(connection: Connection | None) -> str:
    return f"connection {connection.slug}" if connection else "all connections"


@transaction.atomic
def grant_access(*, team: Team, connection: Connection | None, role: str, by=None) -> TeamGrant:
    """Let the team use the connection (None: every connection) up to `role`; replaces an earlier grant's role."""
    _require_manage(by, team)
    if not may_grant(by, connection=connection, role=role):
        raise PermissionDenied(f"You cannot grant {_what(connection)} as {role}: it is beyond your own access.")
    grant, created = TeamGrant.objects.get_or_create(team=team, connection=connection, defaults={"role": role})
    if created or grant.role != role:
        before = "" if created else f" (was {grant.role})"
        grant.role = role
        grant.save(update_fields=["role"])
        audit(by=by, action="grant", target=f"team {team.name}", connection=connection,
              detail=f"{_what(connection)} as {role}{before}")
    return grant


@transaction.atomic
def revoke_access(*, team: Team, connection: Connection | None, by=None) -> bool:
    """Remove the team's grant of the connection (None: of all connections); False when there was none."""
    _require_manage(by, team)
    grant = TeamGrant.objects.filter(team=team, connection=connection).first()
    if grant is None:
        return False
    grant.delete()
    audit(by=by, action="revoke", target=f"team {team.name}", connection=connection,
          detail=f"{_what(connection)} (was {grant.role})")
    return True


@transaction.atomic
def add_member(*, team: Team, user, by=None) -> bool:
    """Add a member by hand. A membership the provider gave becomes a manual one: kept at the next log-in."""
    _require_manage(by, team)
    if team.members.filter(pk=user.pk).exists():
        if not ProviderMembership.objects.filter(team=team, user=user).delete()[0]:
            return False
        audit(by=by, action="member_add", target=user.get_username(),
              detail=f"kept in team {team.name} by hand (was by single sign-on)")
        return True
    team.members.add(user)
    audit(by=by, action="member_add", target=user.get_username(), detail=f"joined team {team.name}")
    return True


@transaction.atomic
def remove_member(*, team: Team, user, by=None) -> bool:
    _require_manage(by, team)
    if not team.members.filter(pk=user.pk).exists():
        return False
    team.members.remove(user)
    ProviderMembership.objects.filter(team=team, user=user).delete()  # given by the provider or not, it is gone
    audit(by=by, action="member_remove", target=user.get_username(), detail=f"left team {team.name}")
    return True


SINGLE_SIGN_ON = "single sign-on"


@transaction.atomic
def sync_provider_memberships(*, user, teams: dict[str, str]) -> None:
    """At a single sign-on log-in: the user is in exactly these teams through the provider ({team name: the
    provider group giving it}, from OIDC_GROUP_MAP). Memberships the provider gave and no longer gives end;
    memberships added by hand are never touched, and a team the user is already in by hand stays manual. Teams
    are not created here: a first team would suddenly hide every connection from everyone (see Team)."""
    wanted = {team.pk: team for team in Team.objects.filter(name__in=teams)}
    if missing := set(teams) - {team.name for team in wanted.values()}:
        log.warning("OIDC_GROUP_MAP names teams that do not exist: %s", ", ".join(sorted(missing)))
    given = {mark.team_id: mark for mark in ProviderMembership.objects.filter(user=user).select_related("team")}
    member_of = set(user.teams.values_list("pk", flat=True))
    for team_id, team in wanted.items():
        if team_id in member_of:
            continue
        team.members.add(user)
        ProviderMembership.objects.update_or_create(team=team, user=user, defaults={"group": teams[team.name]})
        audit_trail.record("member_add", username=SINGLE_SIGN_ON, target=user.get_username(),
                           detail=f"joined team {team.name} (provider group {teams[team.name]})")
    for team_id, mark in given.items():
        if team_id in wanted:
            continue
        mark.team.members.remove(user)
        mark.delete()
        audit_trail.record("member_remove", username=SINGLE_SIGN_ON, target=user.get_username(),
                           detail=f"left team {mark.team.name} (no longer in provider group {mark.group})")


@transaction.atomic
def delete_team(*, team: Team, by=None) -> None:
    """Deleting a team revokes its grants (each audited) and ends its members' access through it. Only a
    superuser deletes the last team: with no team at all, every role sees every connection again."""
    _require_manage(by, team)
    if by is not None and not by.is_superuser and not Team.objects.exclude(pk=team.pk).exists():
        raise PermissionDenied("Only a superuser may delete the last team: without teams, everyone sees every "
                               "connection.")
    for grant in team.grants.select_related("connection"):
        revoke_access(team=team, connection=grant.connection, by=by)
    team.delete()
