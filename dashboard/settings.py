"""Batchboard settings: every value comes from the environment, with defaults that need nothing installed.

The README lists every variable with its default. A bad value stops start-up with an
ImproperlyConfigured error that names the variable.
"""

import ipaddress
import json
import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
VERSION = "0.1.0"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {raw!r}")


def env_number(name: str, default: float, *, minimum: float = 0, maximum: float | None = None, cast=int):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = cast(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a {cast.__name__}, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        limits = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ImproperlyConfigured(f"{name} must be {limits}, got {raw!r}")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


def parse_database_url(url: str, name: str = "DATABASE_URL") -> dict:
    """Turn `sqlite:///path` or `postgres://user:pass@host:port/db?opt=v` into a DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if path.startswith("/"):
            path = path[1:]  # sqlite:///var/db.sqlite3 is relative; sqlite:////abs/db.sqlite3 is absolute
        if not path:
            raise ImproperlyConfigured(f"{name} names no SQLite file: {url!r}")
        file = Path(path) if Path(path).is_absolute() else BASE_DIR / path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(file),
            # The worker and the web server write at once: WAL lets readers continue while one
            # writer holds the lock; IMMEDIATE takes the write lock up front so a transaction
            # never fails half-way on upgrade; the timeout makes writers queue instead of failing.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": str(file.with_name("test-" + file.name))},
        }
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        if not parts.path.strip("/"):
            raise ImproperlyConfigured(f"{name} names no database: {url!r}")
        options = dict(parse_qsl(parts.query))
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(f"{name} has a bad port: {url!r}") from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.strip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
            "CONN_MAX_AGE": env_number("DATABASE_CONN_MAX_AGE", 60),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ImproperlyConfigured(f"{name} must start with sqlite:// or postgres://, got {parts.scheme or url!r}")


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it to a long random string, or set DEBUG=1 for local development."
        )
    SECRET_KEY = "insecure-development-key-only-used-when-DEBUG-is-on"

# Fernet keys for API keys at rest: the first encrypts, every one decrypts (rotation).
ENCRYPTION_KEYS = env_list("BATCHBOARD_ENCRYPTION_KEYS", "")
if not ENCRYPTION_KEYS and DEBUG and (VAR_DIR / "encryption.key").exists():
    ENCRYPTION_KEYS = [(VAR_DIR / "encryption.key").read_text().strip()]
if not ENCRYPTION_KEYS:
    raise ImproperlyConfigured(
        "BATCHBOARD_ENCRYPTION_KEYS is not set. Generate a key with "
        "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
        "(`make run` writes one to var/encryption.key when DEBUG is on)."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "dashboard.apps.BatchboardAdminConfig",  # django.contrib.admin, with the site in dashboard/admin.py
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "accounts",
    "batches",
    "teams",
    "notifications",
    "usage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "batches.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "accounts.middleware.SessionLimitsMiddleware",
    # Re-asks the provider after OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS; does nothing for password sessions.
    "accounts.oidc.SessionRefresh",
]

ROOT_URLCONF = "dashboard.urls"
# Error pages and reports hide passwords in URLs and keys, in settings, the environment and tracebacks.
DEFAULT_EXCEPTION_REPORTER_FILTER = "batches.errors.SafeReporterFilter"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "batches.views.site_context",
                "accounts.views.sign_in_options",
            ],
        },
    }
]

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'batchboard.sqlite3'}"
DATABASES = {"default": parse_database_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Shared by every web process (error-file summaries): the database by default.
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
elif CACHE_URL in ("", "db"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "batchboard_cache"}}
else:
    raise ImproperlyConfigured(f"CACHE_URL must be empty, 'db' or a redis:// URL, got {CACHE_URL!r}")
# Rendered list rows, keyed by batch version: per process, nothing to share or invalidate.
CACHES["template_fragments"] = {
    "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
    "LOCATION": "batchboard-rows",
    "OPTIONS": {"MAX_ENTRIES": 20000},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Sessions end after SESSION_IDLE_SECONDS without activity (live polls do not count) and at the latest
# SESSION_COOKIE_AGE seconds after log-in, however active (accounts/sessions.py).
SESSION_COOKIE_AGE = env_number("SESSION_COOKIE_AGE", 14 * 24 * 3600, minimum=60)
SESSION_IDLE_SECONDS = env_number("SESSION_IDLE_SECONDS", 12 * 3600, minimum=60)
SESSION_SAVE_EVERY_REQUEST = False  # a poll must not write the session
AUTHENTICATION_BACKENDS = ["accounts.sessions.ModelBackend", "accounts.oidc.OIDCBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "batch-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
FORMAT_MODULE_PATH = ["dashboard.formats"]  # the admin's dates in the app's format
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))

# Security. Production behind TLS: set SECURE_SSL_REDIRECT=1 and SECURE_HSTS_SECONDS; behind a
# proxy that terminates TLS, also SECURE_PROXY_SSL_HEADER=1 (trusts X-Forwarded-Proto).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_number("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", SECURE_HSTS_SECONDS > 0)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", SECURE_SSL_REDIRECT)
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)

# Celery: a broker that needs no server by default (a SQLite file under var/), Redis or
# RabbitMQ in production.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
if "://" not in CELERY_BROKER_URL:
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL must be a URL such as redis://host:6379/0, got {CELERY_BROKER_URL!r}")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# Reads of API files (error-file scans, file metadata) have their own queue, so they never hold up a sync:
# run a worker for it (`-Q files`), see the README's Production section.
CELERY_TASK_ROUTES = {"batches.tasks.read_batch_files": {"queue": "files"}}
# Archive copies, their cleanup and the request index have theirs (`-Q archive`): a 200 MB copy never waits on
# syncs, nor a sync on it.
CELERY_TASK_ROUTES.update({f"batches.tasks.{name}": {"queue": "archive"} for name in (
    "archive_file", "remove_expired_archive_copies", "index_batch_requests")})
# How often beat looks for due connections; a connection due within half a tick is synced at once.
SYNC_TICK_SECONDS = env_number("SYNC_TICK_SECONDS", 2.0, minimum=0.1, cast=float)
CELERY_BEAT_SCHEDULE = {
    "sync-due-connections": {
        "task": "batches.tasks.sync_due_connections",
        "schedule": SYNC_TICK_SECONDS,
        "options": {"expires": 30},
    },
    "thin-snapshots": {
        "task": "batches.tasks.thin_snapshots",
        "schedule": 3600.0,
    },
    "forget-ended-login-windows": {
        "task": "accounts.tasks.forget_ended_login_windows",
        "schedule": 3600.0,
    },
}

# Talking to the Batch API (batches/client.py). Seconds unless named otherwise.
API_CONNECT_TIMEOUT = env_number("API_CONNECT_TIMEOUT", 5.0, cast=float)
API_READ_TIMEOUT = env_number("API_READ_TIMEOUT", 30.0, cast=float)
API_RETRIES = env_number("API_RETRIES", 2)
API_RETRY_BACKOFF = env_number("API_RETRY_BACKOFF", 0.5, cast=float)
# The whole of one API call (retries and body included) ends within this many seconds; it must be
# shorter than SYNC_LEASE_SECONDS so a sync holding its lease is never stuck in one call.
API_CALL_DEADLINE = env_number("API_CALL_DEADLINE", 20.0, minimum=0.1, cast=float)
API_MAX_RESPONSE_BYTES = env_number("API_MAX_RESPONSE_BYTES", 32 * 1024 * 1024, minimum=1024)
API_DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Hosts a stored API key may be sent to (`.example.com` also allows its subdomains); empty allows any.
ALLOWED_API_HOSTS = [host.strip("[]").lower() for host in env_list("ALLOWED_API_HOSTS", "")]

# The sync cadence (batches/sync.py).
# Freshness: a change at the API is on an open page after about U(0, interval) + the broker's hand-over
# + U(0, LIVE_POLL_SECONDS); 5 s and 2 s keep that under 10 s at p95 (bench/freshness.py), and a steady
# cycle costs one request, so 5 s is 12 requests a minute.
SYNC_ACTIVE_INTERVAL = env_number("SYNC_ACTIVE_INTERVAL", 5.0, cast=float)
SYNC_TRANSITION_INTERVAL = env_number("SYNC_TRANSITION_INTERVAL", 5.0, cast=float)
SYNC_IDLE_INTERVAL = env_number("SYNC_IDLE_INTERVAL", 60.0, cast=float)
SYNC_FULL_WALK_HOURS = env_number("SYNC_FULL_WALK_HOURS", 24.0, cast=float)
SYNC_PAGE_SIZE = env_number("SYNC_PAGE_SIZE", 100, minimum=1, maximum=100)  # the API allows 1..100
# No cycle runs longer than this (plus one request); a long import goes on in the next cycles.
SYNC_CYCLE_BUDGET_SECONDS = env_number("SYNC_CYCLE_BUDGET_SECONDS", 60.0, minimum=0.1, cast=float)
# A sync holds its connection this long and renews it after every request, so a killed worker or a
# database outage blocks the connection for at most this long.
SYNC_LEASE_SECONDS = env_number("SYNC_LEASE_SECONDS", 30.0, minimum=1, cast=float)
if API_CALL_DEADLINE >= SYNC_LEASE_SECONDS:
    raise ImproperlyConfigured("API_CALL_DEADLINE must be shorter than SYNC_LEASE_SECONDS")
SYNC_RETRY_AFTER_CAP = env_number("SYNC_RETRY_AFTER_CAP", 600.0, cast=float)
SYNC_FAILURE_BACKOFF_CAP = env_number("SYNC_FAILURE_BACKOFF_CAP", 600.0, cast=float)
# An active batch the API answers 404 for is asked about again for this long, then left as it was.
SYNC_MISSING_GIVE_UP_HOURS = env_number("SYNC_MISSING_GIVE_UP_HOURS", 24.0, cast=float)
# Celery limits of a sync task: the soft one ends a cycle cleanly (it goes on next time).
SYNC_TASK_SOFT_TIME_LIMIT = env_number(
    "SYNC_TASK_SOFT_TIME_LIMIT", int(SYNC_CYCLE_BUDGET_SECONDS + API_CALL_DEADLINE + 30), minimum=1)
SYNC_TASK_TIME_LIMIT = env_number("SYNC_TASK_TIME_LIMIT", SYNC_TASK_SOFT_TIME_LIMIT + 60, minimum=2)
# Data is stale once the last success is older than its scheduled interval plus this grace.
SYNC_STALE_GRACE_SECONDS = env_number("SYNC_STALE_GRACE_SECONDS", 30.0, cast=float)

# /healthz (batches/health.py): who sees each connection's health, whether stale data fails the check, and
# how long the broker may take to answer.
HEALTHZ_TOKEN = os.environ.get("HEALTHZ_TOKEN", "")
HEALTHZ_STALE_IS_ERROR = env_bool("HEALTHZ_STALE_IS_ERROR", False)
HEALTHZ_BROKER_TIMEOUT = env_number("HEALTHZ_BROKER_TIMEOUT", 2.0, minimum=0.1, cast=float)

# OpenAI webhooks in (batches/webhooks.py): POST /webhooks/openai/<connection slug>/. A message id is remembered
# this long (the API retries a delivery for up to 72 hours); refused messages (unknown slug, bad signature) are
# limited to WEBHOOK_FAILURE_LIMIT per client address per WEBHOOK_FAILURE_WINDOW seconds; bodies over
# WEBHOOK_MAX_BODY_BYTES are refused unread.
WEBHOOK_REPLAY_HOURS = env_number("WEBHOOK_REPLAY_HOURS", 73.0, minimum=1, cast=float)
WEBHOOK_FAILURE_LIMIT = env_number("WEBHOOK_FAILURE_LIMIT", 20, minimum=1)
WEBHOOK_FAILURE_WINDOW = env_number("WEBHOOK_FAILURE_WINDOW", 600, minimum=1)
WEBHOOK_MAX_BODY_BYTES = env_number("WEBHOOK_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
CELERY_BEAT_SCHEDULE["forget-old-webhooks"] = {"task": "batches.tasks.forget_old_webhooks", "schedule": 3600.0}

# /metrics (batches/metrics.py), Prometheus' text format: answered to `Authorization: Bearer <METRICS_TOKEN>` or
# to a client address in METRICS_ALLOWED_IPS (addresses or networks, comma-separated). With neither set it is
# off: 404.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", "")
try:
    [ipaddress.ip_network(entry, strict=False) for entry in METRICS_ALLOWED_IPS]
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS holds something that is not an address or network: {exc}") from None

# The archive (batches/archive.py): copies of finished batches' files, kept after the API deletes them.
# ARCHIVE_FILES: "all" (retries need the inputs), "results" (output and error files) or "none".
ARCHIVE_FILES = os.environ.get("ARCHIVE_FILES", "all").strip().lower()
if ARCHIVE_FILES not in ("all", "results", "none"):
    raise ImproperlyConfigured(f"ARCHIVE_FILES must be all, results or none, got {ARCHIVE_FILES!r}")
# Batches that finished before Batchboard saw them are archived only if they finished within this many days.
ARCHIVE_BACKFILL_DAYS = env_number("ARCHIVE_BACKFILL_DAYS", 0, cast=float)
# Copies older than this are removed (0 keeps them forever); their index rows stay, marked "body expired".
ARCHIVE_RETENTION_DAYS = env_number("ARCHIVE_RETENTION_DAYS", 0, cast=float)
ARCHIVE_ROOT = Path(os.environ.get("ARCHIVE_ROOT", VAR_DIR / "archive"))
# A copy is streamed to a temporary file here while it is hashed and counted, then stored in one step. On the
# filesystem storage that step is a rename, so this must be on the same filesystem as ARCHIVE_ROOT.
ARCHIVE_TMP_DIR = Path(os.environ.get("ARCHIVE_TMP_DIR", ARCHIVE_ROOT / ".incoming"))
# How often beat looks for copies due (new ones, and retries whose backoff has passed).
ARCHIVE_TICK_SECONDS = env_number("ARCHIVE_TICK_SECONDS", 30.0, minimum=1, cast=float)
# One copy's download is cut after this long (and retried later), whatever the pace.
ARCHIVE_COPY_SECONDS = env_number("ARCHIVE_COPY_SECONDS", 1800.0, minimum=1, cast=float)
# A failed copy is tried again after this, doubling up to 6 hours, at most ARCHIVE_MAX_ATTEMPTS times in all.
ARCHIVE_RETRY_SECONDS = env_number("ARCHIVE_RETRY_SECONDS", 60.0, cast=float)
ARCHIVE_MAX_ATTEMPTS = env_number("ARCHIVE_MAX_ATTEMPTS", 10, minimum=1)
CELERY_BEAT_SCHEDULE["archive-due-files"] = {"task": "batches.tasks.archive_due_files",
                                             "schedule": ARCHIVE_TICK_SECONDS, "options": {"expires": ARCHIVE_TICK_SECONDS}}
CELERY_BEAT_SCHEDULE["remove-expired-archive-copies"] = {"task": "batches.tasks.remove_expired_archive_copies",
                                                         "schedule": 3600.0}
# With ARCHIVE_S3_BUCKET the archive is that S3-compatible bucket (django-storages); credentials from the
# environment only, and files reach browsers through Django, never by a public or pre-signed URL.
ARCHIVE_S3_BUCKET = os.environ.get("ARCHIVE_S3_BUCKET", "")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "archive": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": ARCHIVE_ROOT, "directory_permissions_mode": 0o700,
                            "file_permissions_mode": 0o600}},
}
if ARCHIVE_S3_BUCKET:
    STORAGES["archive"] = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": ARCHIVE_S3_BUCKET,
        "endpoint_url": os.environ.get("ARCHIVE_S3_ENDPOINT_URL") or None,
        "region_name": os.environ.get("ARCHIVE_S3_REGION") or None,
        "access_key": os.environ.get("ARCHIVE_S3_ACCESS_KEY_ID") or None,
        "secret_key": os.environ.get("ARCHIVE_S3_SECRET_ACCESS_KEY") or None,
        "location": os.environ.get("ARCHIVE_S3_PREFIX", "").strip("/"),
        "default_acl": None, "querystring_auth": True, "file_overwrite": True,
    }}

# Submitting batches (retries and uploads, batches/actions.py submit): the API's limits per batch (CONTRACT §4:
# 50,000 requests, 200 MB; a larger set becomes several batches) and per hour (2,000 creations), how long one
# upload may take, and how long a submission stays claimed by the request sending it.
BATCH_MAX_REQUESTS = env_number("BATCH_MAX_REQUESTS", 50_000, minimum=1, maximum=50_000)
BATCH_MAX_BYTES = env_number("BATCH_MAX_BYTES", 200 * 1024 * 1024, minimum=1024, maximum=200 * 1024 * 1024)
BATCH_CREATIONS_PER_HOUR = env_number("BATCH_CREATIONS_PER_HOUR", 2000, minimum=1, maximum=2000)
SUBMIT_UPLOAD_DEADLINE = env_number("SUBMIT_UPLOAD_DEADLINE", 900.0, minimum=1, cast=float)
SUBMIT_LEASE_SECONDS = env_number("SUBMIT_LEASE_SECONDS", 1800.0, minimum=1, cast=float)
# Uploads in the browser: the largest file accepted (split into batches when over BATCH_MAX_*), and the longest line.
SUBMIT_MAX_UPLOAD_BYTES = env_number("SUBMIT_MAX_UPLOAD_BYTES", 1024 * 1024 * 1024, minimum=1024)
SUBMIT_MAX_LINE_BYTES = env_number("SUBMIT_MAX_LINE_BYTES", 16 * 1024 * 1024, minimum=1024)
# Uploaded files go to a temporary file on disk as they arrive, never into memory.
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.TemporaryFileUploadHandler"]

# Snapshots of terminal batches older than this are thinned (status changes are always kept).
SNAPSHOT_RETENTION_DAYS = env_number("SNAPSHOT_RETENTION_DAYS", 90)

# The dashboard.
LIVE_POLL_SECONDS = env_number("LIVE_POLL_SECONDS", 2, minimum=1)
LIST_PAGE_SIZE = env_number("LIST_PAGE_SIZE", 50, minimum=1)
# A filtered list's total is counted up to this many rows, then shown as "10,000+".
LIST_COUNT_LIMIT = env_number("LIST_COUNT_LIMIT", 10000, minimum=1)
ERROR_FILE_SCAN_BYTES = env_number("ERROR_FILE_SCAN_BYTES", 10 * 1024 * 1024, minimum=1024)
ERROR_FILE_SCAN_SECONDS = env_number("ERROR_FILE_SCAN_SECONDS", 120.0, minimum=0.1, cast=float)
DOWNLOAD_CHUNK_BYTES = env_number("DOWNLOAD_CHUNK_BYTES", 64 * 1024, minimum=1024)
# File streams (downloads through the dashboard, error-file scans in the background) are cut when nothing
# arrives for the stall time, or when, after the grace time, they average under the minimum pace: a server
# that drips a file cannot hold a web thread or a worker. At most this many downloads per connection at once.
FILE_STREAM_STALL_SECONDS = env_number("FILE_STREAM_STALL_SECONDS", 30.0, minimum=0.1, cast=float)
FILE_STREAM_MIN_BYTES_PER_SECOND = env_number("FILE_STREAM_MIN_BYTES_PER_SECOND", 1024.0, cast=float)
FILE_STREAM_GRACE_SECONDS = env_number("FILE_STREAM_GRACE_SECONDS", 10.0, cast=float)
FILE_STREAMS_PER_CONNECTION = env_number("FILE_STREAMS_PER_CONNECTION", 4, minimum=1)
# A batch sitting in validating/finalizing/cancelling longer than this is flagged "stuck?".
STUCK_AFTER_SECONDS = {
    "validating": env_number("STUCK_VALIDATING_SECONDS", 3600),
    "finalizing": env_number("STUCK_FINALIZING_SECONDS", 3600),
    "cancelling": env_number("STUCK_CANCELLING_SECONDS", 1200),
}
# Spend and usage (usage/). Prices live in the database (the /usage/prices/ page); MODEL_PRICES_JSON, USD per
# million tokens by model, seeds that table on its first migration only (else usage/prices.py's starter table).
# The batch discount applies on top of every price.
BATCH_PRICE_DISCOUNT = env_number("BATCH_PRICE_DISCOUNT", 0.5, cast=float)
MODEL_PRICES = None
if os.environ.get("MODEL_PRICES_JSON"):
    try:
        MODEL_PRICES = json.loads(os.environ["MODEL_PRICES_JSON"])
    except ValueError as exc:
        raise ImproperlyConfigured(f"MODEL_PRICES_JSON is not valid JSON: {exc}") from None
    if not isinstance(MODEL_PRICES, dict) or not all(
            isinstance(p, dict) and all(isinstance(p.get(k, 0), int | float) and p.get(k, 0) >= 0
                                        for k in ("input", "cached_input", "output")) for p in MODEL_PRICES.values()):
        raise ImproperlyConfigured('MODEL_PRICES_JSON must be a JSON object of model -> {"input": …, '
                                   '"cached_input": …, "output": …}, USD per million tokens, none negative')
# Metadata keys the usage rollup counts by (a chart can stack by them, a budget can be for one of their values);
# after changing them, run `manage.py rebuild_usage`.
USAGE_METADATA_KEYS = [key[:64] for key in env_list("USAGE_METADATA_KEYS", "team,project")][:10]
# Timing baselines (ETA, stuck): a connection's history for a model and endpoint over this many days, used once
# it holds this many batches; a baseline never calls a batch stuck sooner than the floor.
USAGE_BASELINE_DAYS = env_number("USAGE_BASELINE_DAYS", 30, minimum=1)
USAGE_BASELINE_MIN_BATCHES = env_number("USAGE_BASELINE_MIN_BATCHES", 20, minimum=1)
STUCK_BASELINE_FLOOR_SECONDS = env_number("STUCK_BASELINE_FLOOR_SECONDS", 600, minimum=0)

# Alerts (notifications/): events derived from what the sync stores, sent to channels. Links in messages start
# with BATCHBOARD_BASE_URL; email goes through Django's EMAIL_* settings.
BATCHBOARD_BASE_URL = os.environ.get("BATCHBOARD_BASE_URL", "http://127.0.0.1:8000").strip()
if not BATCHBOARD_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"BATCHBOARD_BASE_URL must start with http:// or https://, got {BATCHBOARD_BASE_URL!r}")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_number("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_number("EMAIL_TIMEOUT", 10.0, minimum=0.1, cast=float)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "batchboard@localhost")
# Derived events: completed with at least this share of failed requests; expiring within N hours with less than
# this share done; a connection failing with no success for this many minutes. Stuck uses STUCK_*_SECONDS.
ALERT_FAILURE_RATE_PERCENT = env_number("ALERT_FAILURE_RATE_PERCENT", 10.0, maximum=100, cast=float)
ALERT_EXPIRING_HOURS = env_number("ALERT_EXPIRING_HOURS", 2.0, cast=float)
ALERT_EXPIRING_DONE_PERCENT = env_number("ALERT_EXPIRING_DONE_PERCENT", 90.0, maximum=100, cast=float)
ALERT_CONNECTION_FAILING_MINUTES = env_number("ALERT_CONNECTION_FAILING_MINUTES", 15.0, cast=float)
# Delivery: how often beat drains the outbox and derives events, how long one send may take, how long a worker
# holds a delivery it is sending, and retries (doubling from ALERT_RETRY_SECONDS, at most 6 h apart).
ALERT_TICK_SECONDS = env_number("ALERT_TICK_SECONDS", 5.0, minimum=0.5, cast=float)
ALERT_DERIVE_SECONDS = env_number("ALERT_DERIVE_SECONDS", 60.0, minimum=1, cast=float)
ALERT_SEND_TIMEOUT = env_number("ALERT_SEND_TIMEOUT", 10.0, minimum=0.1, cast=float)
ALERT_LEASE_SECONDS = env_number("ALERT_LEASE_SECONDS", 120.0, minimum=1, cast=float)
ALERT_RETRY_SECONDS = env_number("ALERT_RETRY_SECONDS", 30.0, minimum=0, cast=float)
ALERT_MAX_ATTEMPTS = env_number("ALERT_MAX_ATTEMPTS", 8, minimum=1)
# Tests only (tests/settings.py), never from the environment: http://127.0.0.1 targets for local receivers.
ALERTS_ALLOW_LOCAL_RECEIVERS = False
# Deliveries have their own queue, so a slow receiver never holds up a sync; `make run`'s worker consumes it.
CELERY_TASK_ROUTES.update({f"notifications.tasks.{name}": {"queue": "notifications"} for name in (
    "send_alerts", "derive_events")})
CELERY_BEAT_SCHEDULE["send-alerts"] = {"task": "notifications.tasks.send_alerts", "schedule": ALERT_TICK_SECONDS,
                                       "options": {"expires": ALERT_TICK_SECONDS}}
CELERY_BEAT_SCHEDULE["derive-alert-events"] = {"task": "notifications.tasks.derive_events",
                                               "schedule": ALERT_DERIVE_SECONDS,
                                               "options": {"expires": ALERT_DERIVE_SECONDS}}
# Budgets are checked this often; a crossing raises its alert event at the next check.
BUDGET_CHECK_SECONDS = env_number("BUDGET_CHECK_SECONDS", 300.0, minimum=1, cast=float)
CELERY_TASK_ROUTES["usage.tasks.check_budgets"] = {"queue": "notifications"}
# Re-pricing stored costs after a price change may read every batch: the `archive` queue's long-jobs worker.
CELERY_TASK_ROUTES["usage.tasks.reprice_batches"] = {"queue": "archive"}
CELERY_BEAT_SCHEDULE["check-budgets"] = {"task": "usage.tasks.check_budgets", "schedule": BUDGET_CHECK_SECONDS,
                                         "options": {"expires": BUDGET_CHECK_SECONDS}}

# Log-in throttling (accounts/throttle.py), counted in the database before each password check.
LOGIN_FAILURE_LIMIT = env_number("LOGIN_FAILURE_LIMIT", 5, minimum=1)  # per username at one address
LOGIN_FAILURE_WINDOW = env_number("LOGIN_FAILURE_WINDOW", 900, minimum=1)
LOGIN_IP_FAILURE_LIMIT = env_number("LOGIN_IP_FAILURE_LIMIT", 30, minimum=1)  # per address, any username
LOGIN_USERNAME_FAILURE_LIMIT = env_number("LOGIN_USERNAME_FAILURE_LIMIT", 10, minimum=1)  # then delays grow
LOGIN_MAX_DELAY = env_number("LOGIN_MAX_DELAY", 300, minimum=1)
# How many proxies in front of the app append to X-Forwarded-For; 0 trusts only REMOTE_ADDR.
TRUSTED_PROXY_COUNT = env_number("TRUSTED_PROXY_COUNT", 0, maximum=10)

# Single sign-on with OpenID Connect (accounts/oidc.py): on when OIDC_ISSUER is set. The provider's endpoints come
# from its discovery document, fetched at the first log-in and kept OIDC_DISCOVERY_CACHE_SECONDS, never at start-up
# (the app must start while the provider is down).
OIDC_ISSUER = os.environ.get("OIDC_ISSUER", "").strip().rstrip("/")
OIDC_CLIENT_ID = os.environ.get("OIDC_CLIENT_ID", "").strip()
OIDC_CLIENT_SECRET = os.environ.get("OIDC_CLIENT_SECRET", "").strip()
OIDC_SCOPES = " ".join(os.environ.get("OIDC_SCOPES", "openid email profile").split())
OIDC_PROVIDER_NAME = os.environ.get("OIDC_PROVIDER_NAME", "single sign-on").strip()
# Exact domains; ".example.com" also allows its subdomains (as ALLOWED_API_HOSTS).
OIDC_ALLOWED_EMAIL_DOMAINS = [domain.lower() for domain in env_list("OIDC_ALLOWED_EMAIL_DOMAINS", "")]
OIDC_GROUPS_CLAIM = os.environ.get("OIDC_GROUPS_CLAIM", "groups").strip()
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = env_number("OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS", 900, minimum=0)
OIDC_DISCOVERY_CACHE_SECONDS = env_number("OIDC_DISCOVERY_CACHE_SECONDS", 3600, minimum=0)
OIDC_TIMEOUT = env_number("OIDC_TIMEOUT", 10.0, minimum=0.1, cast=float)
# Tests only (tests/settings.py), never from the environment: an http://127.0.0.1 provider.
OIDC_ALLOW_HTTP = False
ROLE_NAMES = ("Viewer", "Operator", "Admin")  # the role groups (batches/0002_roles), weakest first


def parse_group_map(raw: str, name: str = "OIDC_GROUP_MAP") -> dict:
    """{"provider group": {"role": "Operator", "teams": ["Red"]}, ...}; either key may be left out."""
    try:
        value = json.loads(raw or "{}")
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object of provider group -> {{role, teams}}")
    for group, entry in value.items():
        if not isinstance(entry, dict) or set(entry) - {"role", "teams"}:
            raise ImproperlyConfigured(f"{name}[{group!r}] must be an object with \"role\" and/or \"teams\"")
        if "role" in entry and entry["role"] not in ROLE_NAMES:
            raise ImproperlyConfigured(f"{name}[{group!r}] role must be one of {', '.join(ROLE_NAMES)}, "
                                       f"got {entry['role']!r}")
        teams = entry.get("teams", [])
        if not isinstance(teams, list) or not all(isinstance(team, str) and team for team in teams):
            raise ImproperlyConfigured(f"{name}[{group!r}] teams must be a list of team names")
    return value


OIDC_GROUP_MAP = parse_group_map(os.environ.get("OIDC_GROUP_MAP", ""))
if OIDC_ISSUER:
    if not OIDC_CLIENT_ID or not OIDC_CLIENT_SECRET:
        raise ImproperlyConfigured("OIDC_ISSUER is set: OIDC_CLIENT_ID and OIDC_CLIENT_SECRET must be set too")
    if not OIDC_ISSUER.startswith("https://"):
        raise ImproperlyConfigured(f"OIDC_ISSUER must be an https:// URL, got {OIDC_ISSUER!r}")
    if not OIDC_ALLOWED_EMAIL_DOMAINS:
        raise ImproperlyConfigured("OIDC_ISSUER is set: OIDC_ALLOWED_EMAIL_DOMAINS must name the e-mail domains "
                                   "that may log in (a public provider would otherwise admit anyone)")
    if "openid" not in OIDC_SCOPES.split():
        raise ImproperlyConfigured("OIDC_SCOPES must include openid")
# LOCAL_LOGIN=0: passwords log in only superusers marked break-glass (manage.py break_glass), on /login/ and
# /admin/login/; everyone else uses single sign-on.
LOCAL_LOGIN = env_bool("LOCAL_LOGIN", True)
if not LOCAL_LOGIN and not OIDC_ISSUER:
    raise ImproperlyConfigured("LOCAL_LOGIN=0 needs OIDC_ISSUER: without single sign-on only break-glass accounts "
                               "could log in")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "batches.redact.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"urllib3": {"level": "WARNING"}},
}
