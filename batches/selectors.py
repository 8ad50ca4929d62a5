"""What a user may see and do: every page, fragment, count, download and action gets its batches and
connections here, so access scoping has exactly one home.

Roles (Viewer, Operator, Admin) say *what* a user may do; team grants (teams/models.py) say *where*. Once one
team exists, a user sees only the connections granted to their teams, and on each may do what their role
allows, capped by the best grant (viewer: read; operator: also cancel, download, refresh). Superusers, and
members of a team granted all connections, see every connection. With no team at all, every role sees
everything, as before teams existed.
"""

from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery

from teams.models import OPERATOR, VIEWER, Team

from .models import AuditEvent, Batch, Connection

# What a user may do with a batch, and the permission their role must hold for it.
ACTIONS = {"view": "view_batch", "cancel": "cancel_batch", "download": "download_batch_file",
           "refresh": "refresh_batch"}
CEILING_ACTIONS = {VIEWER: {"view"}, OPERATOR: set(ACTIONS)}
_RANK = {None: 0, VIEWER: 1, OPERATOR: 2}


def _best(a: str | None, b: str | None) -> str | None:
    return a if _RANK[a] >= _RANK[b] else b


@dataclass(frozen=True)
class Scope:
    """Where a user may act: a ceiling over every connection (`everywhere`), and one per granted connection."""

    everywhere: str | None = None
    grants: dict[int, str] = field(default_factory=dict)

    def ceiling(self, connection_id: int) -> str | None:
        return _best(self.everywhere, self.grants.get(connection_id))

    def covers(self, connection_id: int | None, role: str) -> bool:
        """May act on this connection (None: on all connections) at least as `role`."""
        ceiling = self.everywhere if connection_id is None else self.ceiling(connection_id)
        return _RANK[ceiling] >= _RANK[role]


UNLIMITED = Scope(everywhere=OPERATOR)


def scope_from_grants(grants) -> Scope:
    """The best ceiling per connection over (connection id or None, role) pairs."""
    everywhere, per_connection = None, {}
    for connection_id, role in grants:
        if connection_id is None:
            everywhere = _best(everywhere, role)
        else:
            per_connection[connection_id] = _best(per_connection.get(connection_id), role)
    return Scope(everywhere, per_connection)


def _read_scope(user) -> Scope:
    """One query: the grants of the user's teams, plus one row of any team, so that no row means no team at all."""
    membership = Team.members.through.objects.filter(team=OuterRef("pk"), user=user)
    rows = list(Team.objects.annotate(member=Exists(membership))
                .filter(Q(member=True) | Q(pk=Subquery(Team.objects.order_by("pk").values("pk")[:1])))
                .values_list("member", "grants__connection_id", "grants__role"))
    if not rows:
        return UNLIMITED
    return scope_from_grants((connection_id, role) for member, connection_id, role in rows if member and role)


def scope(user) -> Scope:
    """The user's scope, read once per user object (a request's user), like Django's own permission cache."""
    if not hasattr(user, "_batchboard_scope"):
        if not user.is_active:
            user._batchboard_scope = Scope()
        elif user.is_superuser:
            user._batchboard_scope = UNLIMITED
        else:
            user._batchboard_scope = _read_scope(user)
    return user._batchboard_scope


def role_actions(user) -> set[str]:
    return {action for action, perm in ACTIONS.items() if user.has_perm(f"batches.{perm}")}


def effective_actions(actions: set[str], ceiling: str | None) -> set[str]:
    """A role's actions capped by a grant's ceiling; nothing at all without "view" (every page needs it)."""
    allowed = actions & CEILING_ACTIONS.get(ceiling, set())
    return allowed if "view" in allowed else set()


def rights(user, connection: Connection) -> dict[str, bool]:
    """What the user may do on this connection's batches: their role's actions capped by their best grant."""
    allowed = effective_actions(role_actions(user), scope(user).ceiling(connection.pk))
    return {action: action in allowed for action in ACTIONS}


def visible_connection_ids(user) -> list[int] | None:
    """The ids of the connections the user may see; None means every connection, present and future."""
    if not user.has_perm("batches.view_batch"):
        return []
    user_scope = scope(user)
    return None if user_scope.everywhere else sorted(user_scope.grants)


def only_visible(queryset: QuerySet, user, *, connection: str = "connection") -> QuerySet:
    """The rows of `queryset` whose connection (the field path `connection`) the user may see."""
    ids = visible_connection_ids(user)
    return queryset if ids is None else queryset.filter(**{f"{connection}__in": ids})


def visible_connections(user) -> QuerySet[Connection]:
    return only_visible(Connection.objects.all(), user, connection="pk")


def visible_batches(user) -> QuerySet[Batch]:
    return only_visible(Batch.objects.all(), user)


def visible_audit_events(user, events: QuerySet[AuditEvent] | None = None) -> QuerySet[AuditEvent]:
    """Events (of `events`, or all) on the user's connections, and events on no connection (such as grants
    of all connections)."""
    ids = visible_connection_ids(user)
    events = AuditEvent.objects.all() if events is None else events
    return events if ids is None else events.filter(Q(connection__in=ids) | Q(connection__isnull=True))
