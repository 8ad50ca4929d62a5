from datetime import timedelta
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.http.request import validate_host
from django.utils import timezone
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

ACTIVE_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
KNOWN_STATUSES = ACTIVE_STATUSES + TERMINAL_STATUSES
CANCELLABLE_STATUSES = ("validating", "in_progress", "finalizing")
# States that normally last minutes: polled faster, and flagged when they last too long.
TRANSITIONAL_STATUSES = ("validating", "finalizing", "cancelling")
# The API timestamp that records entering each status.
STATUS_TIMESTAMP = {
    "validating": "created_at",
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}
TIMESTAMP_FIELDS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
FILE_KINDS = ("input", "output", "error")
# A `completed` batch whose every request failed (Batch.all_requests_failed, as a query).
ALL_FAILED = models.Q(status="completed", completed_requests__lte=0, failed_requests__gt=0)
# How a server orders GET /batches (OpenAI: newest first); detected from the first page it sends.
NEWEST_FIRST, OLDEST_FIRST = "newest_first", "oldest_first"
KEY_UNREADABLE = "API key unreadable: enter it again"
# Where a connection's key is sent: changing any of these needs the key entered again.
KEY_DESTINATION = ("base_url", "organization", "project")


class KeyUnreadable(Exception):
    """The stored API key cannot be decrypted with any of BATCHBOARD_ENCRYPTION_KEYS."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "BATCHBOARD_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes)"
        ) from None


def encrypt_secret(plain: str) -> str:
    return _fernet(tuple(settings.ENCRYPTION_KEYS)).encrypt(plain.encode()).decode()


def decrypt_secret(token: str) -> str:
    try:
        return _fernet(tuple(settings.ENCRYPTION_KEYS)).decrypt(token.encode()).decode()
    except InvalidToken:
        raise KeyUnreadable(f"{KEY_UNREADABLE} (it was encrypted with a key that is no longer in "
                            "BATCHBOARD_ENCRYPTION_KEYS)") from None


def _api_host(base_url: str) -> str:
    """The host a request to `base_url` goes to, read as requests reads it (urllib3's parser): a URL such as
    `http://evil\\@api.openai.com` names another host to urllib.parse."""
    try:
        return (parse_url(base_url).host or "").strip("[]").lower()
    except LocationParseError:
        return ""


def api_host_problem(base_url: str) -> str:
    """Why a key may not be sent to `base_url` (ALLOWED_API_HOSTS), or "" when it may."""
    allowed = settings.ALLOWED_API_HOSTS
    host = _api_host(base_url)
    if not allowed or (host and validate_host(host, allowed)):
        return ""
    return f"{host or base_url} is not in ALLOWED_API_HOSTS: no API key is sent there"


def default_poll_interval() -> int:
    return int(settings.SYNC_ACTIVE_INTERVAL)


class Connection(models.Model):
    """One API account (key + base URL, optionally an organization/project) that Batchboard watches."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True)
    base_url = models.URLField(max_length=500, default=settings.API_DEFAULT_BASE_URL)
    api_key_encrypted = models.TextField(editable=False)
    # The signing secret (whsec_…) of the OpenAI project's webhook endpoint; empty: webhooks are refused.
    webhook_secret_encrypted = models.TextField(blank=True, editable=False)
    organization = models.CharField(max_length=100, blank=True, help_text="Sent as OpenAI-Organization")
    project = models.CharField(max_length=100, blank=True, help_text="Sent as OpenAI-Project")
    enabled = models.BooleanField(default=True)
    poll_interval = models.PositiveIntegerField(
        default=default_poll_interval,
        help_text="Seconds between syncs while batches are active; idle connections sync less often",
    )
    created = models.DateTimeField(default=timezone.now)

    # Sync health and scheduling (written by batches/sync.py only).
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    warning = models.TextField(blank=True, help_text="Why the list looked inconsistent; cleared by a clean full walk")
    next_sync_at = models.DateTimeField(null=True, blank=True)
    # The interval the last successful cycle scheduled: the data is stale once it is overdue.
    sync_interval = models.FloatField(null=True, blank=True)
    full_walk_due = models.BooleanField(default=True)
    # Where a full walk stands (saved after every page); the next cycle goes on from there.
    walk_cursor = models.CharField(max_length=255, blank=True)
    walk_anomaly = models.BooleanField(default=False)  # the walk under way has seen an inconsistency
    walk_unreadable = models.PositiveIntegerField(default=0)  # batches the walk under way could not read
    last_full_walk_at = models.DateTimeField(null=True, blank=True)
    # When the first full walk completed (a walk given up on an inconsistent list does not count): changes seen
    # before it are the account's history, and never alert (notifications/events.py).
    imported_at = models.DateTimeField(null=True, blank=True, editable=False)
    list_order = models.CharField(max_length=16, blank=True, choices=[(NEWEST_FIRST, "newest first"),
                                                                      (OLDEST_FIRST, "oldest first")])
    # Oldest-first servers: the last batch id read at the end of the list; each cycle reads after it.
    tail_cursor = models.CharField(max_length=255, blank=True)
    unreadable_batches = models.PositiveIntegerField(default=0, help_text="Batches whose payload could not be read")
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=64, blank=True)
    # Bumped whenever one of its batches is added or visibly changes: the pages' cheap change token.
    data_version = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]
        indexes = [
            # sync_due_connections: enabled connections whose next sync time has come
            models.Index(fields=["enabled", "next_sync_at"], name="connection_due"),
        ]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Connection {self.slug} {self.base_url}>"

    def clean(self):
        if problem := api_host_problem(self.base_url):
            raise ValidationError({"base_url": problem})

    def set_api_key(self, plain: str) -> None:
        self.api_key_encrypted = encrypt_secret(plain.strip())

    @property
    def api_key(self) -> str:
        return decrypt_secret(self.api_key_encrypted)

    def set_webhook_secret(self, plain: str) -> None:
        plain = plain.strip()
        self.webhook_secret_encrypted = encrypt_secret(plain) if plain else ""

    @property
    def webhook_secret(self) -> str:
        """The webhook signing secret, or "" when none is set. Raises KeyUnreadable like api_key."""
        return decrypt_secret(self.webhook_secret_encrypted) if self.webhook_secret_encrypted else ""

    @property
    def api_key_hint(self) -> str:
        """What the UI may show of the key: its last four characters."""
        try:
            key = self.api_key
        except KeyUnreadable:
            return KEY_UNREADABLE
        return "…" + key[-4:] if key else "(none)"

    @property
    def is_failing(self) -> bool:
        return self.consecutive_failures > 0

    @property
    def is_importing(self) -> bool:
        """The first full read of the list is under way (spread over cycles by SYNC_CYCLE_BUDGET_SECONDS)."""
        return self.last_full_walk_at is None and (self.last_success_at is not None or bool(self.walk_cursor))

    def is_stale(self, now=None) -> bool:
        """Overdue: the last success is older than the interval it scheduled, plus SYNC_STALE_GRACE_SECONDS."""
        if not self.enabled:
            return False
        if self.last_success_at is None:
            return True
        interval = self.sync_interval if self.sync_interval is not None else self.poll_interval
        allowed = timedelta(seconds=interval + settings.SYNC_STALE_GRACE_SECONDS)
        return (now or timezone.now()) - self.last_success_at > allowed

    def health(self, now=None) -> str:
        """disabled, failing (backing off after errors), pending (never synced), stale (overdue),
        importing (first import under way), degraded (the list looked inconsistent), or ok."""
        if not self.enabled:
            return "disabled"
        if self.is_failing:
            return "failing"
        if self.last_success_at is None:
            return "importing" if self.is_importing else "pending"  # a long first cycle saves pages as it goes
        if self.is_stale(now):
            return "stale"
        if self.is_importing:
            return "importing"
        return "degraded" if self.warning else "ok"

    def forget_sync_state(self) -> None:
        """Start over as a connection never synced: health, schedule, walk, order and counters (not saved)."""
        for name in ("last_attempt_at", "last_success_at", "next_sync_at", "sync_interval", "last_full_walk_at",
                     "imported_at", "lease_until"):
            setattr(self, name, None)
        for name in ("last_error", "warning", "walk_cursor", "tail_cursor", "list_order", "lease_token"):
            setattr(self, name, "")
        self.consecutive_failures = self.unreadable_batches = self.walk_unreadable = 0
        self.full_walk_due, self.walk_anomaly = True, False

    def stored_batches(self) -> int:
        return BatchCount.objects.filter(connection=self).aggregate(n=models.Sum("n"))["n"] or 0


def sort_columns(fields: dict) -> dict:
    """A batch's stored sort keys, from its field values: whether it is still running, and how much of it is
    done in thousandths. A batch with no known request total is 0 done while it runs and 1000 once it ended
    (nothing is left to do), so "least done first" starts with the running batches furthest behind."""
    in_flight = fields["status"] in ACTIVE_STATUSES
    total, completed, failed = fields["total_requests"], fields["completed_requests"], fields["failed_requests"]
    if total > 0:
        done = min(1000, (1000 * (max(completed, 0) + max(failed, 0)) + total // 2) // total)  # as migration 0014
    else:
        done = 0 if in_flight else 1000
    return {"in_flight": in_flight, "done_permille": done}


class Batch(models.Model):
    """The last known state of one batch of one connection, with one column per field of the API's Batch."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="batches")
    batch_id = models.CharField(max_length=255)
    endpoint = models.CharField(max_length=255, blank=True)
    model = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=64)
    input_file_id = models.CharField(max_length=255, blank=True)
    output_file_id = models.CharField(max_length=255, blank=True)
    error_file_id = models.CharField(max_length=255, blank=True)
    completion_window = models.CharField(max_length=64, blank=True)

    created_at = models.DateTimeField(null=True, blank=True)
    in_progress_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    # Signed 64-bit on purpose: the API's numbers are shown as sent, even when odd.
    total_requests = models.BigIntegerField(default=0)
    completed_requests = models.BigIntegerField(default=0)
    failed_requests = models.BigIntegerField(default=0)

    input_tokens = models.BigIntegerField(null=True, blank=True)
    cached_tokens = models.BigIntegerField(null=True, blank=True)
    output_tokens = models.BigIntegerField(null=True, blank=True)
    reasoning_tokens = models.BigIntegerField(null=True, blank=True)
    total_tokens = models.BigIntegerField(null=True, blank=True)

    errors = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    raw = models.JSONField(default=dict)
    # Lower-cased ids and metadata values for the list's free-text filter (trigram-indexed on PostgreSQL).
    search_text = models.TextField(blank=True, editable=False)
    # The list's "active first" and progress sorts as stored columns (sort_columns, kept by store.py and save()), so that they page
    # by index like the others instead of sorting every row by a computed value.
    in_flight = models.BooleanField(default=False, editable=False)
    done_permille = models.PositiveSmallIntegerField(default=0, editable=False)
    # The estimated cost at the price of the batch's day (usage/prices.py), so that the usage page ranks batches
    # by cost by index; kept by store.py, re-priced by usage.prices.reprice() when a price changes.
    cost_usd = models.FloatField(null=True, blank=True, editable=False)

    first_seen_at = models.DateTimeField(default=timezone.now)
    last_synced_at = models.DateTimeField(default=timezone.now)
    last_changed_at = models.DateTimeField(default=timezone.now)
    # Incremented on every visible change; snapshots are numbered by it.
    version = models.PositiveIntegerField(default=1)
    # When the API first answered 404 for this (still active) batch; cleared when it is seen again.
    missing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "batches"
        permissions = [
            ("cancel_batch", "Can cancel a batch"),
            ("download_batch_file", "Can download a batch's input, output and error files"),
            ("refresh_batch", "Can re-sync a batch now"),
            ("view_request_content", "Can see what requests asked and answered: bodies, previews, error "
             "messages, and the files"),
            ("submit_batch", "Can create batches: retries of failed requests, and uploaded files"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["connection", "batch_id"], name="batch_unique_per_connection"),
        ]
        indexes = [
            # the list page's default order, and its created-date range filter
            models.Index(fields=["-created_at", "-id"], name="batch_newest"),
            # the list page filtered by status (and the status count cards)
            models.Index(fields=["status", "-created_at"], name="batch_status_newest"),
            # the list page filtered by connection
            models.Index(fields=["connection", "-created_at"], name="batch_connection_newest"),
            # sync: a connection's active batches (refresh, cadence) without scanning all its batches
            models.Index(fields=["connection", "status"], name="batch_connection_status"),
            # the list page filtered by model / by endpoint
            models.Index(fields=["model", "-created_at"], name="batch_model_newest"),
            models.Index(fields=["endpoint", "-created_at"], name="batch_endpoint_newest"),
            # the list sorted by tokens / by size
            # (PostgreSQL also gets a NULLS LAST variant in migration 0004; SQLite sorts NULLs last anyway)
            models.Index(fields=["-total_tokens", "-id"], name="batch_most_tokens"),
            models.Index(fields=["-total_requests", "-id"], name="batch_most_requests"),
            # the list sorted by status Z–A (status A–Z reads batch_status_newest)
            models.Index(fields=["-status", "-created_at", "-id"], name="batch_status_z_a"),
            # the list sorted "active first"
            models.Index(fields=["-in_flight", "-created_at", "-id"], name="batch_active_first"),
            # the list sorted by progress, either way
            models.Index(fields=["done_permille", "id"], name="batch_done"),
            # the list filtered by "completed, all failed", newest first
            models.Index(fields=["-created_at", "-id"], condition=ALL_FAILED, name="batch_all_failed_newest"),
            # the usage page's most expensive and most failed batches of a period
            models.Index(fields=["-cost_usd", "-id"], condition=models.Q(cost_usd__gt=0), name="batch_most_cost"),
            models.Index(fields=["-failed_requests", "-id"], condition=models.Q(failed_requests__gt=0),
                         name="batch_most_failed"),
            # retention: finished batches whose last change crossed the cutoff since its previous run
            models.Index(fields=["last_changed_at"], condition=models.Q(status__in=TERMINAL_STATUSES),
                         name="batch_finished_changed"),
        ]

    def __str__(self) -> str:
        return self.batch_id

    def save(self, *args, **kwargs):
        for name, value in sort_columns(vars(self)).items():
            setattr(self, name, value)
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "in_flight", "done_permille"}
        super().save(*args, **kwargs)

    @property
    def is_known_status(self) -> bool:
        return self.status in KNOWN_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_cancellable(self) -> bool:
        return self.status in CANCELLABLE_STATUSES

    @property
    def all_requests_failed(self) -> bool:
        """A `completed` batch whose every request failed: reads as a failure, not a success."""
        return self.status == "completed" and self.completed_requests <= 0 and self.failed_requests > 0

    @property
    def outcome(self) -> str:
        """The status a person should see: `completed` with zero successes shows as failed."""
        if self.all_requests_failed:
            return "all_failed"
        return self.status if self.is_known_status else "unknown"

    def progress(self) -> dict:
        """Shares (0..100) of completed, failed and remaining requests, safe for odd counts."""
        completed = max(self.completed_requests, 0)
        failed = max(self.failed_requests, 0)
        total = max(self.total_requests, completed + failed)
        if total <= 0:
            return {"completed": 0.0, "failed": 0.0, "remaining": 100.0, "done": 0.0, "known": False}
        done_completed = 100.0 * completed / total
        done_failed = 100.0 * failed / total
        return {
            "completed": round(done_completed, 1),
            "failed": round(done_failed, 1),
            "remaining": round(max(0.0, 100.0 - done_completed - done_failed), 1),
            "done": round(done_completed + done_failed, 1),
            "known": True,
        }

    def success_rate(self) -> float | None:
        """Percent of finished requests that succeeded; None before any finished."""
        completed = max(self.completed_requests, 0)
        finished = completed + max(self.failed_requests, 0)
        if finished <= 0:
            return 0.0 if self.status == "completed" and self.total_requests > 0 else None
        return round(100.0 * completed / finished, 1)

    @property
    def status_since(self):
        """When the batch entered its current status, by the API's own timestamp."""
        field = STATUS_TIMESTAMP.get(self.status)
        return getattr(self, field) if field else None

    def time_in_status(self, now=None) -> timedelta | None:
        since = self.status_since
        if since is None:
            return None
        return max((now or timezone.now()) - since, timedelta(0))

    def expires_in(self, now=None) -> timedelta | None:
        """Time left in the completion window; None once the batch is terminal or when unknown."""
        if self.is_terminal or self.expires_at is None:
            return None
        return self.expires_at - (now or timezone.now())

    def file_id(self, kind: str) -> str:
        return {"input": self.input_file_id, "output": self.output_file_id, "error": self.error_file_id}[kind]

    @property
    def display_name(self) -> str:
        """A human name from metadata, when the submitter gave one."""
        if isinstance(self.metadata, dict):
            for key in ("description", "name", "title", "job"):
                value = self.metadata.get(key)
                if value:
                    return str(value)[:200]
        return ""


class BatchCount(models.Model):
    """How many batches of a connection are in a status (`completed` ones whose every request failed apart).
    batches/store.py keeps it in the transaction that adds, changes or deletes a batch, so no page recounts
    the batch table; `manage.py rebuild_batch_counts` recounts it from scratch."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=64)
    all_failed = models.BooleanField(default=False)
    n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # store._count_changes' upsert: one row per connection, status and all-failed flag
            models.UniqueConstraint(fields=["connection", "status", "all_failed"], name="batch_count_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.connection_id} {self.status}{' all failed' if self.all_failed else ''}: {self.n}"


class ReceivedWebhook(models.Model):
    """A verified webhook message from the API, kept for WEBHOOK_REPLAY_HOURS so that a message delivered again
    (the same `webhook-id`) is dropped (batches/webhooks.py)."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    webhook_id = models.CharField(max_length=255)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # the receiver's duplicate check: the insert of a message already received fails
            models.UniqueConstraint(fields=["connection", "webhook_id"], name="received_webhook_unique"),
        ]
        indexes = [
            # forget_old_webhooks: messages older than WEBHOOK_REPLAY_HOURS
            models.Index(fields=["received_at"], name="received_webhook_age"),
        ]

    def __str__(self) -> str:
        return self.webhook_id


class SyncCounter(models.Model):
    """Sync cycles of one connection that ended one way ("" for a success, else an error kind, see
    sync.error_kind): how many, their seconds and HTTP requests. Counted in the database because cycles run in
    worker processes and /metrics is served by the web (batches/metrics.py); one UPDATE per cycle."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    error_kind = models.CharField(max_length=32, blank=True)
    cycles = models.BigIntegerField(default=0)
    seconds = models.FloatField(default=0.0)
    requests = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # sync.count_cycle's UPDATE: one row per connection and outcome
            models.UniqueConstraint(fields=["connection", "error_kind"], name="sync_counter_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.connection_id} {self.error_kind or 'ok'}: {self.cycles}"


class SnapshotRetention(models.Model):
    """Retention's high-water mark (one row): batches last changed before `thinned_until` are thinned."""

    thinned_until = models.DateTimeField()


class BatchSnapshot(models.Model):
    """One row per visible change of a batch (never one per poll)."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="snapshots")
    version = models.PositiveIntegerField()
    observed_at = models.DateTimeField()
    status = models.CharField(max_length=64)
    total_requests = models.BigIntegerField(default=0)
    completed_requests = models.BigIntegerField(default=0)
    failed_requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(null=True, blank=True)
    cached_tokens = models.BigIntegerField(null=True, blank=True)
    output_tokens = models.BigIntegerField(null=True, blank=True)
    reasoning_tokens = models.BigIntegerField(null=True, blank=True)
    total_tokens = models.BigIntegerField(null=True, blank=True)
    output_file_id = models.CharField(max_length=255, blank=True)
    error_file_id = models.CharField(max_length=255, blank=True)
    errors = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["version"]
        constraints = [
            # Two syncs racing on one batch cannot both write version N.
            models.UniqueConstraint(fields=["batch", "version"], name="snapshot_unique_version"),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id} v{self.version} {self.status}"


class BatchTransition(models.Model):
    """A status the batch entered: when the API says it did (`at`) and when we first saw it."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="transitions")
    status = models.CharField(max_length=64)
    at = models.DateTimeField(null=True, blank=True)
    observed_at = models.DateTimeField()

    class Meta:
        ordering = ["at", "observed_at"]
        constraints = [models.UniqueConstraint(fields=["batch", "status"], name="transition_unique_status")]

    def __str__(self) -> str:
        return f"{self.batch_id} → {self.status}"


class AuditTrailIsAppendOnly(Exception):
    """Audit events are written once: never changed, never deleted."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditTrailIsAppendOnly("audit events are never changed")

    def delete(self):
        raise AuditTrailIsAppendOnly("audit events are never deleted")


class AuditEvent(models.Model):
    """Who did (or tried) what: an action on a batch, a log-in, a refusal, a change to a connection or a role.

    Append-only in the app and the admin. Deleting the user, connection or batch an event names only
    clears that link (Django does it without this model's manager); the text columns keep the names."""

    ACTIONS = [
        ("cancel", "Cancel"), ("download", "Download"), ("refresh", "Refresh"),
        ("login", "Log-in"), ("login_failed", "Failed log-in"), ("logout", "Log-out"),
        ("logout_everywhere", "Log out everywhere"), ("forbidden", "Refused (403)"),
        ("connection_created", "Connection created"), ("connection_changed", "Connection changed"),
        ("connection_deleted", "Connection deleted"), ("key_changed", "API key changed"),
        ("role_changed", "Role changed"), ("submit", "Submit"),
    ]

    created = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=32, choices=ACTIONS)
    target = models.CharField(max_length=255, blank=True, help_text="The user or connection acted on")
    connection = models.ForeignKey(Connection, null=True, blank=True, on_delete=models.SET_NULL)
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events")
    batch_id_text = models.CharField("batch id", max_length=255, blank=True)
    detail = models.CharField(max_length=255, blank=True, help_text="e.g. which file was downloaded")
    ok = models.BooleanField(default=True)
    result = models.TextField(blank=True)
    request_id = models.CharField(max_length=255, blank=True, help_text="The API's x-request-id")
    ip = models.CharField("address", max_length=45, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        indexes = [
            # the audit table on a batch's detail page
            models.Index(fields=["batch", "-created"], name="audit_batch_newest"),
            # the admin's audit list and the CSV export, newest first
            models.Index(fields=["-created"], name="audit_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.username} {self.action} {self.batch_id_text or self.target}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditTrailIsAppendOnly("audit events are never changed")
        kwargs["force_insert"] = True  # an event built with the pk of another cannot overwrite it
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditTrailIsAppendOnly("audit events are never deleted")


# ----- archive and request index (batches/archive.py, batches/results.py) ------------------------------------
class ArchivedFile(models.Model):
    """A copy of one of a batch's files in Batchboard's own storage (STORAGES["archive"]), and how far the
    request index has read it. One row per batch and file kind, made when the batch is archived."""

    PENDING, STORED, FAILED, REMOVED, GONE = "pending", "stored", "failed", "removed", "gone"
    STATES = [(PENDING, "waiting to be copied"), (STORED, "stored"), (FAILED, "copy failed"),
              (REMOVED, "removed by ARCHIVE_RETENTION_DAYS"), (GONE, "deleted by the API before it was copied")]

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="archived_files")
    kind = models.CharField(max_length=8, choices=[(kind, kind) for kind in FILE_KINDS])
    file_id = models.CharField(max_length=255)
    state = models.CharField(max_length=8, choices=STATES, default=PENDING)
    # The object's name in the archive storage: derived from a hash, never from an API id.
    name = models.CharField(max_length=255, blank=True)
    bytes = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    stored_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    # The request index's progress through this file: it resumes at indexed_bytes after a killed worker.
    indexed_bytes = models.BigIntegerField(default=0)
    indexed_lines = models.BigIntegerField(default=0)
    malformed_lines = models.BigIntegerField(default=0)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["batch", "kind"], name="archived_file_unique_kind")]
        indexes = [
            # the archive loop: copies due now (new ones and retries after their backoff)
            models.Index(fields=["next_attempt_at"], condition=models.Q(state__in=["pending", "failed"]),
                         name="archived_file_due"),
            # ARCHIVE_RETENTION_DAYS: stored copies older than the cutoff
            models.Index(fields=["stored_at"], condition=models.Q(state="stored"), name="archived_file_stored"),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id} {self.kind}"


class RequestOutcome(models.IntegerChoices):
    SUCCEEDED = 1, "succeeded"
    FAILED = 2, "failed"
    EXPIRED = 3, "expired"
    CANCELLED = 4, "cancelled"
    NOT_RUN = 5, "not run"


class BatchRequest(models.Model):
    """One request of an archived batch, indexed from its input, output and error files: what happened to it,
    a short preview, and where its lines are in the archived files (a ranged read gives the full bodies).
    Kept small (< 300 bytes a row with its indexes): no surrogate id, the outcome as a small integer, the
    model only when it differs from the batch's."""

    pk = models.CompositePrimaryKey("batch", "custom_id")
    # no index of its own: the primary key's (batch, custom_id) serves every lookup by batch
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="requests", db_index=False)
    custom_id = models.TextField()
    outcome = models.PositiveSmallIntegerField(choices=RequestOutcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=100, blank=True)
    input_tokens = models.IntegerField(null=True, blank=True)
    output_tokens = models.IntegerField(null=True, blank=True)
    total_tokens = models.IntegerField(null=True, blank=True)
    # The answer's text (chat, responses), "vector of N" (embeddings), or the error message; <= 120 characters.
    preview = models.CharField(max_length=120, blank=True)
    input_offset = models.BigIntegerField(null=True, blank=True)
    input_length = models.IntegerField(null=True, blank=True)
    # The output or error line: which file says result_in_error_file.
    result_offset = models.BigIntegerField(null=True, blank=True)
    result_length = models.IntegerField(null=True, blank=True)
    result_in_error_file = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # the batch list's "batches with request error code X", and the explorer's error-code filter
            models.Index(fields=["error_code", "batch"], condition=~models.Q(error_code=""),
                         name="batch_request_error_code"),
        ]

    def __str__(self) -> str:
        return self.custom_id


# ----- submissions: retries and uploads (batches/retries.py, batches/uploads.py, actions.submit) ------------
class Submission(models.Model):
    """One confirmed request to create batches: a retry of a batch's failed requests, or a file uploaded in the
    browser. Its token is minted when the confirmation is shown and is unique, so a double click, a repeated
    POST or a resumed crash finds this row instead of making another. Each part (one batch: the API takes at
    most 50,000 requests and 200 MB a batch) carries the token in its upload's filename and in its batch's
    metadata (`batchboard_intent`), so that a batch or file whose answer was lost is found, never made twice."""

    RETRY, UPLOAD = "retry", "upload"
    PENDING, SUBMITTING, INTERRUPTED, DONE, REFUSED = "pending", "submitting", "interrupted", "done", "refused"
    STATES = [(PENDING, "recorded, nothing sent yet"), (SUBMITTING, "being sent"),
              (INTERRUPTED, "interrupted: resume to finish"), (DONE, "every batch created"),
              (REFUSED, "refused by the API")]

    token = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=8, choices=[(RETRY, "retry"), (UPLOAD, "upload")])
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="submissions")
    # A retry's batch; its children are this submission's parts' batches (the lineage).
    parent = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)
    endpoint = models.CharField(max_length=255)
    model = models.CharField(max_length=255, blank=True)
    completion_window = models.CharField(max_length=16, default="24h")
    # The batches' metadata without batchboard_intent (each part adds its own), already within the API's limits.
    metadata = models.JSONField(default=dict, blank=True)
    # A retry's choice: {"outcomes": [...], "codes": [...]}; an upload's file name as the user sent it.
    selection = models.JSONField(default=dict, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    source = models.CharField(max_length=255, blank=True, help_text="A staged upload's name in the archive storage")
    requests = models.BigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    state = models.CharField(max_length=12, choices=STATES, default=PENDING)
    last_error = models.TextField(blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.kind} {self.token}"


class SubmissionPart(models.Model):
    """One batch of a submission: its file (built into the archive storage before the first API call), the
    uploaded file's id, and the batch. `upload_sent_at` and `create_sent_at` record that a call was sent, so
    that after a lost answer the file or batch is looked for before anything is sent again."""

    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="parts")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=255, blank=True, help_text="The part's file in the archive storage")
    requests = models.BigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    upload_sent_at = models.DateTimeField(null=True, blank=True)
    file_id = models.CharField(max_length=255, blank=True)
    create_sent_at = models.DateTimeField(null=True, blank=True)
    # Set by the store when a batch naming this part's intent is stored (from the create's answer or a sync).
    batch = models.ForeignKey(Batch, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="submission_parts")
    batch_id_text = models.CharField("batch id", max_length=255, blank=True)
    created_batch_at = models.DateTimeField(null=True, blank=True)
    request_ids = models.CharField(max_length=255, blank=True, help_text="The API's x-request-id of upload, create")

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["submission", "number"], name="submission_part_unique")]
        indexes = [
            # BATCH_CREATIONS_PER_HOUR: batches created in the last hour
            models.Index(fields=["created_batch_at"], condition=models.Q(created_batch_at__isnull=False),
                         name="submission_part_created"),
        ]

    def __str__(self) -> str:
        return self.intent

    @property
    def intent(self) -> str:
        """The value of the batch's `batchboard_intent` metadata, and part of its upload's filename."""
        return f"{self.submission.token}-{self.number}"

    @property
    def upload_filename(self) -> str:
        return f"batchboard-{self.intent}.jsonl"
