from django.conf import settings
from django.db import models


class LoginThrottle(models.Model):
    """Log-in attempts that did not succeed within one window, for a username, an address, or both
    (an empty field means "any"). See throttle.py for the rules."""

    username = models.CharField(max_length=150, blank=True)
    ip = models.CharField("address", max_length=45, blank=True)
    failures = models.PositiveIntegerField(default=0)
    window_ends = models.DateTimeField()
    retry_at = models.DateTimeField("refused until", null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["username", "ip"], name="login_throttle_key")]
        indexes = [
            # forget_ended_windows()
            models.Index(fields=["window_ends"], name="login_throttle_window_ends"),
        ]

    def __str__(self) -> str:
        return f"{self.username or '*'} @ {self.ip or '*'}: {self.failures}"


class SessionEpoch(models.Model):
    """Raised by "log out everywhere": a session started under an older epoch has ended."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE,
                                related_name="session_epoch")
    epoch = models.PositiveIntegerField(default=0)
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.CharField(max_length=150, blank=True)


class OIDCIdentity(models.Model):
    """A user at an identity provider: (issuer, subject) is the only thing a single sign-on log-in is matched by.
    The provider's e-mail address can change hands; its subject never does (OpenID Connect Core 1.0, 5.7)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    linked_at = models.DateTimeField(auto_now_add=True)
    linked_by = models.CharField(max_length=150, help_text="first log-in, or who ran link_oidc")
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "single sign-on identity"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_once")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class BreakGlass(models.Model):
    """A superuser who may still log in with a password when LOCAL_LOGIN=0 (the provider is down, say). Each such
    log-in is audited as break_glass_login."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE,
                                related_name="break_glass")
    marked_at = models.DateTimeField(auto_now_add=True)
    marked_by = models.CharField(max_length=150)

    class Meta:
        verbose_name = verbose_name_plural = "break-glass account"

    def __str__(self) -> str:
        return str(self.user)
