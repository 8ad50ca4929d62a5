import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from dashboard.settings import parse_database_url

ROOT = Path(__file__).resolve().parent.parent


def _start(env_overrides: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (
        "SECRET_KEY", "DEBUG", "BATCHBOARD_ENCRYPTION_KEYS", "DJANGO_SETTINGS_MODULE")}
    env.update({"DJANGO_SETTINGS_MODULE": "dashboard.settings", **env_overrides})
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_sqlite_urls_resolve_against_the_project_not_the_working_directory():
    db = parse_database_url("sqlite:///var/x.sqlite3")
    assert db["NAME"] == str(ROOT / "var" / "x.sqlite3")
    assert parse_database_url("sqlite:////tmp/y.sqlite3")["NAME"] == "/tmp/y.sqlite3"
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]


def test_postgres_urls_are_split_into_their_parts():
    db = parse_database_url("postgres://bob:p%40ss@db.example:6543/batchboard?sslmode=require")
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "bob", "p@ss", "db.example", "6543", "batchboard")
    assert db["OPTIONS"] == {"sslmode": "require"}


@pytest.mark.parametrize("url", ["mysql://x/y", "postgres://host/", "sqlite://", "nonsense"])
def test_a_bad_database_url_names_the_variable(url):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        parse_database_url(url)


def test_start_up_without_a_secret_key_fails_clearly_when_debug_is_off():
    result = _start({"BATCHBOARD_ENCRYPTION_KEYS": "x"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_start_up_without_encryption_keys_fails_clearly_when_debug_is_off():
    result = _start({"SECRET_KEY": "s"})
    assert result.returncode != 0
    assert "BATCHBOARD_ENCRYPTION_KEYS is not set" in result.stderr


@pytest.mark.parametrize("name,value", [("DEBUG", "maybe"), ("API_READ_TIMEOUT", "fast"), ("LIVE_POLL_SECONDS", "0")])
def test_a_bad_value_names_its_variable(name, value):
    result = _start({"SECRET_KEY": "s", "BATCHBOARD_ENCRYPTION_KEYS": "k", name: value})
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {name}" in result.stderr


def test_debug_is_off_unless_set():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"],
        cwd=ROOT, env={**os.environ, "SECRET_KEY": "s", "BATCHBOARD_ENCRYPTION_KEYS": "k",
                       "DJANGO_SETTINGS_MODULE": "dashboard.settings", "DEBUG": ""},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_database_and_broker_are_the_ones_the_environment_names(db):
    """On the PostgreSQL + Redis leg this proves we really run there, not on the defaults."""
    from dashboard.celery import app

    expected_db = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    assert connection.vendor == expected_db
    broker = os.environ.get("CELERY_BROKER_URL", "")
    expected_transport = "redis" if broker.startswith("redis") else ("amqp" if broker.startswith("amqp") else "sqla")
    with app.connection_for_write() as conn:
        assert conn.transport.driver_type == expected_transport or conn.transport_cls.split(":")[0].endswith(
            expected_transport)
        conn.ensure_connection(max_retries=1)
    assert settings.CELERY_BROKER_URL.split(":")[0].startswith(expected_transport.split("+")[0])


def test_the_embedded_broker_looks_for_new_tasks_ten_times_a_second():
    """kombu's SQLAlchemy transport polls once a second; a refresh queued by a webhook would wait for it."""
    from kombu import Connection

    with Connection("sqla+sqlite:///:memory:") as conn:
        assert conn.transport.polling_interval == 0.1
