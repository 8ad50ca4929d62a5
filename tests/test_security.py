"""CSRF on every state change, security headers, `check --deploy`, and API keys that never leak."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from batches.models import AuditEvent, Batch, BatchSnapshot, Connection
from batches.sync import sync_connection
from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def csrf_client(db):
    return Client(enforce_csrf_checks=True)


@pytest.mark.parametrize("suffix", ["cancel/", "refresh/"])
def test_state_changes_without_a_csrf_token_are_refused(csrf_client, login, synced_batch, suffix):
    user = login("operator")
    csrf_client.force_login(user)
    response = csrf_client.post(f"/batches/sim/{synced_batch.batch_id}/{suffix}")
    assert response.status_code == 403
    assert not synced_batch.audit_events.exists()
    assert Batch.objects.get().status == "in_progress"


def test_login_and_logout_need_a_csrf_token(csrf_client, django_user_model):
    django_user_model.objects.create_user("ana", password=PASSWORD)
    assert csrf_client.post("/login/", {"username": "ana", "password": PASSWORD}).status_code == 403
    csrf_client.force_login(django_user_model.objects.get())
    assert csrf_client.post("/logout/").status_code == 403


def test_a_csrf_token_from_the_page_works_through_the_htmx_header(csrf_client, login, synced_batch):
    csrf_client.force_login(login("operator"))
    page = csrf_client.get(f"/batches/sim/{synced_batch.batch_id}/").content.decode()
    token = page.split('"X-CSRFToken": "')[1].split('"')[0]
    response = csrf_client.post(f"/batches/sim/{synced_batch.batch_id}/refresh/", HTTP_X_CSRFTOKEN=token,
                                HTTP_HX_REQUEST="true")
    assert response.status_code == 200


def test_security_headers_and_a_strict_content_security_policy(client, login, synced_batch):
    login("viewer")
    for url in ("/", f"/batches/sim/{synced_batch.batch_id}/", "/login/", "/healthz"):
        response = client.get(url)
        csp = response["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"


def test_pages_have_no_inline_scripts_or_handlers(client, login, synced_batch):
    login("operator")
    for url in ("/", f"/batches/sim/{synced_batch.batch_id}/", f"/batches/sim/{synced_batch.batch_id}/cancel/"):
        page = client.get(url).content.decode()
        assert "<script>" not in page and "hx-on" not in page and " onclick=" not in page
        assert all('src="/static/' in tag for tag in page.split("<script")[1:])


def test_check_deploy_passes_with_production_settings():
    env = {**{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
           "DJANGO_SETTINGS_MODULE": "dashboard.settings", "DEBUG": "0",
           "SECRET_KEY": "x" * 20 + "production-like-secret-key-with-enough-entropy-0123456789",
           "BATCHBOARD_ENCRYPTION_KEYS": os.environ["BATCHBOARD_ENCRYPTION_KEYS"],
           "ALLOWED_HOSTS": "batchboard.example.com", "SECURE_SSL_REDIRECT": "1", "SECURE_HSTS_SECONDS": "31536000",
           "SECURE_PROXY_SSL_HEADER": "1", "SECURE_HSTS_PRELOAD": "1"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_debug_is_off_by_default():
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env.update(DJANGO_SETTINGS_MODULE="dashboard.settings")
    out = subprocess.run([sys.executable, "-c", "import django;django.setup();from django.conf import settings;"
                          "print(settings.DEBUG)"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_the_api_key_never_reaches_pages_logs_snapshots_or_stored_json(client, login, simulator, caplog, settings):
    """A full sync (with failures) and a UI session, with every log line and response captured."""
    secret = "sk-proj-SECRETsecretSECRET0123456789abcdefXYZ"
    simulator.api_key = simulator.httpd.api_key = secret
    conn = Connection(name="Leaky?", slug="sim", base_url=simulator.url)
    conn.set_api_key(secret)
    conn.save()
    simulator.simulator.populate(historical=40, active=6)
    caplog.set_level(logging.DEBUG)
    sync_connection(connection_id=conn.pk)
    simulator.set_faults(next=4, kinds=["500", "429", "drop", "truncated"])
    sync_connection(connection_id=conn.pk)
    sync_connection(connection_id=conn.pk)
    bad = Connection(name="Bad", slug="bad", base_url=simulator.url)
    bad.set_api_key("sk-wrong-" + secret[9:])
    bad.save()
    sync_connection(connection_id=bad.pk)

    login("admin")
    batch = Batch.objects.filter(connection=conn, status="in_progress").first()
    bodies = []
    for url in ["/", "/?q=batch", f"/batches/sim/{batch.batch_id}/", f"/batches/sim/{batch.batch_id}/files/",
                f"/batches/sim/{batch.batch_id}/cancel/", "/healthz", "/admin/batches/connection/",
                f"/admin/batches/connection/{conn.pk}/change/", f"/admin/batches/batch/{batch.pk}/change/",
                "/batches/sim/batch_missing/"]:
        bodies.append(client.get(url).content.decode())
    bodies.append(client.post(f"/batches/sim/{batch.batch_id}/cancel/", HTTP_HX_REQUEST="true").content.decode())
    bodies.append(b"".join(client.get(f"/batches/sim/{batch.batch_id}/files/input/").streaming_content).decode())

    stored = [repr(list(Batch.objects.values_list("raw", flat=True))),
              repr(list(BatchSnapshot.objects.values())), repr(list(AuditEvent.objects.values())),
              repr(list(Connection.objects.values("last_error", "warning", "api_key_encrypted")))]
    for text in bodies + stored + [caplog.text]:
        assert secret not in text
        assert secret[9:] not in text  # not even the tail of it
    assert "HTTP 401" in Connection.objects.get(slug="bad").last_error
