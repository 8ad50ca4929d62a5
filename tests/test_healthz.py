import json
from datetime import timedelta

from django.utils import timezone


def test_healthz_reports_database_broker_and_connection_ages(client, connection):
    from batches.models import Connection

    Connection.objects.filter(pk=connection.pk).update(last_success_at=timezone.now() - timedelta(seconds=120),
                                                       last_error="secret detail")
    response = client.get("/healthz")
    data = json.loads(response.content)
    assert response.status_code == 200
    assert data["database"] is True and data["broker"] is True
    [row] = data["connections"]
    assert row["slug"] == "sim" and 120 <= row["last_success_age_s"] <= 130
    assert b"secret detail" not in response.content


def test_healthz_is_503_when_the_broker_is_unreachable(client, db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/healthz")
    assert response.status_code == 503 and json.loads(response.content)["broker"] is False
