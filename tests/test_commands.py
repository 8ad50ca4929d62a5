import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from batches.models import Batch, Connection
from tests.conftest import SIM_KEY


def _run(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


def test_sync_batches_prints_one_summary_line_per_connection(connection, simulator):
    simulator.simulator.populate(historical=12)
    output = _run("sync_batches")
    assert output.startswith("sim: seen 12, new 12, changed 0, 1 HTTP requests, ")
    assert "(full walk)" in output
    assert Batch.objects.count() == 12
    assert "new 0" in _run("sync_batches", "--connection", "sim", "--full")


def test_sync_batches_refuses_an_unknown_slug(db):
    with pytest.raises(CommandError, match="No connection with slug 'nope'"):
        _run("sync_batches", "--connection", "nope")


def test_add_connection_checks_the_key_and_saves_it_encrypted(db, simulator, monkeypatch):
    monkeypatch.setenv("SIM_KEY_VAR", SIM_KEY)
    output = _run("add_connection", "Team A", "--base-url", simulator.url, "--api-key-env", "SIM_KEY_VAR",
                  "--project", "proj_1")
    assert "The key works" in output and SIM_KEY not in output
    conn = Connection.objects.get(slug="team-a")
    assert conn.api_key == SIM_KEY and conn.project == "proj_1" and SIM_KEY not in conn.api_key_encrypted


def test_add_connection_refuses_a_key_the_api_rejects(db, simulator, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-bad-key-999")
    with pytest.raises(CommandError, match="The API refused the key: HTTP 401") as info:
        _run("add_connection", "Bad", "--base-url", simulator.url)
    assert "sk-bad-key-999" not in str(info.value)
    assert not Connection.objects.exists()


def test_bootstrap_creates_the_demo_user_and_the_simulator_connection_once(db, monkeypatch, tmp_path, settings):
    settings.VAR_DIR = tmp_path
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    _run("bootstrap", "--simulator-url", "http://127.0.0.1:8100/v1")
    from tests import payloads
    from batches.store import store_batch

    store_batch(Connection.objects.get(slug="simulator"), payloads.IN_PROGRESS)
    assert "Cleared the stored batches" in _run("bootstrap", "--simulator-url", "http://127.0.0.1:8100/v1")
    assert not Batch.objects.exists()  # a restarted simulator is a new world
    admin = User.objects.get()
    assert admin.is_superuser and admin.groups.filter(name="Admin").exists()
    assert "admin /" in (tmp_path / "demo-login.txt").read_text()
    assert list(Connection.objects.values_list("slug", "enabled")) == [("simulator", True)]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-1234")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://example.test/v1")
    _run("bootstrap")
    assert dict(Connection.objects.values_list("slug", "enabled")) == {"simulator": False, "openai": True}
    assert Connection.objects.get(slug="openai").base_url == "https://example.test/v1"
