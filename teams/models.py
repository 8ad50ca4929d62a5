"""Teams say *where* a user may act: the connections granted to their teams. Roles say *what* (batches/0002_roles).

Who sees what is decided in one place, batches/selectors.py; writes go through teams/services.py (audited).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

VIEWER, OPERATOR = "viewer", "operator"
CEILINGS = [(VIEWER, "Viewer"), (OPERATOR, "Operator")]


class Team(models.Model):
    """People who share connections. Once one team exists, a user sees only what their teams are granted."""

    name = models.CharField(max_length=100, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="teams")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TeamGrant(models.Model):
    """A team may use one connection, or every connection when `connection` is empty, up to a ceiling role."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="grants")
    connection = models.ForeignKey("batches.Connection", null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="team_grants", help_text="Empty: all connections, present and future")
    role = models.CharField("up to", max_length=16, choices=CEILINGS, default=VIEWER,
                            help_text="Viewer: read only. Operator: also cancel, download and refresh, "
                                      "for members whose own role allows it.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team__name", "connection__name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "connection"], condition=Q(connection__isnull=False),
                                    name="team_grant_once_per_connection"),
            models.UniqueConstraint(fields=["team"], condition=Q(connection__isnull=True),
                                    name="team_grant_all_once"),
        ]

    def __str__(self) -> str:
        return f"{self.team}: {self.connection or 'all connections'} up to {self.role}"


class ProviderMembership(models.Model):
    """A membership the identity provider gave (OIDC_GROUP_MAP): set and taken away at each single sign-on log-in.
    A membership in Team.members without one of these was added by hand and is never touched by a log-in."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="provider_memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="provider_memberships")
    group = models.CharField(max_length=255, help_text="the provider group that gave it")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="provider_membership_once")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} (from {self.group})"
