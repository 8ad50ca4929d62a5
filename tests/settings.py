"""Test settings: the production settings module, with secrets filled in and every delay shrunk."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
# A fixed Fernet key for tests only (32 bytes, url-safe base64).
os.environ.setdefault("BATCHBOARD_ENCRYPTION_KEYS", "dGVzdC1vbmx5LWtleS10ZXN0LW9ubHkta2V5LTAwMDA=")
os.environ.setdefault("CELERY_BROKER_URL", "sqla+sqlite:///" + os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var", "test-celery-broker.sqlite3"))

# Tests that copy files into the archive give it a temporary directory; the others never write into var/archive.
os.environ.setdefault("ARCHIVE_ROOT", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var", "test-archive"))

from dashboard.settings import *  # noqa: E402,F403

# Subprocesses started by tests (a Celery worker, say) must open the test database, not the real one.
if os.environ.get("BATCHBOARD_USE_TEST_DATABASE"):
    DATABASES["default"]["NAME"] = os.environ["BATCHBOARD_USE_TEST_DATABASE"]  # noqa: F405

CELERY_TASK_DEFAULT_QUEUE = "batchboard-test"
CELERY_TASK_ROUTES = {"batches.tasks.read_batch_files": {"queue": "batchboard-test-files"}}
CELERY_TASK_ROUTES.update({f"batches.tasks.{name}": {"queue": "batchboard-test-archive"} for name in (
    "archive_file", "remove_expired_archive_copies", "index_batch_requests")})
CELERY_TASK_ROUTES.update({f"notifications.tasks.{name}": {"queue": "batchboard-test-notifications"}
                           for name in ("send_alerts", "derive_events")})
ALERTS_ALLOW_LOCAL_RECEIVERS = True  # http://127.0.0.1 for the receivers tests start
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
API_CONNECT_TIMEOUT = 2.0
API_READ_TIMEOUT = 2.0
API_RETRY_BACKOFF = 0.01
SYNC_LEASE_SECONDS = float(os.environ.get("SYNC_LEASE_SECONDS", 30))
HEALTHZ_BROKER_TIMEOUT = 0.5
OIDC_ALLOW_HTTP = True  # the test provider (tests/oidc_provider/) speaks http on 127.0.0.1
