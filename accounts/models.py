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
