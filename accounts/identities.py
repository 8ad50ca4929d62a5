"""Who a single sign-on log-in is, and what access it brings: plain functions under accounts/oidc.py.

1. The claims must carry a verified e-mail address in OIDC_ALLOWED_EMAIL_DOMAINS.
2. The user is found by (issuer, subject) alone. Without a link, a new user is created, unless a local account
   already has that e-mail address or username: it is never taken over (least of all a superuser) until an
   administrator links it with `manage.py link_oidc`.
3. OIDC_GROUP_MAP turns the groups claim into a role (the strongest mapped) and team memberships; both are set at
   every log-in and refresh. Memberships added by hand are left alone (teams/services.py).

Also here: break-glass accounts, the only password log-ins left when LOCAL_LOGIN=0.
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from batches import audit
from teams import services as team_services

from .models import BreakGlass, OIDCIdentity

log = logging.getLogger(__name__)

SINGLE_SIGN_ON = team_services.SINGLE_SIGN_ON  # who the audit trail says made the changes a log-in brings


class Refused(Exception):
    """A single sign-on log-in refused; the message is for the person, `detail` for the audit trail."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


def email_domain_allowed(email: str) -> bool:
    domain = email.rpartition("@")[2].lower()
    return bool(domain) and any(domain == allowed or (allowed.startswith(".") and domain.endswith(allowed))
                                for allowed in settings.OIDC_ALLOWED_EMAIL_DOMAINS)


def check_claims(claims: dict) -> str:
    """The claims' e-mail address, if it may log in; Refused otherwise."""
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise Refused("Your identity provider did not share your e-mail address, so you were not logged in.",
                      "no email claim")
    # Some providers send the JSON string "true"; nothing else counts as verified.
    if claims.get("email_verified") not in (True, "true"):
        raise Refused(f"Your e-mail address {email} is not verified at your identity provider, so you were not "
                      "logged in.", f"email {email} not verified")
    if not email_domain_allowed(email):
        raise Refused(f"{email} is not in a domain allowed to log in here.", f"email {email} outside allowed domains")
    return email


def log_in(claims: dict, *, request=None):
    """The user these verified claims are, with their role and teams brought up to date (steps 1-3)."""
    email = check_claims(claims)
    user = _linked_user(claims["iss"], claims["sub"]) or _new_user(claims, email, request=request)
    if not user.is_active:
        raise Refused("Your account here is deactivated.", f"user {user.get_username()} is inactive")
    apply_groups(user, claims)
    return user


def _linked_user(issuer: str, subject: str):
    identity = OIDCIdentity.objects.select_related("user").filter(issuer=issuer, subject=str(subject)).first()
    if identity is None:
        return None
    OIDCIdentity.objects.filter(pk=identity.pk).update(last_login_at=timezone.now())
    return identity.user


def _new_user(claims: dict, email: str, *, request=None):
    User = get_user_model()
    username = email.lower()[:150]
    if User.objects.filter(username__iexact=username).exists() or User.objects.filter(email__iexact=email).exists():
        raise Refused(
            f"An account for {email} already exists here. An administrator must link it to your identity provider "
            "account (manage.py link_oidc) before you can log in with it.",
            # What `manage.py link_oidc` needs, should the administrator decide it is the same person.
            f"{email} matches an existing local account; not linked (sub {claims['sub']} at {claims['iss']})")
    try:
        with transaction.atomic():
            user = User.objects.create_user(username, email=email, first_name=str(claims.get("given_name", ""))[:150],
                                            last_name=str(claims.get("family_name", ""))[:150])  # no usable password
            OIDCIdentity.objects.create(user=user, issuer=claims["iss"], subject=str(claims["sub"]),
                                        linked_by="first log-in", last_login_at=timezone.now())
    except IntegrityError:  # the same person's first log-in in another tab, at the same moment
        raise Refused("Your account was being created by another log-in. Please try again.",
                      f"{email}: concurrent first log-in") from None
    audit.record("user_created", username=SINGLE_SIGN_ON, request=request, target=username,
                 detail=f"first log-in from {claims['iss']}")
    return user


def provider_groups(claims: dict) -> list[str]:
    """The groups claim as a list of names: a list of strings, or one string; anything else counts as none."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [group for group in value if isinstance(group, str)]
    return []


def mapped_access(groups: list[str]) -> tuple[str | None, dict[str, str]]:
    """(the strongest role the groups map to, or None; {team name: the group that gives it})."""
    ranks = {name: rank for rank, name in enumerate(settings.ROLE_NAMES)}
    role, teams = None, {}
    for group in groups:
        entry = settings.OIDC_GROUP_MAP.get(group)
        if entry is None:
            continue
        if entry.get("role") and (role is None or ranks[entry["role"]] > ranks[role]):
            role = entry["role"]
        for team in entry.get("teams", []):
            teams.setdefault(team, group)
    return role, teams


@transaction.atomic
def apply_groups(user, claims: dict) -> None:
    role, teams = mapped_access(provider_groups(claims))
    set_role(user, role)
    team_services.sync_provider_memberships(user=user, teams=teams)


def set_role(user, role: str | None) -> None:
    """Make `role` (None: no role) the user's only role group; other groups are not roles and stay."""
    current = set(user.groups.filter(name__in=settings.ROLE_NAMES).values_list("name", flat=True))
    wanted = {role} if role else set()
    if current == wanted:
        return
    if current - wanted:
        user.groups.remove(*Group.objects.filter(name__in=current - wanted))
    if wanted - current:
        group = Group.objects.filter(name=role).first()
        if group is None:
            log.warning("OIDC_GROUP_MAP names role %s, but no such group exists", role)
            return
        user.groups.add(group)
    for cache in ("_perm_cache", "_group_perm_cache"):  # the user object goes on to log in
        user.__dict__.pop(cache, None)
    changes = [*(f"+{name}" for name in wanted - current), *(f"-{name}" for name in current - wanted)]
    audit.record("role_changed", username=SINGLE_SIGN_ON, target=user.get_username(),
                 detail=f"groups {' '.join(sorted(changes))} (from the provider's groups)")


def link(*, user, issuer: str, subject: str, by: str) -> OIDCIdentity:
    """Let the provider's (issuer, subject) log in as this existing user (manage.py link_oidc). Audited."""
    identity = OIDCIdentity.objects.create(user=user, issuer=issuer.rstrip("/"), subject=subject, linked_by=by)
    audit.record("oidc_linked", username=by, target=user.get_username(), detail=f"{subject} at {identity.issuer}")
    return identity


def unlink(*, user, issuer: str, subject: str, by: str) -> bool:
    deleted, _ = OIDCIdentity.objects.filter(user=user, issuer=issuer.rstrip("/"), subject=subject).delete()
    if deleted:
        audit.record("oidc_unlinked", username=by, target=user.get_username(), detail=f"{subject} at {issuer}")
    return bool(deleted)


def is_break_glass(user) -> bool:
    return user.is_superuser and BreakGlass.objects.filter(user=user).exists()


def mark_break_glass(*, user, on: bool, by: str) -> bool:
    """Mark (or unmark) a superuser as break-glass; False when nothing changed. Audited."""
    if on:
        if not user.is_superuser:
            raise ValueError("Only a superuser can be a break-glass account.")
        _, changed = BreakGlass.objects.get_or_create(user=user, defaults={"marked_by": by})
    else:
        changed = BreakGlass.objects.filter(user=user).delete()[0] > 0
    if changed:
        audit.record("break_glass_on" if on else "break_glass_off", username=by, target=user.get_username())
    return changed


def password_login_allowed(user, *, request=None) -> bool:
    """Whether this user, whose password was right, may log in with it. Break-glass log-ins are audited."""
    if is_break_glass(user):
        audit.record("break_glass_login", actor=user, request=request,
                     detail="password log-in" + ("" if settings.LOCAL_LOGIN else " while LOCAL_LOGIN=0"))
        return True
    if settings.LOCAL_LOGIN:
        return True
    audit.record("login_refused", username=user.get_username(), request=request, ok=False,
                 detail="password log-in is off (LOCAL_LOGIN=0)")
    return False
