"""Spend, usage and timing: prices with a valid-from date, a daily rollup of every batch's usage and phase
durations (kept by batches/store.py on every change, rebuilt by `manage.py rebuild_usage`), and budgets.

The rollup holds tokens, never money: cost is priced when read, per day and model, so that editing a price
re-prices history at once, each day at the price of its time.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from batches.models import Connection

# The phases timed per model and endpoint; each is the time between two of the API's status timestamps.
PHASES = ["validating", "in_progress", "finalizing", "cancelling", "end_to_end"]
PHASE_LABELS = {"validating": "validating", "in_progress": "in progress", "finalizing": "finalizing",
                "cancelling": "cancelling", "end_to_end": "end to end"}


class ModelPrice(models.Model):
    """USD per million tokens for a model (or a prefix: `gpt-4o` prices `gpt-4o-2024-08-06`), from a day on."""

    model = models.CharField(max_length=255, help_text="A model name; it also prices its dated snapshots "
                                                       "(gpt-4o: gpt-4o-2024-08-06). End it with * to price every "
                                                       "model starting so (ft:gpt-4o-mini*)")
    valid_from = models.DateField(help_text="Batches created on or after this day (UTC) are priced by this row, "
                                            "until a later row of the same model")
    input = models.DecimalField("input", max_digits=12, decimal_places=4, help_text="USD per 1M input tokens")
    cached_input = models.DecimalField("cached input", max_digits=12, decimal_places=4,
                                       help_text="USD per 1M cached input tokens")
    output = models.DecimalField("output", max_digits=12, decimal_places=4, help_text="USD per 1M output tokens")
    source = models.CharField(max_length=200, blank=True, help_text="Where the numbers come from, and when")
    updated = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        ordering = ["model", "-valid_from"]
        constraints = [models.UniqueConstraint(fields=["model", "valid_from"], name="model_price_once_per_day")]

    def __str__(self) -> str:
        return f"{self.model} from {self.valid_from}"

    def described(self) -> tuple[str, str]:
        """Its audit trail's target and detail."""
        return self.model, f"from {self.valid_from}: {self.input}/{self.cached_input}/{self.output} per 1M"


class DailyUsage(models.Model):
    """The usage of the batches created on one day (UTC), per connection, model and endpoint. Rows with an
    empty `meta_key` count every batch once; a row per key of USAGE_METADATA_KEYS counts them again by that
    key's value (empty: the batch has no such key), so a chart can stack by `team` without reading batches."""

    day = models.DateField()
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=255)
    endpoint = models.CharField(max_length=255)
    meta_key = models.CharField(max_length=64)
    meta_value = models.CharField(max_length=100)
    batches = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(default=0)
    completed = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # the store's upsert, and the usage page's period scans (day first)
            models.UniqueConstraint(fields=["day", "meta_key", "connection", "model", "endpoint", "meta_value"],
                                    name="daily_usage_key"),
        ]


class DailyDuration(models.Model):
    """A histogram of how long one phase took, for the batches created on one day, per connection, model and
    endpoint: `n` batches took between BUCKETS[bucket] and BUCKETS[bucket + 1] seconds (usage/baselines.py)."""

    day = models.DateField()
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=255)
    endpoint = models.CharField(max_length=255)
    phase = models.CharField(max_length=16)
    bucket = models.PositiveSmallIntegerField()
    n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # the store's upsert, and the timing table's period scans (day first)
            models.UniqueConstraint(fields=["day", "connection", "model", "endpoint", "phase", "bucket"],
                                    name="daily_duration_key"),
        ]


class Budget(models.Model):
    """An amount of estimated spend per month or week, for the batches that match every scope given."""

    MONTH, WEEK = "month", "week"
    PERIODS = [(MONTH, "per calendar month"), (WEEK, "per week (Monday to Sunday, UTC)")]

    name = models.CharField(max_length=100)
    amount_usd = models.DecimalField("amount (USD)", max_digits=12, decimal_places=2)
    period = models.CharField(max_length=8, choices=PERIODS, default=MONTH)
    connection = models.ForeignKey(Connection, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                   help_text="Empty: every connection")
    model = models.CharField(max_length=255, blank=True, help_text="Empty: every model. It counts the models a "
                                                                   "price row of this name prices")
    meta_key = models.CharField("metadata key", max_length=64, blank=True,
                                help_text="One of USAGE_METADATA_KEYS, e.g. team; empty: any")
    meta_value = models.CharField("metadata value", max_length=100, blank=True)
    created = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def described(self) -> tuple[str, str]:
        """Its audit trail's target and detail."""
        return self.name, f"${self.amount_usd} a {self.period}, {self.scope_text}"

    @property
    def scope_text(self) -> str:
        parts = [f"connection {self.connection.name}" if self.connection_id else "every connection"]
        if self.model:
            parts.append(f"model {self.model}")
        if self.meta_key:
            parts.append(f"{self.meta_key}={self.meta_value}")
        return ", ".join(parts)
