from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from batches.models import Batch, Connection, KeyUnreadable
from batches.payload import batch_fields
from tests import payloads

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789WXYZ"


@pytest.fixture
def conn(db):
    c = Connection(name="Prod", slug="prod")
    c.set_api_key(KEY)
    c.save()
    return c


def _batch(conn, payload) -> Batch:
    return Batch(connection=conn, **batch_fields(payload))


def test_the_api_key_round_trips_through_encryption(conn):
    stored = Connection.objects.get(pk=conn.pk)
    assert KEY not in stored.api_key_encrypted
    assert stored.api_key == KEY
    assert stored.api_key_hint == "…WXYZ"


def test_the_key_is_not_in_repr_or_str(conn):
    assert KEY not in repr(conn) and KEY not in str(conn)


def test_a_rotated_key_list_still_decrypts_old_secrets(conn, settings):
    from cryptography.fernet import Fernet

    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()] + list(settings.ENCRYPTION_KEYS)
    assert Connection.objects.get(pk=conn.pk).api_key == KEY
    conn.set_api_key(KEY)  # re-encrypts with the new first key
    settings.ENCRYPTION_KEYS = settings.ENCRYPTION_KEYS[:1]
    assert conn.api_key == KEY


def test_a_key_encrypted_with_an_unknown_key_is_reported_not_crashed(conn, settings):
    from cryptography.fernet import Fernet

    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(KeyUnreadable):
        Connection.objects.get(pk=conn.pk).api_key
    assert Connection.objects.get(pk=conn.pk).api_key_hint == "API key unreadable: enter it again"


def test_the_admin_never_renders_the_key(conn, client):
    admin = User.objects.create_superuser("root", password="pw-123456789")
    client.force_login(admin)
    for url in ("/admin/batches/connection/", f"/admin/batches/connection/{conn.pk}/change/"):
        response = client.get(url)
        assert response.status_code == 200
        assert KEY not in response.content.decode()
        assert conn.api_key_encrypted not in response.content.decode()
    assert "…WXYZ" in client.get("/admin/batches/connection/").content.decode()


def test_the_admin_keeps_the_key_when_the_field_is_left_empty(conn, client):
    client.force_login(User.objects.create_superuser("root", password="pw-123456789"))
    response = client.post(f"/admin/batches/connection/{conn.pk}/change/", {
        "name": "Prod 2", "slug": "prod", "base_url": "https://api.openai.com/v1", "api_key": "",
        "organization": "", "project": "", "enabled": "on", "poll_interval": "15"})
    assert response.status_code == 302
    conn.refresh_from_db()
    assert conn.name == "Prod 2" and conn.api_key == KEY


def test_a_completed_batch_with_zero_successes_reads_as_a_failure(conn):
    batch = _batch(conn, payloads.ALL_FAILED)
    assert batch.is_terminal and batch.all_requests_failed
    assert batch.outcome == "all_failed"
    assert batch.success_rate() == 0.0


def test_progress_and_success_rate(conn):
    batch = _batch(conn, payloads.IN_PROGRESS)
    assert batch.progress() == {"completed": 40.0, "failed": 2.0, "remaining": 58.0, "done": 42.0, "known": True}
    assert batch.success_rate() == pytest.approx(95.2)
    assert not batch.is_terminal


def test_progress_is_safe_for_inconsistent_counts(conn):
    batch = _batch(conn, payloads.batch(request_counts={"total": 5, "completed": 9, "failed": -2}))
    progress = batch.progress()
    assert progress["completed"] == 100.0 and progress["remaining"] == 0.0


def test_time_in_status_and_expiry(conn):
    batch = _batch(conn, payloads.IN_PROGRESS)
    now = batch.in_progress_at + timedelta(minutes=10)
    assert batch.time_in_status(now) == timedelta(minutes=10)
    assert batch.expires_in(now) == batch.expires_at - now
    assert _batch(conn, payloads.CANCELLED).expires_in(now) is None


def test_an_unknown_status_is_neither_active_nor_terminal(conn):
    batch = _batch(conn, payloads.FUTURE)
    assert not batch.is_known_status and not batch.is_terminal and not batch.is_active
    assert batch.outcome == "unknown" and batch.time_in_status(timezone.now()) is None


def test_stuck_hint_uses_the_status_limit_without_history(conn, settings):
    settings.STUCK_AFTER_SECONDS = {"finalizing": 60}
    batch = _batch(conn, payloads.batch(status="finalizing", finalizing_at=payloads.CREATED))
    from usage.baselines import is_stuck

    assert is_stuck(batch, {}, batch.finalizing_at + timedelta(seconds=61))
    assert not is_stuck(batch, {}, batch.finalizing_at + timedelta(seconds=59))
