"""Odd and hostile API data: stored and displayed safely, nothing crashes."""

import json
import logging
import re
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.urls import reverse

from batches.client import BatchApi, PermanentError
from batches.files import read_batch_files
from batches.models import AuditEvent, Batch, Connection
from batches.redact import SHOWN_LIMIT
from batches.store import store_batch
from batches.sync import sync_connection
from tests import payloads

EVIL = "<script>alert('x')</script>\"'><img src=x onerror=alert(1)>"
UNICODE = "数据 🚀 Ωμέγα \u202e evil \u0000 nul"


def _hostile_batches() -> list[dict]:
    base = {"object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": "file-1",
            "completion_window": "24h", "created_at": 1_800_000_000}
    return [
        {**base, "id": "batch_future_status", "status": "paused_for_review", "created_at": 1_800_000_009,
         "shiny_new_field": {"nested": [1, 2, 3]}},
        {"id": "batch_nulls", "object": "batch", "endpoint": None, "input_file_id": None, "completion_window": None,
         "status": None, "created_at": 1_800_000_008, "model": None, "errors": None, "output_file_id": None,
         "error_file_id": None, "in_progress_at": None, "expires_at": None, "finalizing_at": None,
         "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
         "request_counts": None, "usage": None, "metadata": None},
        {**base, "id": "batch_huge_metadata", "status": "completed", "created_at": 1_800_000_007,
         "error_file_id": "file-drip", "metadata": {f"key{i}-{EVIL}": ("v" * 5000) + EVIL for i in range(300)}},
        {**base, "id": "batch_evil_strings", "status": "failed", "created_at": 1_800_000_006, "model": EVIL,
         "endpoint": EVIL, "input_file_id": EVIL, "output_file_id": EVIL, "completion_window": EVIL,
         "metadata": {"description": EVIL, "unicode": UNICODE},
         "errors": {"object": "list", "data": [{"code": EVIL, "message": UNICODE + EVIL, "param": EVIL, "line": -4},
                                               {"code": None, "message": None, "param": None, "line": "seven"},
                                               "not even an object"]}},
        {**base, "id": "batch_time_travel", "status": "in_progress", "created_at": 1_800_000_005,
         "in_progress_at": -62_135_596_800 * 10, "expires_at": 10**18, "finalizing_at": "tomorrow",
         "completed_at": 2.5e9},
        {**base, "id": "batch_odd_counts", "status": "in_progress", "created_at": 1_800_000_004,
         "request_counts": {"total": -5, "completed": 10**30, "failed": "many"},
         "usage": {"input_tokens": -1, "input_tokens_details": None, "output_tokens": 2**70,
                   "output_tokens_details": {"reasoning_tokens": "lots"}, "total_tokens": 3.7}},
        {**base, "id": "batch_" + "é" * 40, "status": "completed", "created_at": 1_800_000_003},
        "not an object at all",
        {**base, "status": "completed", "created_at": 1_800_000_002},  # no id: skipped, reported
    ]


class _Hostile(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        batches = _hostile_batches()
        if self.path.startswith("/broken/"):  # a 400 whose message is 60,000 characters
            return self._send(400, {"error": {"message": "E" * 60_000, "type": "invalid_request_error"}})
        if self.path.endswith("/content"):  # a file drip-fed one byte every 50 ms
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            try:
                for _ in range(10000):
                    self.wfile.write(b"{")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            return
        if self.path.startswith("/v1/batches?"):
            payload = {"object": "list", "data": batches, "has_more": False}
        elif self.path.startswith("/v1/batches/"):
            wanted = self.path.rsplit("/", 1)[1]
            payload = next((b for b in batches if isinstance(b, dict) and b.get("id") == wanted), None)
            if payload is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        else:  # file metadata: garbage
            payload = {"bytes": "huge", "expires_at": "never"}
        self._send(200, payload)

    def _send(self, status: int, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _EchoesKey(BaseHTTPRequestHandler):
    """Refuses every key and echoes it back: in the JSON error of the list, in the status line of a batch,
    and for a file just where the client cuts long messages."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.path.startswith("/v1/batches?"):
            body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}. Find yours elsewhere.",
                                         "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
            self.send_response(401)
        elif self.path.startswith("/v1/files/"):
            message = "x" * (SHOWN_LIMIT - 20) + key
            body = json.dumps({"error": {"message": message, "code": "invalid_api_key"}}).encode()
            self.send_response(401)
        else:
            body = b"unauthorized"
            self.send_response(401, f"Key {key} is not valid")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def _serving(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hostile(db, request):
    """A connection to the hostile server; a test picks another handler with `indirect` parametrization."""
    with _serving(getattr(request, "param", _Hostile)) as url:
        conn = Connection(name=EVIL, slug="hostile", base_url=url)
        conn.set_api_key("sk-hostile")
        conn.save()
        yield conn


@pytest.fixture
def quick_cuts(settings):
    """A drip-fed stream is cut after 0.3 s."""
    settings.FILE_STREAM_MIN_BYTES_PER_SECOND, settings.FILE_STREAM_GRACE_SECONDS = 100, 0.3


def test_hostile_payloads_are_stored_and_shown_safely(client, login, hostile, quick_cuts):
    result = sync_connection(connection_id=hostile.pk)
    assert not result.error, result.error
    assert result.seen == 7 and len(result.problems) == 2  # the string and the id-less object
    assert sync_connection(connection_id=hostile.pk).error == ""  # and again, retrieving the active ones

    stored = {b.batch_id: b for b in Batch.objects.all()}
    assert stored["batch_future_status"].status == "paused_for_review"
    assert stored["batch_future_status"].raw["shiny_new_field"] == {"nested": [1, 2, 3]}
    assert stored["batch_nulls"].status == "unknown" and stored["batch_nulls"].total_tokens is None
    assert len(stored["batch_huge_metadata"].metadata) == 300
    assert stored["batch_time_travel"].expires_at is None and stored["batch_time_travel"].completed_at.year == 2049
    odd = stored["batch_odd_counts"]
    assert odd.completed_requests == 2**63 - 1 and odd.failed_requests == 0 and odd.output_tokens == 2**63 - 1
    assert "\x00" not in stored["batch_evil_strings"].metadata["unicode"]

    login("admin")
    pages = [client.get("/"), client.get("/?q=script"), client.get("/?status=unknown")]
    urls = [reverse("batch-detail", args=["hostile", batch_id]) for batch_id in stored]  # "batch_é…" is encoded
    pages += [client.get(url) for url in urls]
    for batch in stored.values():
        read_batch_files(batch.pk)  # garbage metadata, a drip-fed error file
    pages += [client.get(url + "files/", HTTP_HX_REQUEST="true") for url in urls]
    for response in pages:
        assert response.status_code == 200, response.request["PATH_INFO"]
        body = response.content.decode()
        assert "<script>alert" not in body and "<img src=x" not in body
    assert "unknown: paused_for_review" in pages[0].content.decode()
    drip_panel = client.get(reverse("batch-files", args=["hostile", "batch_huge_metadata"]), HTTP_HX_REQUEST="true")
    assert "The error file could not be read right now: Network error: the answer came slower than 100 bytes/s" in \
        drip_panel.content.decode()


def test_a_drip_fed_download_is_cut_and_audited(client, login, hostile, quick_cuts):
    sync_connection(connection_id=hostile.pk)
    login("operator")
    started = time.monotonic()
    response = client.get(reverse("batch-download", args=["hostile", "batch_huge_metadata", "error"]))
    with pytest.raises(Exception, match="slower than 100 bytes/s"):
        b"".join(response.streaming_content)
    assert time.monotonic() - started < 1
    event = Batch.objects.get(batch_id="batch_huge_metadata").audit_events.get()
    assert event.ok is False and event.result.startswith("file-drip: cut after ")


def test_api_error_text_is_shown_bounded_on_the_list_and_detail_pages(client, login, hostile):
    """A validation error message of 1 MB, and a sync error of 60,000 characters."""
    broken = Connection(name="Broken", slug="broken", base_url=hostile.base_url.replace("/v1", "/broken/v1"))
    broken.set_api_key("sk-hostile")
    broken.save()
    store_batch(broken, {"id": "batch_huge_error", "object": "batch", "status": "failed", "created_at": 1_800_000_000,
                         "errors": {"data": [{"code": "E" * 1_000_000, "message": "E" * 1_000_000, "line": 1}]}})
    assert sync_connection(connection_id=broken.pk).error
    login("admin")
    for url in ("/", "/batches/broken/batch_huge_error/"):
        page = client.get(url).content.decode()
        assert len(page) < 150_000, url
        assert max(len(run) for run in re.findall("E+", page)) <= 64 * 1024, url  # the raw JSON's cap
        assert re.search(r"[ >]E{490,500}… \([\d,]+ more characters\)", page), url  # the messages' cap


# ----- more shapes: a path-like id, metadata nested 600 deep, an oldest-first list ------------------------
PATH_LIKE_ID = "gw/batch/../42"
TRUNCATED = "[truncated by Batchboard]"


def _nested(levels: int) -> dict:
    value: dict = {"leaf": EVIL}
    for _ in range(levels):
        value = {"n": value}
    return value


def _more_hostile_batches() -> list[dict]:
    """Newer than every batch of `_hostile_batches()`."""
    base = {"object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": "file-1",
            "completion_window": "24h", "status": "completed"}
    return [
        {**base, "id": PATH_LIKE_ID, "created_at": 1_800_000_011, "metadata": {"description": "via a gateway"}},
        {**base, "id": "batch_deep_metadata", "created_at": 1_800_000_010, "metadata": _nested(600)},
    ]


class _HostileShapes(_Hostile):
    """Lists `_more_hostile_batches()` and `_hostile_batches()` newest first, in pages (`limit`, `after`)."""

    oldest_first = False

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path != "/v1/batches":
            return super().do_GET()
        rows = _more_hostile_batches() + _hostile_batches()
        if self.oldest_first:
            rows.reverse()
        query = dict(parse_qsl(url.query))
        ids = [row.get("id") if isinstance(row, dict) else None for row in rows]
        start = ids.index(query["after"]) + 1 if query.get("after") else 0
        end = start + int(query.get("limit", 20))
        body = json.dumps({"object": "list", "data": rows[start:end], "has_more": end < len(rows)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _HostileOldestFirst(_HostileShapes):
    """The same list the other way round, as some OpenAI-compatible gateways serve it."""

    oldest_first = True


@pytest.mark.parametrize("hostile", [_HostileShapes], indirect=True)
def test_a_path_like_id_is_listed_and_its_page_answers(client, login, hostile):
    assert not sync_connection(connection_id=hostile.pk).error
    assert Batch.objects.filter(batch_id=PATH_LIKE_ID).exists()
    login("viewer")
    listing = client.get("/")
    assert listing.status_code == 200 and 'href="/batches/hostile/~Z3cvYmF0Y2gvLi4vNDI/"' in listing.content.decode()
    page = client.get("/batches/hostile/~Z3cvYmF0Y2gvLi4vNDI/")
    assert page.status_code == 200 and "via a gateway" in page.content.decode()
    assert PATH_LIKE_ID in page.content.decode()
    files = client.get("/batches/hostile/~Z3cvYmF0Y2gvLi4vNDI/files/", HTTP_HX_REQUEST="true")
    assert files.status_code == 200


@pytest.mark.parametrize("hostile", [_HostileShapes], indirect=True)
def test_metadata_nested_600_deep_is_stored_bounded_and_shown(client, login, hostile):
    for _ in range(2):
        assert not sync_connection(connection_id=hostile.pk).error
    depth, node = 0, Batch.objects.get(batch_id="batch_deep_metadata").metadata
    while isinstance(node, dict):
        node, depth = node.get("n"), depth + 1
    assert depth <= 33 and node == TRUNCATED
    hostile.refresh_from_db()
    assert hostile.health() != "failing"
    login("viewer")
    assert client.get("/").status_code == 200
    page = client.get("/batches/hostile/batch_deep_metadata/")
    assert page.status_code == 200 and TRUNCATED in page.content.decode()


@pytest.mark.parametrize("hostile", [_HostileOldestFirst], indirect=True)
def test_an_oldest_first_list_is_imported_whole(hostile, settings):
    settings.SYNC_PAGE_SIZE = 3  # four pages
    valid = {b["id"] for b in _more_hostile_batches() + _hostile_batches() if isinstance(b, dict) and "id" in b}
    for _ in range(2):
        assert not sync_connection(connection_id=hostile.pk).error
    assert set(Batch.objects.values_list("batch_id", flat=True)) == valid and len(valid) == 9
    hostile.refresh_from_db()
    assert hostile.list_order == "oldest_first" and hostile.tail_cursor == PATH_LIKE_ID
    assert hostile.health() == "ok"  # not failing, not degraded: the order is the server's, consistently


# ----- a key echoed in an error ---------------------------------------------------------------------------
KEYS = {
    "openai project key": "sk-proj-" + "Ab1Cd2Ef3" * 6,
    "40 hex characters": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "groq-style": "gsk_" + "Zx9Qw8Er7" * 6,
    "JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiYXRjaGJvYXJkIn0.c2lnbmF0dXJlLXZhbHVlLTEyMzQ",
    "with / and +": "sk-live/Zm9vYmFy+YmF6cXV4/MTIzNDU2+Nzg5MA==",
}


@pytest.mark.parametrize("key", KEYS.values(), ids=KEYS.keys())
def test_a_key_echoed_in_an_error_reaches_no_page_log_or_stored_text(client, login, db, caplog, key):
    caplog.set_level(logging.DEBUG)
    with _serving(_EchoesKey) as url:
        conn = Connection(name="Echo", slug="echo", base_url=url)
        conn.set_api_key(key)
        conn.save()
        batch, _ = store_batch(conn, payloads.IN_PROGRESS)
        assert "HTTP 401" in sync_connection(connection_id=conn.pk).error
        login("admin")
        detail = f"/batches/echo/{batch.batch_id}/"
        pages = [client.get("/"), client.get(detail), client.post(detail + "refresh/", HTTP_HX_REQUEST="true"),
                 client.post(detail + "refresh/", follow=True),
                 client.get("/admin/batches/connection/"), client.get(f"/admin/batches/connection/{conn.pk}/change/"),
                 client.get("/admin/batches/auditevent/")]

    assert "Incorrect API key provided: [redacted]" in Connection.objects.get().last_error
    assert "Refresh failed: HTTP 401: Key [redacted] is not valid" in pages[2].content.decode()
    stored = repr(list(Connection.objects.values("last_error"))) + repr(list(AuditEvent.objects.values()))
    for text in [page.content.decode() for page in pages] + [stored, caplog.text]:
        assert key not in text and key[-12:] not in text


def test_a_key_echoed_where_a_long_message_is_cut_leaves_no_part_behind(db):
    key = KEYS["40 hex characters"]
    with _serving(_EchoesKey) as url, BatchApi(base_url=url, api_key=key) as api:
        with pytest.raises(PermanentError) as refused:
            api.file_metadata("file-1")
    assert str(refused.value).endswith("x[redacted]") and key[:12] not in str(refused.value)
