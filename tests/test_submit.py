"""/batches/new/: an uploaded JSONL checked line by line, the preview, metadata rows, splitting, and one batch
per part through the idempotent submit path. Against the real simulator over HTTP."""

import html
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from batches import uploads
from batches.models import AuditEvent, Batch, Submission

URL = "/batches/new/"


def _line(n: int, **changes) -> bytes:
    item = {"custom_id": f"task-{n}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Say {n}."}]}}
    for key, value in changes.items():
        if key == "model":
            item["body"]["model"] = value
        elif value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return json.dumps(item).encode()


def _jsonl(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


def _upload(client, data: bytes, name: str = "requests.jsonl"):
    return client.post(URL, {"connection": "sim", "file": SimpleUploadedFile(name, data)})


def _fields(page: str) -> dict:
    return {name: value for name, value in re.findall(r'name="(staged|token)" value="([^"]+)"', page)}


GOOD = [_line(1), _line(2), _line(3)]
RULES = [
    ("not JSON", [b'{"custom_id": "task-2", '], "not valid JSON"),
    ("not an object", [b'["a", "list"]'], "not a JSON object"),
    ("no custom_id", [_line(2, custom_id=None)], "`custom_id` is missing"),
    ("a repeated custom_id", [_line(1)], "`custom_id` \"task-1\" repeats line 1"),
    ("a GET", [_line(2, method="GET")], "`method` must be \"POST\""),
    ("an unknown url", [_line(2, url="/v1/nothing")], "is not a Batch endpoint"),
    ("another endpoint", [_line(2, url="/v1/embeddings")], "differs from the file's /v1/chat/completions"),
    ("no model", [_line(2, model=None)], "`body.model` is missing"),
    ("another model", [_line(2, model="gpt-4.1")], "differs from the file's gpt-4o-mini: one model a batch"),
    ("streaming", [json.dumps({**json.loads(_line(2)), "body": {"model": "gpt-4o-mini", "stream": True}}).encode()],
     "batches do not stream"),
    ("a blank line", [b"   "], "The line is blank."),
    ("not UTF-8", [b'{"custom_id": "caf\xe9"}'], "not UTF-8"),
    ("a line too long", [_line(2, pad="x" * 5000)], "longer than 4,096 bytes"),
]


@pytest.mark.parametrize("rule,bad,message", RULES, ids=[rule for rule, _, _ in RULES])
def test_every_rule_is_checked_with_its_line_number(client, login, connection, settings, rule, bad, message):
    settings.SUBMIT_MAX_LINE_BYTES = 4096
    login("operator")
    response = _upload(client, _jsonl(GOOD[0], *bad, GOOD[2]))
    assert response.status_code == 400
    rows = re.findall(r'<td class="num">(\d+)</td><td>([^<]*)</td>',
                      response.content.decode().split('id="upload-errors"')[1])
    assert any(number == "2" and message in html.unescape(row) for number, row in rows), rows
    assert "nothing was sent" in response.content.decode()


def test_a_file_without_requests_is_refused(client, login, connection):
    login("operator")
    assert "The submitted file is empty." in _upload(client, b"").content.decode()
    assert "The line is blank." in _upload(client, b"\n").content.decode()


def test_at_most_100_errors_are_listed_then_a_count(client, login, connection):
    login("operator")
    page = _upload(client, _jsonl(*[b"not json"] * 250)).content.decode()
    assert page.count("not valid JSON") == uploads.MAX_ERRORS
    assert "…and 250 in all; the first 100 are shown." in page


def test_lines_are_found_across_read_chunks(settings):
    data = _jsonl(*[_line(n, pad="y" * (n * 37 % 300)) for n in range(1, 400)])
    chunks = [data[i:i + 97] for i in range(0, len(data), 97)]
    assert [line for _, line, _ in uploads.lines(chunks, 1 << 20)] == data.splitlines()


def test_the_preview_shows_lines_model_count_and_a_byte_based_cost(client, login, connection):
    login("operator")
    page = _upload(client, _jsonl(*GOOD)).content.decode()
    assert '<dd id="upload-count">3</dd>' in page and '<dd id="upload-model">gpt-4o-mini</dd>' in page
    assert "task-1" in page.split('id="upload-lines"')[1]
    assert "≈ $" in page and "byte-based: no tokenizer is used" in page


def test_a_submission_creates_one_batch_with_its_metadata_and_is_audited(client, login, simulator, connection):
    user = login("operator")
    fields = _fields(_upload(client, _jsonl(*GOOD), name="eval.jsonl").content.decode())
    form = {**fields, "completion_window": "24h", "rows": "3", "key_0": "project", "value_0": "eval",
            "key_1": "owner", "value_1": "ana"}
    response = client.post(URL, form)
    batch = Batch.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/batches/sim/{batch.batch_id}/"
    assert batch.metadata == {"batchboard_intent": f"{fields['token']}-1", "project": "eval", "owner": "ana"}
    assert simulator.stats()["batches_created"] == 1
    event = AuditEvent.objects.get(action="submit")
    assert event.user == user and event.batch == batch and "upload eval.jsonl" in event.detail
    assert event.request_id and f"batchboard-{fields['token']}-1.jsonl" in event.result
    client.post(URL, form)  # a double click, or the browser's repeated POST
    assert simulator.stats()["batches_created"] == 1 and Submission.objects.count() == 1


def test_the_file_the_api_receives_is_the_uploaded_one(client, login, simulator, connection):
    import requests

    from tests.conftest import SIM_KEY

    login("operator")
    data = _jsonl(*GOOD)
    client.post(URL, {**_fields(_upload(client, data).content.decode()), "completion_window": "24h"})
    batch = Batch.objects.get()
    sent = requests.get(f"{simulator.url}/files/{batch.input_file_id}/content", timeout=10,
                        headers={"Authorization": f"Bearer {SIM_KEY}"}).content
    assert sent == data


@pytest.mark.parametrize("key,value,message", [
    ("k" * 65, "v", "at most 64 characters"),
    ("k", "v" * 513, "at most 512 characters"),
    ("batchboard_intent", "mine", "is Batchboard's own key"),
    ("", "orphan", "A value needs a key."),
])
def test_metadata_rows_are_checked_against_the_api_limits(client, login, simulator, connection, key, value, message):
    login("operator")
    fields = _fields(_upload(client, _jsonl(*GOOD)).content.decode())
    response = client.post(URL, {**fields, "completion_window": "24h", "key_0": key, "value_0": value})
    assert response.status_code == 400 and message in html.unescape(response.content.decode())
    assert simulator.stats()["batches_created"] == 0


def test_rows_can_be_added_up_to_15_without_script(client, login, simulator, connection):
    login("operator")
    fields = _fields(_upload(client, _jsonl(*GOOD)).content.decode())
    page = client.post(URL, {**fields, "completion_window": "24h", "rows": "14", "more": "1"}).content.decode()
    assert 'name="key_14"' in page and "Add a row" not in page
    assert simulator.stats()["batches_created"] == 0


def test_a_file_over_the_limits_is_split_into_linked_batches(client, login, simulator, connection, settings):
    settings.BATCH_MAX_REQUESTS = 3
    login("operator")
    page = _upload(client, _jsonl(*[_line(n) for n in range(1, 8)])).content.decode()
    assert "split into 3 batches" in page
    client.post(URL, {**_fields(page), "completion_window": "24h"})
    assert simulator.stats()["batches_created"] == 3
    submission = Submission.objects.get()
    assert [part.requests for part in submission.parts.all()] == [3, 3, 1]
    assert all(part.batch is not None for part in submission.parts.all())
    assert AuditEvent.objects.filter(action="submit", ok=True).count() == 3


def test_a_forged_staged_file_is_refused(client, login, simulator, connection):
    login("operator")
    fields = _fields(_upload(client, _jsonl(*GOOD)).content.decode())
    response = client.post(URL, {**fields, "staged": "uploads/../../etc/passwd", "completion_window": "24h"})
    assert simulator.stats()["batches_created"] == 0 and response.status_code in (302, 400)


def test_uploads_stream_to_a_temporary_file(settings):
    assert settings.FILE_UPLOAD_HANDLERS == ["django.core.files.uploadhandler.TemporaryFileUploadHandler"]
