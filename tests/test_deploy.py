"""A production deployment that follows the README's Production section works on a fresh PostgreSQL database.

Runs exactly the commands the README lists (migrate, collectstatic, gunicorn) in subprocesses with production
settings (no DEBUG), then logs in over real HTTP. Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust),
as CI provides; it fails, rather than skips, without it.
"""

import importlib
import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
import requests
from cryptography.fernet import Fernet
from django.apps import apps

from tests.processes import listening_address, stop_process

ROOT = Path(__file__).resolve().parent.parent
SERVER = "postgresql://postgres@127.0.0.1:5432"
PASSWORD = "pw-for-the-deploy-test-123"


def _production_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Production"):].split("\n## ", 1)[0]


@pytest.fixture
def fresh_database():
    name = f"deploy_readme_{secrets.token_hex(4)}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER}/{name}"
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def production_env(fresh_database, tmp_path):
    """What the README's Production section has an operator set (STATIC_ROOT in a temporary folder), and the
    production settings module instead of the test one pytest-django exported; nothing else is inherited."""
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "DATABASE_URL": fresh_database,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "BATCHBOARD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "STATIC_ROOT": str(tmp_path / "static"),
    }


def _run(command: str, env: dict) -> str:
    result = subprocess.run(shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_the_readmes_production_steps_give_a_working_log_in(production_env):
    section = _production_section()
    assert "createcachetable" not in section
    web = re.search(r"`(gunicorn dashboard\.wsgi [^`]+)`", section).group(1)
    for step in ("python manage.py migrate", "python manage.py collectstatic --no-input"):
        assert step in section
        _run(step, production_env)
    _run("python manage.py shell -c " + shlex.quote(
        "from django.contrib.auth.models import Group, User; "
        f"User.objects.create_user('viewer', password='{PASSWORD}').groups.add(Group.objects.get(name='Viewer'))"),
        production_env)

    server = subprocess.Popen(shlex.split(re.sub(r"--bind \S+", "--bind 127.0.0.1:0", web)), cwd=ROOT,
                              env=production_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = listening_address(server)
        session = requests.Session()
        form = session.get(f"{base}/login/", timeout=10)
        assert form.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        login = session.post(f"{base}/login/", data={"csrfmiddlewaretoken": token, "username": "viewer",
                                                     "password": PASSWORD}, allow_redirects=False, timeout=10)
        assert login.status_code == 302 and login.headers["Location"] == "/"
        listing = session.get(f"{base}/", timeout=10)
        assert listing.status_code == 200 and "No connection yet" in listing.text
    finally:
        stop_process(server)


def _cache_table_migration(connection) -> None:
    migration = importlib.import_module("batches.migrations.0007_cache_table")
    migration.create_cache_table(apps, SimpleNamespace(connection=connection))


@pytest.mark.django_db
def test_the_cache_table_migration_keeps_an_existing_table_and_skips_a_redis_cache(settings):
    from django.core.cache import cache
    from django.db import connection

    cache.set("survives", "yes")
    _cache_table_migration(connection)
    assert cache.get("survives") == "yes"

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE batchboard_cache")
    default = settings.CACHES["default"]
    settings.CACHES = {**settings.CACHES, "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}}
    _cache_table_migration(connection)
    assert "batchboard_cache" not in connection.introspection.table_names()

    settings.CACHES = {**settings.CACHES, "default": default}
    _cache_table_migration(connection)
    assert "batchboard_cache" in connection.introspection.table_names()
