"""ALLOWED_API_HOSTS: the admin form, add_connection and the client itself send keys to listed hosts only."""

import io

import pytest
from django.core.management import CommandError, call_command

from batches.models import Connection
from batches.sync import sync_connection
from tests.conftest import SIM_KEY


def _form(**changes) -> dict:
    data = {"name": "Elsewhere", "slug": "elsewhere", "base_url": "https://api.openai.com/v1", "api_key": SIM_KEY,
            "organization": "", "project": "", "enabled": "on", "poll_interval": "15"}
    return {**data, **changes}


@pytest.fixture
def only_openai(settings):
    settings.ALLOWED_API_HOSTS = ["api.openai.com", ".azure.example"]


def test_the_admin_refuses_a_host_that_is_not_listed(client, login, only_openai):
    login("admin")
    response = client.post("/admin/batches/connection/add/", _form(base_url="https://attacker.example/v1"))
    assert response.status_code == 200
    assert "attacker.example is not in ALLOWED_API_HOSTS" in response.content.decode()
    assert not Connection.objects.exists()


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "https://API.OpenAI.com:443/v1",
                                 "https://eu.azure.example/openai/v1"])
def test_the_admin_accepts_listed_hosts_and_subdomains_of_a_dotted_entry(client, login, only_openai, url):
    login("admin")
    assert client.post("/admin/batches/connection/add/", _form(base_url=url)).status_code == 302
    assert Connection.objects.get().base_url == url


def test_add_connection_refuses_a_host_that_is_not_listed(db, simulator, monkeypatch, only_openai):
    monkeypatch.setenv("OPENAI_API_KEY", SIM_KEY)
    with pytest.raises(CommandError, match="127.0.0.1 is not in ALLOWED_API_HOSTS"):
        call_command("add_connection", "Sim", "--base-url", simulator.url, stdout=io.StringIO())
    assert not Connection.objects.exists() and simulator.stats()["requests"] == 0


@pytest.mark.parametrize("url", ["{sim}", "http://127.0.0.1:{port}\\@api.openai.com/v1"],
                         ids=["plain", "parsed differently by urllib.parse and by requests"])
def test_a_row_edited_in_the_database_still_sends_its_key_nowhere_else(connection, simulator, only_openai, url):
    port = simulator.url.split(":")[2].split("/")[0]
    Connection.objects.filter(pk=connection.pk).update(base_url=url.format(sim=simulator.url, port=port))
    result = sync_connection(connection_id=connection.pk)
    assert "127.0.0.1 is not in ALLOWED_API_HOSTS" in result.error
    assert "127.0.0.1 is not in ALLOWED_API_HOSTS" in Connection.objects.get().last_error
    assert simulator.stats()["requests"] == 0


def test_an_empty_list_allows_any_host(connection, simulator, settings):
    settings.ALLOWED_API_HOSTS = []
    assert sync_connection(connection_id=connection.pk).error == ""


def test_cancel_and_download_on_a_host_no_longer_listed_say_why_and_send_nothing(client, login, synced_batch,
                                                                                 simulator, only_openai):
    login("operator")
    simulator.reset_stats()
    url = f"/batches/sim/{synced_batch.batch_id}/"
    cancel = client.post(url + "cancel/", HTTP_HX_REQUEST="true")
    download = client.get(url + "files/input/")
    assert cancel.status_code == 200 and "127.0.0.1 is not in ALLOWED_API_HOSTS" in cancel.content.decode()
    assert download.status_code == 503 and "127.0.0.1 is not in ALLOWED_API_HOSTS" in download.content.decode()
    assert simulator.stats()["requests"] == 0
