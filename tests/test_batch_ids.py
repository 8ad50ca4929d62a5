"""Batch ids of any shape: every page links to and answers for them, and nothing the API sends can spoof one."""

import re
from urllib.parse import urljoin

import pytest
from django.urls import reverse

from batches.models import Batch
from batches.store import store_batch
from tests import payloads

ODD_IDS = [
    "gw/batch/42", ".", "..", "batch%2F41", "batch?x=1", "batch#frag", "batch 42 ", "batch_数据_🚀",
    "batch_\u202egnp.exe", "~YWJj", "b" * 254 + "/", "é" * 255,
]
BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def operator(login):
    return login("operator")


def _odd_batch(connection, simulator, batch_id: str) -> Batch:
    """An in-progress batch under `batch_id` whose input file exists in the simulator (so it downloads)."""
    real = simulator.inject_batch("in_progress", lines=3)
    batch, _ = store_batch(connection, payloads.batch(
        id=batch_id, status="in_progress", input_file_id=real["input_file_id"], output_file_id="file/../out",
        error_file_id="file #err?", metadata={"description": batch_id}))
    return batch


def _url(name: str, batch_id: str, **kwargs) -> str:
    return reverse(name, kwargs={"slug": "sim", "batch_id": batch_id, **kwargs})


def test_a_plain_id_stays_verbatim_in_urls():
    assert _url("batch-detail", "batch_abc-123") == "/batches/sim/batch_abc-123/"
    assert _url("batch-download", "batch_abc-123", kind="input") == "/batches/sim/batch_abc-123/files/input/"


def test_any_other_id_is_a_tilde_and_unpadded_base64url_of_its_utf8():
    assert _url("batch-detail", "gw/batch/42") == "/batches/sim/~Z3cvYmF0Y2gvNDI/"
    assert _url("batch-detail", "..") == "/batches/sim/~Li4/"
    assert _url("batch-cancel", "~YWJj") == "/batches/sim/~fllXSmo/cancel/"
    assert _url("batch-detail", "batch_\u202egnp.exe") == "/batches/sim/~YmF0Y2hf4oCuZ25wLmV4ZQ/"


@pytest.mark.parametrize("batch_id", ODD_IDS)
def test_an_odd_id_works_through_every_page(client, operator, connection, simulator, batch_id):
    batch = _odd_batch(connection, simulator, batch_id)
    detail = _url("batch-detail", batch_id)
    assert urljoin("http://testserver/", detail) == "http://testserver" + detail  # a browser keeps it as it is

    listing = client.get("/")
    assert listing.status_code == 200 and f'href="{detail}"' in listing.content.decode()
    page = client.get(detail)
    assert page.status_code == 200 and page.context["batch"] == batch
    for name in ("batch-files", "batch-cancel", "batch-refresh"):
        assert f'"{_url(name, batch_id)}"' in page.content.decode()
    assert client.get(_url("batch-files", batch_id)).status_code == 200
    assert client.get(_url("batch-files", batch_id), HTTP_HX_REQUEST="true").status_code == 200
    assert client.get(_url("batch-cancel", batch_id)).status_code == 200
    download = client.get(_url("batch-download", batch_id, kind="input"))
    assert download.status_code == 200 and b"".join(download.streaming_content).count(b"\n") == 3
    assert client.get(_url("batch-download", batch_id, kind="nonsense")).status_code == 404
    for name in ("batch-cancel", "batch-refresh"):
        response = client.post(_url(name, batch_id))
        assert response.status_code == 302 and response["Location"] == detail


@pytest.mark.parametrize("segment", ["~", "~%%", "~YS9", "~YWJj", "~Lg==", "~_w", "~AA", "a.b", "..", "a%2Fb",
                                     "~" + "A" * 5001])
def test_a_segment_that_is_not_an_encoded_id_is_a_404(client, operator, connection, simulator, segment):
    """Bad base64, a non-canonical form ("abc" is written verbatim, padding is not written), bytes that are
    not UTF-8, NUL (never in a stored id), characters outside the scheme."""
    for batch_id in ("abc", ".", "a.b", "a/b", "a"):
        store_batch(connection, payloads.batch(id=batch_id))
    for suffix in ("", "files/", "files/input/", "cancel/"):
        assert client.get(f"/batches/sim/{segment}/{suffix}").status_code == 404
    assert client.post(f"/batches/sim/{segment}/refresh/").status_code == 404


@pytest.mark.parametrize("batch_id,name", [
    ("batch_abc123", "batch_abc123_input.jsonl"),
    ("gw/batch/42", "gw_batch_42-ce6ef77491_input.jsonl"),
    ("gw_batch_42", "gw_batch_42_input.jsonl"),
    ("..", "__-5ec1f7e700_input.jsonl"),
    ("b" * 254 + "/", "b" * 64 + "-d038141416_input.jsonl"),
])
def test_a_download_is_named_by_the_safe_part_of_the_id_and_a_hash(client, operator, connection, simulator,
                                                                    batch_id, name):
    _odd_batch(connection, simulator, batch_id)
    response = client.get(_url("batch-download", batch_id, kind="input"))
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'


def test_bidi_controls_in_api_text_are_shown_as_visible_markers(client, operator, connection, simulator):
    batch_id = "batch_\u202egnp.exe"
    store_batch(connection, payloads.batch(
        id=batch_id, status="in_progress", model="gpt\u200f", input_file_id="file-\u2066x",
        metadata={"description": "nightly \u2067run", "owner\u061c": "ana\u202a"},
        errors={"object": "list", "data": [{"code": "bad\u202b", "message": "line \u202c", "line": 1}]}))
    store_batch(connection, payloads.batch(id="batch_odd_status", status="paused\u202e"))
    refused = client.post(_url("batch-cancel", "batch_odd_status"), follow=True)
    assert "A paused⟨U+202E⟩ batch cannot be cancelled." in refused.content.decode()
    assert not BIDI.search(refused.content.decode())
    pages = [client.get("/"), client.get(_url("batch-detail", batch_id)), client.get(_url("batch-cancel", batch_id)),
             client.get(_url("batch-files", batch_id)), client.get(_url("batch-download", batch_id, kind="output"))]
    for response in pages:
        body = response.content.decode()
        assert "batch_⟨U+202E⟩gnp.exe" in body, response.request["PATH_INFO"]
        # the copy button copies the real id; nothing else shows a raw control
        assert not BIDI.search(re.sub(r'data-copy="[^"]*"', "", body)), response.request["PATH_INFO"]
    detail = pages[1].content.decode()
    for marker in ("gpt⟨U+200F⟩", "file-⟨U+2066⟩x", "nightly ⟨U+2067⟩run", "owner⟨U+061C⟩", "ana⟨U+202A⟩",
                   "bad⟨U+202B⟩", "line ⟨U+202C⟩"):
        assert marker in detail
    assert "<bdi>batch_⟨U+202E⟩gnp.exe</bdi>" in detail
    listing = pages[0].content.decode()
    assert ">batch_⟨U+202E⟩gnp.exe</bdi></a>" in listing and "unknown: paused⟨U+202E⟩" in listing


def test_a_row_that_cannot_be_rendered_is_marked_and_logged_and_the_page_still_answers(
        client, operator, connection, monkeypatch, caplog):
    store_batch(connection, payloads.batch(id="batch_fine", created_at=payloads.CREATED))
    store_batch(connection, payloads.batch(id="batch_broken", created_at=payloads.CREATED + 1))
    progress = Batch.progress

    def breaks_for_one(self):
        if self.batch_id == "batch_broken":
            raise ZeroDivisionError("a value no row can show")
        return progress(self)

    monkeypatch.setattr(Batch, "progress", breaks_for_one)
    response = client.get("/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "This batch could not be shown" in body and "batch_broken" in body
    assert 'href="/batches/sim/batch_fine/"' in body
    assert any(r.levelname == "ERROR" and r.exc_info and "batch_broken" in r.getMessage() for r in caplog.records)
