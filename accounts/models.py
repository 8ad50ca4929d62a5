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

