"""The request index (batches/results.py): real simulator files archived into a test storage, and hand-made
hostile ones."""

import contextlib
import json
import tracemalloc

import pytest
from django.core.files.base import ContentFile
from hypothesis import given, strategies as st

from batches import archive, results
from batches.models import ArchivedFile, Batch, BatchRequest, RequestOutcome
from batches.results import index_batch

COLUMNS = ("custom_id", "outcome", "status_code", "error_code", "model", "input_tokens", "output_tokens",
           "total_tokens", "preview", "input_offset", "input_length", "result_offset", "result_length",
           "result_in_error_file")
PROGRESS = ("kind", "indexed_bytes", "indexed_lines", "malformed_lines")
UNRUN = {"batch_expired": RequestOutcome.EXPIRED, "batch_cancelled": RequestOutcome.CANCELLED}


def _rows(batch) -> list[tuple]:
    return sorted(BatchRequest.objects.filter(batch=batch).values_list(*COLUMNS))


def _progress(batch) -> list[tuple]:
    return sorted(ArchivedFile.objects.filter(batch=batch).values_list(*PROGRESS))


def _forget(batch) -> None:
    """As if the batch had never been indexed."""
    BatchRequest.objects.filter(batch=batch).delete()
    ArchivedFile.objects.filter(batch=batch).update(indexed_bytes=0, indexed_lines=0, malformed_lines=0,
                                                    indexed_at=None)


def _file_lines(archived: ArchivedFile) -> list[dict]:
    """The file's lines that are JSON objects (the simulator's malformed ones left out)."""
    found = []
    for line in b"".join(archive.stream(archived)).splitlines():
        try:
            item = json.loads(line.decode("utf-8"))
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("custom_id"), str) and (
                item.get("response") or item.get("error") or archived.kind == "input"):
            found.append(item)
    return found


def _expected(batch) -> dict:
    """What the index should say of each request, read from the simulator's (well-formed) files directly."""
    files = {f.kind: f for f in batch.archived_files.all()}
    expected = {line["custom_id"]: (RequestOutcome.NOT_RUN, None, "") for line in _file_lines(files["input"])}
    for kind in ("output", "error"):
        for line in _file_lines(files[kind]) if kind in files else ():
            response, error = line["response"], line["error"]
            if response is None:
                expected[line["custom_id"]] = (UNRUN[error["code"]], None, error["code"])
            elif response["status_code"] < 300:
                expected[line["custom_id"]] = (RequestOutcome.SUCCEEDED, 200, "")
            else:
                code = response["body"]["error"]["code"]
                expected[line["custom_id"]] = (RequestOutcome.FAILED, response["status_code"], code)
    return expected


def _batch(connection, **fields) -> Batch:
    fields = {"batch_id": "batch_hand_made", "status": "completed", "model": "gpt-4o-mini",
              "endpoint": "/v1/chat/completions", **fields}
    return Batch.objects.create(connection=connection, **fields)


def _archive(batch, kind: str, data: bytes, state: str = ArchivedFile.STORED) -> ArchivedFile:
    name = archive.storage().save(f"{kind}.jsonl", ContentFile(data))
    return ArchivedFile.objects.create(batch=batch, kind=kind, file_id=f"file-{kind}", state=state, name=name,
                                       bytes=len(data))


def _result(custom_id, *, status=200, body=None, error=None) -> dict:
    response = None if error else {"status_code": status, "request_id": "req_1", "body": body or {}}
    return {"id": "batch_req_1", "custom_id": custom_id, "response": response, "error": error}


def _jsonl(*items) -> bytes:
    return b"".join((item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n" for item in items)


# ----- outcomes, from real simulator files -------------------------------------------------------------------
@pytest.mark.parametrize("status", ["completed", "expired", "cancelled"])
def test_every_request_is_indexed_with_its_outcome(archived_batch, status):
    batch = archived_batch(status, lines=400, fail_share=0.3)
    index_batch(batch.pk)
    expected = _expected(batch)
    rows = {row[0]: row for row in _rows(batch)}
    assert len(rows) == batch.total_requests == 400
    assert {cid: (row[1], row[2], row[3]) for cid, row in rows.items()} == expected
    outcomes = [row[1] for row in rows.values()]
    assert outcomes.count(RequestOutcome.SUCCEEDED) == batch.completed_requests > 0
    assert outcomes.count(RequestOutcome.FAILED) == batch.failed_requests > 0
    codes = {row[2] for row in rows.values() if row[1] == RequestOutcome.FAILED}
    assert any(400 <= code < 500 for code in codes) and any(500 <= code < 600 for code in codes)
    unrun = {"completed": None, "expired": RequestOutcome.EXPIRED, "cancelled": RequestOutcome.CANCELLED}[status]
    if unrun:
        assert outcomes.count(unrun) == 400 - batch.completed_requests - batch.failed_requests > 0


def test_failures_carry_their_message_and_successes_their_answer_and_tokens(archived_batch):
    batch = archived_batch("expired", lines=300, fail_share=0.3, endpoint="/v1/chat/completions")
    index_batch(batch.pk)
    files = {f.kind: f for f in batch.archived_files.all()}
    by_id = {row.custom_id: row for row in BatchRequest.objects.filter(batch=batch)}
    seen = set()
    for line in _file_lines(files["output"]) + _file_lines(files["error"]):
        row = by_id[line["custom_id"]]
        if line["error"]:
            assert row.preview == line["error"]["message"][:120] and row.input_tokens is None
        elif line["response"]["status_code"] >= 300:
            assert row.preview == line["response"]["body"]["error"]["message"][:120]
        else:
            usage = line["response"]["body"]["usage"]
            assert (row.input_tokens, row.output_tokens, row.total_tokens) == (
                usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
            assert row.preview == "Here is a concise answer for this request." and row.model == ""
        seen.add(row.outcome)
    assert seen == {RequestOutcome.SUCCEEDED, RequestOutcome.FAILED, RequestOutcome.EXPIRED}


@pytest.mark.parametrize("endpoint, preview, tokens", [
    ("/v1/responses", "Here is a concise answer for this request.", ("input_tokens", "output_tokens")),
    ("/v1/completions", "Here is a concise answer for this request.", ("prompt_tokens", "completion_tokens")),
    ("/v1/embeddings", "vector of 8", ("prompt_tokens", None)),
    ("/v1/moderations", "not flagged", (None, None)),
])
def test_each_endpoint_gets_its_preview_and_tokens(archived_batch, endpoint, preview, tokens):
    batch = archived_batch("completed", lines=30, fail_share=0, endpoint=endpoint)
    index_batch(batch.pk)
    output = batch.archived_files.get(kind="output")
    for line in _file_lines(output):
        row = BatchRequest.objects.get(batch=batch, custom_id=line["custom_id"])
        usage = line["response"]["body"].get("usage", {})
        assert row.preview == preview and row.model == ""
        assert (row.input_tokens, row.output_tokens) == tuple(usage.get(name) for name in tokens)


def test_a_long_answer_is_previewed_in_120_characters_on_one_line(connection, archive_storage):
    batch = _batch(connection)
    text = "First line\n\n  of a  long answer\t" + "word " * 500
    _archive(batch, "output", _jsonl(
        _result("chat", body={"model": "gpt-4o-mini-2024-07-18", "choices": [{"message": {"content": text}}]}),
        _result("refused", body={"model": "gpt-4o-mini", "choices": [{"message": {"content": None,
                                                                                   "refusal": "I can't."}}]}),
        _result("responses", body={"output": [{"type": "reasoning", "content": [{"type": "reasoning_text"}]},
                                              {"type": "message", "content": [{"type": "output_text",
                                                                               "text": "answer"}]}]}),
        _result("vectors", body={"data": [{"embedding": [0.1] * 3}, {"embedding": [0.2] * 3}]}),
        _result("base64", body={"data": [{"embedding": "AAAAAAAAAAAAAAAA"}]}),
    ))
    index_batch(batch.pk)
    rows = {row.custom_id: row for row in BatchRequest.objects.filter(batch=batch)}
    assert rows["chat"].preview == " ".join(text.split())[:120] and len(rows["chat"].preview) == 120
    assert rows["chat"].model == "gpt-4o-mini-2024-07-18" and rows["refused"].model == ""
    assert rows["refused"].preview == "I can't."
    assert rows["responses"].preview == "answer"
    assert rows["vectors"].preview == "2 vectors of 3" and rows["base64"].preview == "vector of 3"


def test_each_rows_positions_read_back_its_input_and_result_lines(archived_batch):
    batch = archived_batch("cancelled", lines=200, fail_share=0.2)
    index_batch(batch.pk)
    files = {f.kind: f for f in batch.archived_files.all()}
    for row in BatchRequest.objects.filter(batch=batch):
        given = json.loads(archive.read_range(files["input"], row.input_offset, row.input_length))
        assert given["custom_id"] == row.custom_id and given["body"]
        result = files["error" if row.result_in_error_file else "output"]
        answered = json.loads(archive.read_range(result, row.result_offset, row.result_length))
        assert answered["custom_id"] == row.custom_id


def test_requests_with_no_result_line_are_indexed_as_not_run(archived_batch):
    batch = archived_batch("completed", lines=150, fail_share=0.2, not_run=9)
    index_batch(batch.pk)
    not_run = BatchRequest.objects.filter(batch=batch, outcome=RequestOutcome.NOT_RUN)
    assert not_run.count() == 9 and BatchRequest.objects.filter(batch=batch).count() == 150
    assert all(row.input_offset is not None and row.result_offset is None and row.preview == "" for row in not_run)


def test_without_an_archived_input_the_rows_come_from_the_results_and_an_input_archived_later_completes_them(
        archived_batch):
    batch = archived_batch("completed", lines=120, fail_share=0.3, not_run=4)
    given = batch.archived_files.get(kind="input")
    ArchivedFile.objects.filter(pk=given.pk).update(state=ArchivedFile.PENDING)
    index_batch(batch.pk)
    assert BatchRequest.objects.filter(batch=batch).count() == 116
    assert not BatchRequest.objects.filter(batch=batch, input_offset__isnull=False).exists()
    ArchivedFile.objects.filter(pk=given.pk).update(state=ArchivedFile.STORED)
    index_batch(batch.pk)
    late = _rows(batch)
    _forget(batch)
    index_batch(batch.pk)
    assert late == _rows(batch) and len(late) == 120


def test_an_input_too_large_for_the_map_is_indexed_on_its_own_first_with_the_same_rows(archived_batch,
                                                                                       monkeypatch):
    batch = archived_batch("expired", lines=300, fail_share=0.2, not_run=5)
    index_batch(batch.pk)
    joined, counts = _rows(batch), _progress(batch)
    _forget(batch)
    monkeypatch.setattr(results, "JOIN_BUDGET_BYTES", 1000)
    monkeypatch.setattr(results, "CHUNK_LINES", 70)
    index_batch(batch.pk)
    assert _rows(batch) == joined and _progress(batch) == counts


def test_only_stored_files_are_indexed(archived_batch):
    batch = archived_batch("completed", lines=50, fail_share=0.5)
    ArchivedFile.objects.filter(batch=batch, kind="error").update(state=ArchivedFile.REMOVED)
    ArchivedFile.objects.filter(batch=batch, kind="output").update(state=ArchivedFile.FAILED)
    index_batch(batch.pk)
    assert set(BatchRequest.objects.filter(batch=batch).values_list("outcome", flat=True)) == {
        RequestOutcome.NOT_RUN}
    assert ArchivedFile.objects.filter(batch=batch, indexed_at__isnull=False).count() == 1


def test_an_unknown_batch_is_no_error(db):
    index_batch(10**9)


# ----- idempotent, resumable, bounded --------------------------------------------------------------------------
def test_indexing_again_changes_nothing_and_a_fresh_run_writes_the_same_rows(archived_batch, monkeypatch):
    monkeypatch.setattr(results, "CHUNK_LINES", 64)
    batch = archived_batch("cancelled", lines=400, fail_share=0.3, not_run=3, malformed=5)
    index_batch(batch.pk)
    rows, counts = _rows(batch), _progress(batch)
    assert len(rows) == 400 and sum(c[3] for c in counts) == 5
    stored = ArchivedFile.objects.get(batch=batch, kind="output")
    monkeypatch.setattr(archive, "stream", lambda *a, **k: pytest.fail("an indexed file was read again"))
    index_batch(batch.pk)
    assert _rows(batch) == rows and _progress(batch) == counts
    assert ArchivedFile.objects.get(pk=stored.pk).indexed_at == stored.indexed_at
    monkeypatch.undo()
    ArchivedFile.objects.filter(batch=batch).update(indexed_bytes=0, indexed_lines=0, malformed_lines=0,
                                                    indexed_at=None)
    index_batch(batch.pk)  # over the rows already there
    assert _rows(batch) == rows and _progress(batch) == counts


class _Killed(BaseException):
    """A worker killed between two statements (not an Exception: nothing may catch it)."""


@pytest.mark.parametrize("kill_at", [0.0, 0.3, 0.6, 0.8, 1.0])  # of the way through a clean run's chunks
@pytest.mark.parametrize("join", [True, False])
def test_a_killed_indexer_resumes_where_its_last_chunk_ended(archived_batch, monkeypatch, kill_at, join):
    monkeypatch.setattr(results, "CHUNK_LINES", 60)
    if not join:
        monkeypatch.setattr(results, "JOIN_BUDGET_BYTES", 0)
    batch = archived_batch("expired", lines=300, fail_share=0.2, not_run=6, malformed=7)
    save_chunk, calls = results._save_chunk, []

    def counted(*args, **kwargs):
        calls.append(args[1].kind)
        return save_chunk(*args, **kwargs)

    monkeypatch.setattr(results, "_save_chunk", counted)
    index_batch(batch.pk)
    clean, counts, chunks = _rows(batch), _progress(batch), len(calls)
    assert chunks >= 6
    _forget(batch)
    calls.clear()

    def killed_at_chunk(*args, **kwargs):
        calls.append(args[1].kind)
        if len(calls) == max(1, round(kill_at * chunks)):
            raise _Killed
        return save_chunk(*args, **kwargs)

    monkeypatch.setattr(results, "_save_chunk", killed_at_chunk)
    with pytest.raises(_Killed):
        index_batch(batch.pk)
    killed_in = calls[-1]
    left = {f.kind: f.indexed_bytes for f in batch.archived_files.all()}
    monkeypatch.setattr(results, "_save_chunk", save_chunk)
    stream, starts = archive.stream, []
    monkeypatch.setattr(archive, "stream", lambda archived, **kw: starts.append(
        (archived.kind, kw.get("start", 0))) or stream(archived, **kw))
    index_batch(batch.pk)
    assert _rows(batch) == clean and _progress(batch) == counts
    assert (killed_in, left[killed_in]) in starts  # the killed file resumed where its last chunk ended
    assert ArchivedFile.objects.filter(batch=batch, indexed_at__isnull=True).count() == 0


@pytest.mark.parametrize("rival_chunks", [2, 100])
def test_a_worker_overtaken_by_another_stops_and_nothing_is_counted_twice(archived_batch, monkeypatch,
                                                                          rival_chunks):
    monkeypatch.setattr(results, "CHUNK_LINES", 50)
    batch = archived_batch("completed", lines=300, fail_share=0.3, not_run=4, malformed=3)
    index_batch(batch.pk)
    clean, counts = _rows(batch), _progress(batch)
    _forget(batch)
    save_chunk, outer, rival = results._save_chunk, [], []

    def rival_killed(*args, **kwargs):
        rival.append(args[1].kind)
        if len(rival) > rival_chunks:
            raise _Killed
        return save_chunk(*args, **kwargs)

    def overtaken(*args, **kwargs):  # a second worker runs (part of) the index inside the first one's chunk
        outer.append(args[1].kind)
        if len(outer) == 3:
            monkeypatch.setattr(results, "_save_chunk", rival_killed)
            with contextlib.suppress(_Killed):
                index_batch(batch.pk)
            monkeypatch.setattr(results, "_save_chunk", overtaken)
        return save_chunk(*args, **kwargs)

    monkeypatch.setattr(results, "_save_chunk", overtaken)
    index_batch(batch.pk)
    assert len(rival) > 2 and len(outer) >= 3
    monkeypatch.setattr(results, "_save_chunk", save_chunk)
    index_batch(batch.pk)
    assert _rows(batch) == clean and _progress(batch) == counts


def test_memory_stays_bounded_while_indexing_a_large_file(archived_batch):
    batch = archived_batch("completed", lines=3000, fail_share=0.05, output_bytes=30_000_000)
    output = batch.archived_files.get(kind="output")
    assert output.bytes > 25_000_000
    tracemalloc.start()
    try:
        index_batch(batch.pk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert BatchRequest.objects.filter(batch=batch).count() == 3000
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB while indexing a {output.bytes / 1e6:.0f} MB file"


# ----- malformed and hostile lines ---------------------------------------------------------------------------
def test_malformed_lines_from_the_simulator_are_counted_and_the_rest_indexed(archived_batch):
    batch = archived_batch("completed", lines=200, fail_share=0.25, malformed=16)
    index_batch(batch.pk)
    output = batch.archived_files.get(kind="output")
    assert output.malformed_lines == 16 and output.indexed_lines == batch.completed_requests
    assert {cid: row[:3] for cid, row in ((r[0], r[1:]) for r in _rows(batch))} == _expected(batch)


def test_hostile_lines_are_counted_and_never_stop_the_index(connection, archive_storage, monkeypatch):
    monkeypatch.setattr(results, "MAX_LINE_BYTES", 4096)
    batch = _batch(connection)
    chat = {"model": "gpt-4o-mini", "choices": [{"message": {"content": "ok"}}]}
    lines = [
        b"not json",
        b"\xff\xfe{}",  # not UTF-8
        b"[" * 100_000,  # nested past the parser's recursion limit
        b"[1, 2]", b"null", b'"a string"',
        _jsonl({"custom_id": 7, "response": {"status_code": 200, "body": chat}})[:-1],
        _jsonl({"custom_id": "", "response": {"status_code": 200, "body": chat}})[:-1],
        _jsonl({"custom_id": "x" * 513, "response": {"status_code": 200, "body": chat}})[:-1],
        _jsonl({"custom_id": "neither", "response": None, "error": None})[:-1],
        _jsonl({"custom_id": "text-status", "response": {"status_code": "200", "body": chat}})[:-1],
        _jsonl(_result("too-long", body={"choices": [{"message": {"content": "y" * 5000}}]}))[:-1],
        b"",  # blank lines are no requests, nor malformed
        b"   \r",
    ]
    good = [
        _result("nul\x00id", body={"choices": [{"message": {"content": "a\x00b"}}], "model": "m\x00"}),
        _result("surrogate", body={"choices": [{"message": {"content": "\ud800 half"}}]}),
        _result("odd-status", status=70000, body={"error": {"code": 429, "message": ["not", "text"]}}),
        _result("odd-tokens", body={"usage": {"prompt_tokens": 2**31, "completion_tokens": "12",
                                              "total_tokens": True}, "choices": "nope", "unknown": {"key": 1}}),
        _result("odd-body", status=500, body={"error": "a string"}),
        _result("code-" + "c" * 200, error={"code": "e" * 300, "message": None}),
        _result("crlf", body=chat),
    ]
    data = b"\n".join(lines) + b"\n" + _jsonl(*good[:-1]) + json.dumps(good[-1]).encode() + b"\r\n" + b"tail"
    _archive(batch, "output", data)
    index_batch(batch.pk)
    output = batch.archived_files.get()
    assert (output.malformed_lines, output.indexed_lines) == (13, 7)
    assert output.indexed_bytes == len(data) and output.indexed_at is not None
    rows = {row.custom_id: row for row in BatchRequest.objects.filter(batch=batch)}
    assert set(rows) == {"nulid", "surrogate", "odd-status", "odd-tokens", "odd-body", "code-" + "c" * 200, "crlf"}
    assert rows["nulid"].preview == "ab" and rows["nulid"].model == "m"
    assert rows["surrogate"].preview == "? half"
    assert (rows["odd-status"].outcome, rows["odd-status"].status_code) == (RequestOutcome.FAILED, None)
    assert (rows["odd-status"].error_code, rows["odd-status"].preview) == ("429", "")
    assert (rows["odd-tokens"].input_tokens, rows["odd-tokens"].output_tokens, rows["odd-tokens"].total_tokens,
            rows["odd-tokens"].preview, rows["odd-tokens"].outcome) == (None, None, None, "",
                                                                        RequestOutcome.SUCCEEDED)
    assert (rows["odd-body"].outcome, rows["odd-body"].status_code, rows["odd-body"].error_code) == (
        RequestOutcome.FAILED, 500, "")
    assert rows["code-" + "c" * 200].error_code == "e" * 100
    assert rows["crlf"].preview == "ok" and rows["crlf"].result_length == len(json.dumps(good[-1])) + 1


def _line_strategy():
    scalar = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text()
    json_value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=5), inner, max_size=3), max_leaves=8)
    error = st.fixed_dictionaries({}, optional={"code": json_value | st.sampled_from(list(UNRUN)),
                                                "message": json_value})
    response = st.fixed_dictionaries({}, optional={"status_code": json_value | st.integers(100, 599),
                                                   "body": json_value | st.fixed_dictionaries(
                                                       {}, optional={"error": error, "usage": json_value,
                                                                     "model": json_value, "choices": json_value})})
    shaped = st.fixed_dictionaries({}, optional={"custom_id": json_value | st.text(max_size=20),
                                                 "response": response | json_value, "error": error | json_value})
    return st.binary(max_size=200) | shaped.map(lambda item: json.dumps(item).encode())


@given(lines=st.lists(_line_strategy(), max_size=25), chunk=st.integers(1, 8), kind=st.sampled_from(
    ["output", "error", "input"]))
def test_any_bytes_index_without_an_error_and_every_line_is_counted(connection, archive_storage, monkeypatch,
                                                                    lines, chunk, kind):
    monkeypatch.setattr(results, "CHUNK_LINES", chunk)
    batch = Batch.objects.filter(batch_id="batch_hand_made").first() or _batch(connection)
    BatchRequest.objects.filter(batch=batch).delete()
    ArchivedFile.objects.filter(batch=batch).delete()
    data = b"\n".join(line.replace(b"\n", b"") for line in lines)
    archived = _archive(batch, kind, data)
    index_batch(batch.pk)
    archived.refresh_from_db()
    counted = [line for line in data.split(b"\n") if line.strip()]
    assert archived.indexed_lines + archived.malformed_lines == len(counted)
    assert archived.indexed_bytes == len(data) and archived.indexed_at is not None
    rows = list(BatchRequest.objects.filter(batch=batch))
    assert len(rows) <= archived.indexed_lines
    for row in rows:
        assert row.custom_id and "\x00" not in row.custom_id + row.preview + row.error_code + row.model
        assert len(row.preview) <= 120 and len(row.error_code) <= 100 and len(row.model) <= 100
        assert row.status_code is None or 0 <= row.status_code < 32768
        line = archive.read_range(archived, row.result_offset if kind != "input" else row.input_offset,
                                  row.result_length if kind != "input" else row.input_length)
        named = json.loads(line)["custom_id"].replace("\x00", "")
        assert named.encode("utf-8", "replace").decode("utf-8") == row.custom_id


# ----- search ------------------------------------------------------------------------------------------------
def test_the_batch_search_text_gains_its_request_error_codes_and_keeps_them_through_a_sync(archived_batch,
                                                                                          connection):
    from batches.store import store_batch

    batch = archived_batch("expired", lines=200, fail_share=0.3)
    before = Batch.objects.get(pk=batch.pk).search_text
    index_batch(batch.pk)
    text = Batch.objects.get(pk=batch.pk).search_text
    assert text.startswith(before.split("\n")[0])
    for code in ("batch_expired", "context_length_exceeded", "server_error"):
        assert code in text.split("\n") and code not in before
    assert Batch.objects.filter(search_text__contains="context_length_exceeded").get() == batch
    payload = {**batch.raw, "a_new_key_from_the_api": 1, "metadata": {"team": "moved"}}
    store_batch(connection, payload)
    after = Batch.objects.get(pk=batch.pk).search_text
    assert "team:moved" in after and "context_length_exceeded" in after.split("\n")
