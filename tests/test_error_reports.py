"""Django's debug error pages (`make run` runs with DEBUG=1) never show a password or a key."""

import pytest
from django.conf import settings as django_settings
from django.urls import path

CANARY = "-".join(["canary", "pw", "123"])  # never written out: the page shows this file's source
BROKER = f"redis://:{CANARY}@127.0.0.1:6379/0"


def _raising_view(request):
    broker = django_settings.CELERY_BROKER_URL  # a local of the failing frame holds a URL with a password
    raise RuntimeError(f"the view failed ({len(broker)})")


urlpatterns = [path("boom/", _raising_view)]

# What `runserver` puts in META: the whole environment of the process.
ENVIRONMENT = {
    "CELERY_BROKER_URL": BROKER,
    "DATABASE_URL": f"postgres://batchboard:{CANARY}@db.internal:5432/batchboard",
    "CACHE_URL": f"rediss://default:{CANARY}@cache.internal:6380/1",
    "OPENAI_API_KEY": f"sk-{CANARY}",
    "BATCHBOARD_ENCRYPTION_KEYS": f"{CANARY}-fernet",
    "HEALTHZ_TOKEN": CANARY,
    "SENTRY_DSN": f"https://{CANARY}@o1.ingest.example.com/2",
    "PGPASSWORD": CANARY,
}


@pytest.fixture
def debug_site(settings, client):
    settings.DEBUG = True
    settings.ROOT_URLCONF = __name__
    settings.CELERY_BROKER_URL = BROKER
    settings.DATABASE_URL = ENVIRONMENT["DATABASE_URL"]
    settings.CACHE_URL = ENVIRONMENT["CACHE_URL"]
    settings.CACHES = {**settings.CACHES, "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": ENVIRONMENT["CACHE_URL"]}}
    settings.CELERY_RESULT_BACKEND = f"redis://:{CANARY}@127.0.0.1:6379/1"
    settings.BATCHBOARD_REPLICAS = {"read": [{"url": f"postgres://reader:{CANARY}@replica:5432/db"}]}
    client.raise_request_exception = False
    return client


@pytest.mark.parametrize("accept", ["text/html", "text/plain"])
def test_the_debug_500_page_shows_no_password_or_key(debug_site, accept):
    response = debug_site.get("/boom/", HTTP_ACCEPT=accept, **ENVIRONMENT)
    page = response.content.decode()
    assert response.status_code == 500 and "the view failed" in page  # Django's technical page
    assert CANARY not in page
    # Everything else is still there to debug with.
    assert "TIME_ZONE" in page and "127.0.0.1:6379/0" in page and "db.internal:5432/batchboard" in page
    assert "o1.ingest.example.com" in page and "SERVER_NAME" in page


def test_the_debug_404_page_shows_no_password(debug_site):
    response = debug_site.get("/nothing-here/", **ENVIRONMENT)
    page = response.content.decode()
    assert response.status_code == 404 and "Using the URLconf defined in" in page  # Django's technical page
    assert CANARY not in page
