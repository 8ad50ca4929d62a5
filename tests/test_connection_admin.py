"""The connection admin as an Admin-group user: a stored key only ever goes where it was entered for."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from batches.models import Connection
from tests import payloads
from tests.conftest import SIM_KEY

NEW_KEY = "sk-typed-again-0123456789"


def _form(connection, **changes) -> dict:
    data = {"name": connection.name, "slug": connection.slug, "base_url": connection.base_url, "api_key": "",
            "organization": connection.organization, "project": connection.project, "enabled": "on",
            "poll_interval": str(connection.poll_interval)}
    return {**data, **changes}


@pytest.fixture
def catcher():
    """A server that answers nothing useful and writes down every Authorization header it receives."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    server.seen = seen
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("field,value", [("base_url", "https://attacker.example/v1"),
                                         ("organization", "org-attacker"), ("project", "proj_attacker")])
def test_changing_where_the_key_goes_without_entering_it_again_is_refused(client, login, connection, field, value):
    login("admin")
    response = client.post(f"/admin/batches/connection/{connection.pk}/change/", _form(connection, **{field: value}))
    assert response.status_code == 200
    assert "Enter the API key again to change where it is sent" in response.content.decode()
    stored = Connection.objects.get()
    assert getattr(stored, field) == getattr(connection, field) and stored.api_key == SIM_KEY


def test_changing_the_base_url_with_the_key_entered_again_saves_both(client, login, connection):
    login("admin")
    response = client.post(f"/admin/batches/connection/{connection.pk}/change/",
                           _form(connection, base_url="https://other.example/v1", api_key=NEW_KEY))
    assert response.status_code == 302
    stored = Connection.objects.get()
    assert stored.base_url == "https://other.example/v1" and stored.api_key == NEW_KEY


def test_other_fields_change_without_the_key(client, login, connection):
    login("admin")
    response = client.post(f"/admin/batches/connection/{connection.pk}/change/",
                           _form(connection, name="Renamed", poll_interval="30"))
    assert response.status_code == 302
    stored = Connection.objects.get()
    assert (stored.name, stored.poll_interval, stored.api_key) == ("Renamed", 30, SIM_KEY)


def test_an_admin_cannot_send_the_stored_key_to_their_own_server(client, login, connection, catcher):
    from batches.store import store_batch

    batch, _ = store_batch(connection, payloads.IN_PROGRESS)
    login("admin")
    client.post(f"/admin/batches/connection/{connection.pk}/change/", _form(connection, base_url=catcher.url))
    client.post(f"/batches/sim/{batch.batch_id}/refresh/")  # "Refresh now"
    assert catcher.seen == []


def test_a_webhook_secret_entered_in_the_admin_is_stored_encrypted_and_never_shown(client, login, connection):
    from tests.conftest import WEBHOOK_SECRET

    login("admin")
    url = f"/admin/batches/connection/{connection.pk}/change/"
    assert client.post(url, _form(connection, webhook_secret=WEBHOOK_SECRET)).status_code == 302
    stored = Connection.objects.get()
    assert stored.webhook_secret == WEBHOOK_SECRET and WEBHOOK_SECRET not in stored.webhook_secret_encrypted
    page = client.get(url).content.decode()
    assert WEBHOOK_SECRET not in page and "POST /webhooks/openai/sim/" in page
    client.post(url, _form(connection))  # left empty: kept
    assert Connection.objects.get().webhook_secret == WEBHOOK_SECRET
    client.post(url, _form(connection, forget_webhook_secret="on"))
    assert Connection.objects.get().webhook_secret == ""


def test_a_webhook_secret_that_is_not_one_is_refused(client, login, connection):
    login("admin")
    response = client.post(f"/admin/batches/connection/{connection.pk}/change/",
                           _form(connection, webhook_secret="sk-not-a-webhook-secret"))
    assert response.status_code == 200 and "starts with whsec_" in response.content.decode()
    assert Connection.objects.get().webhook_secret == ""
