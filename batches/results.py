"""The request index: every request of an archived batch in BatchRequest, read once from its archived input,
output and error files (batches/archive.py).

1. The input file is read first into a map of where each request's line is (bounded by JOIN_BUDGET_BYTES;
   the API allows 50,000 requests a batch).
2. The output and error files give each request its row: the outcome, the status code and error code, token
   usage, a short preview, where its result line is, and from the map where its input line is.
3. The requests of the input that no result line named get a "not run" row.
Each row is so written once. When the input is too large for the map, or is archived after the results were
indexed, it is indexed on its own first instead: a "not run" row per request, which the results then update
(on PostgreSQL each update leaves a dead row version and key entry until vacuum: bench/results.py measures
317 bytes a request that way, 283 with the map).

Each file is read from `ArchivedFile.indexed_bytes` on, a chunk of lines at a time; a chunk's rows and the
file's progress are written in one transaction, so a killed worker resumes where its last chunk ended, and
running it twice (or twice at once) writes the same rows. A file's last chunk also puts the batch's request
error codes into its search text.

Lines that cannot be read (not JSON, not an object, no usable custom_id, none of the three shapes of
CONTRACT §7.2, longer than MAX_LINE_BYTES, not UTF-8) are counted in `ArchivedFile.malformed_lines`, never
raised. Memory stays bounded by one read chunk, one line, CHUNK_LINES rows and the input map.
"""

import json
from functools import partial

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import archive
from .models import ArchivedFile, Batch, BatchRequest, RequestOutcome
from .payload import search_text

CHUNK_LINES = 2000  # lines per transaction (rows and progress together)
MAX_LINE_BYTES = 1 << 20  # a longer line is counted as malformed, and never held in memory whole
# A longer custom_id cannot be a primary key entry on PostgreSQL (btree entries stop at 2704 bytes).
MAX_CUSTOM_ID_CHARS = 512
PREVIEW_CHARS = 120
MAX_SEARCH_CODES = 100
# Memory for the input map, counted as its custom_ids' characters plus 120 bytes an entry (a dict entry, the
# string's header, the packed position): 50,000 requests with ids of up to 200 characters fit.
JOIN_BUDGET_BYTES = 16 << 20
_INT32 = range(-(2**31), 2**31)
_STATUS_CODES = range(0, 32768)  # what a PositiveSmallIntegerField holds on every database
_LENGTH_BITS = 21  # MAX_LINE_BYTES < 2**21: a position is packed as offset << 21 | length
_INPUT_FIELDS = ["input_offset", "input_length"]
_RESULT_FIELDS = ["outcome", "status_code", "error_code", "model", "input_tokens", "output_tokens", "total_tokens",
                  "preview", "result_offset", "result_length", "result_in_error_file"]
_UNRUN = {"batch_expired": RequestOutcome.EXPIRED, "batch_cancelled": RequestOutcome.CANCELLED}


class _Overtaken(Exception):
    """Another worker moved this file's progress meanwhile: it carries on, this one stops."""


def index_batch(batch_pk: int) -> None:
    """Index the batch's archived files into BatchRequest rows. Idempotent and resumable: safe to run again
    after a killed worker, and a no-op once every stored file is indexed."""
    batch = Batch.objects.filter(pk=batch_pk).first()
    if batch is None:
        return
    files = {f.kind: f for f in ArchivedFile.objects.filter(batch=batch, state=ArchivedFile.STORED)}
    inputs = files.get("input") if files.get("input") and files["input"].indexed_at is None else None
    results = [files[kind] for kind in ("output", "error") if kind in files and files[kind].indexed_at is None]
    # (an input a killed worker had begun on its own is finished on its own)
    positions = _InputPositions.read(inputs) if inputs and results and not inputs.indexed_bytes else None
    if inputs and positions is None:  # on its own: "not run" rows, which the results update
        _index_file(batch, inputs, _input_row, _INPUT_FIELDS)
    for archived in results:
        fields = _RESULT_FIELDS + _INPUT_FIELDS if positions is not None else _RESULT_FIELDS
        _index_file(batch, archived, partial(_result_row, positions=positions), fields)
    if inputs and positions is not None:
        _index_not_run(batch, inputs, positions)


def request_error_codes(batch_pk: int) -> list[str]:
    """The distinct error codes of the batch's indexed requests (at most MAX_SEARCH_CODES), sorted."""
    codes = (BatchRequest.objects.filter(batch_id=batch_pk).exclude(error_code="")
             .order_by("error_code").values_list("error_code", flat=True).distinct())
    return list(codes[:MAX_SEARCH_CODES])


class _InputPositions:
    """Where each request's line is in the archived input: custom_id -> offset << 21 | length, negated once a
    result line has claimed it (what is left unclaimed never ran)."""

    def __init__(self):
        self.packed, self.lines, self.malformed, self.end = {}, 0, 0, 0

    @classmethod
    def read(cls, archived: ArchivedFile) -> "_InputPositions | None":
        """The whole input's positions, or None when they would take more than JOIN_BUDGET_BYTES."""
        positions, spent = cls(), 0
        for offset, length, line, end in _lines(archived, 0):
            positions.end = end
            if line is not None and not line.strip():
                continue
            parsed = _parse(line) if line is not None else None
            if parsed is None:
                positions.malformed += 1
                continue
            positions.lines += 1
            spent += len(parsed[1]) + 120
            if spent > JOIN_BUDGET_BYTES:
                return None
            positions.packed[parsed[1]] = offset << _LENGTH_BITS | length
        return positions

    def claim(self, custom_id: str) -> tuple[int | None, int | None]:
        packed = self.packed.get(custom_id)
        if packed is None:
            return None, None
        if packed >= 0:
            self.packed[custom_id] = -packed - 1
        else:
            packed = -packed - 1
        return packed >> _LENGTH_BITS, packed & ((1 << _LENGTH_BITS) - 1)

    def unclaimed(self):
        for custom_id, packed in self.packed.items():
            if packed >= 0:
                yield custom_id, packed >> _LENGTH_BITS, packed & ((1 << _LENGTH_BITS) - 1)


def _index_file(batch: Batch, archived: ArchivedFile, read_row, update_fields: list[str]) -> None:
    rows, lines, malformed = {}, 0, 0
    end = archived.indexed_bytes
    try:
        for offset, length, line, end in _lines(archived, archived.indexed_bytes):
            if line is not None and not line.strip():
                continue  # blank lines are no requests (a file ends with a newline)
            row = read_row(batch, archived, offset, length, line) if line is not None else None
            if row is None:
                malformed += 1
            else:
                rows[row.custom_id] = row  # one row per key and statement: a repeated custom_id keeps its last
                lines += 1
            if lines + malformed >= CHUNK_LINES:
                _save_chunk(batch, archived, list(rows.values()), update_fields, end=end, lines=lines,
                            malformed=malformed)
                rows, lines, malformed = {}, 0, 0
        _save_chunk(batch, archived, list(rows.values()), update_fields, end=end, lines=lines, malformed=malformed,
                    last=True)
    except _Overtaken:
        return


def _index_not_run(batch: Batch, archived: ArchivedFile, positions: _InputPositions) -> None:
    """The input's requests that no result line named, as "not run" rows; the input's counts with the last."""
    rows = []
    try:
        for custom_id, offset, length in positions.unclaimed():
            rows.append(BatchRequest(batch=batch, custom_id=custom_id, outcome=RequestOutcome.NOT_RUN,
                                     input_offset=offset, input_length=length))
            if len(rows) >= CHUNK_LINES:
                _save_chunk(batch, archived, rows, _INPUT_FIELDS, end=archived.indexed_bytes, lines=0, malformed=0)
                rows = []
        _save_chunk(batch, archived, rows, _INPUT_FIELDS, end=positions.end, lines=positions.lines,
                    malformed=positions.malformed, last=True)
    except _Overtaken:
        return


def _save_chunk(batch: Batch, archived: ArchivedFile, rows: list, update_fields: list[str], *, end: int,
                lines: int, malformed: int, last: bool = False) -> None:
    """Write one chunk's rows and the file's progress in one transaction."""
    with transaction.atomic():
        if rows:
            BatchRequest.objects.bulk_create(rows, update_conflicts=True, unique_fields=["batch", "custom_id"],
                                             update_fields=update_fields)
        progress = {"indexed_bytes": end, "indexed_lines": F("indexed_lines") + lines,
                    "malformed_lines": F("malformed_lines") + malformed}
        if last:
            progress["indexed_at"] = timezone.now()
        moved = ArchivedFile.objects.filter(pk=archived.pk, indexed_bytes=archived.indexed_bytes,
                                            indexed_at__isnull=True).update(**progress)
        if not moved:
            raise _Overtaken
        if last:
            fresh = Batch.objects.get(pk=batch.pk)  # as the sync left it: search_text is built from all of it
            text = search_text(fresh, request_error_codes=request_error_codes(batch.pk))
            if text != fresh.search_text:
                Batch.objects.filter(pk=batch.pk).update(search_text=text)
    archived.indexed_bytes = end


def _lines(archived: ArchivedFile, start: int):
    """(offset, length, bytes, end) of each line from `start` on: bytes without the newline, None for a line
    longer than MAX_LINE_BYTES (skipped without being held); `end` is where the next line starts."""
    offset, head, size = start, b"", 0
    for chunk in archive.stream(archived, start=start):
        parts = chunk.split(b"\n")
        for part in parts[:-1]:
            size += len(part)
            yield offset, size, (head + part if size <= MAX_LINE_BYTES else None), offset + size + 1
            offset += size + 1
            head, size = b"", 0
        size += len(parts[-1])
        head = head + parts[-1] if size <= MAX_LINE_BYTES else b""
    if size:  # the last line has no newline
        yield offset, size, (head if size <= MAX_LINE_BYTES else None), offset + size


def _parse(line: bytes):
    """The line's JSON object and its custom_id, or None when the line cannot be read."""
    try:
        item = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(item, dict):
        return None
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return None
    custom_id = _text(custom_id, MAX_CUSTOM_ID_CHARS)
    return (item, custom_id) if custom_id else None


def _input_row(batch: Batch, archived: ArchivedFile, offset: int, length: int, line: bytes) -> BatchRequest | None:
    parsed = _parse(line)
    if parsed is None:
        return None
    return BatchRequest(batch=batch, custom_id=parsed[1], outcome=RequestOutcome.NOT_RUN, input_offset=offset,
                        input_length=length)


def _result_row(batch: Batch, archived: ArchivedFile, offset: int, length: int, line: bytes, *,
                positions: _InputPositions | None) -> BatchRequest | None:
    parsed = _parse(line)
    if parsed is None:
        return None
    item, custom_id = parsed
    response, error = item.get("response"), item.get("error")
    row = BatchRequest(batch=batch, custom_id=custom_id, result_offset=offset, result_length=length,
                       result_in_error_file=archived.kind == "error")
    if isinstance(response, dict):
        status = response.get("status_code")
        if not isinstance(status, int) or isinstance(status, bool):
            return None  # no status, no outcome
        body = response.get("body") if isinstance(response.get("body"), dict) else {}
        row.status_code = status if status in _STATUS_CODES else None
        if 200 <= status < 300:
            row.outcome = RequestOutcome.SUCCEEDED
            _read_answer(row, body, batch)
        else:
            row.outcome = RequestOutcome.FAILED
            failure = body.get("error") if isinstance(body.get("error"), dict) else {}
            row.error_code = _code(failure.get("code"))
            row.preview = _text(failure.get("message"), PREVIEW_CHARS, one_line=True)
    elif isinstance(error, dict):
        row.error_code = _code(error.get("code"))
        row.outcome = _UNRUN.get(row.error_code, RequestOutcome.FAILED)
        row.preview = _text(error.get("message"), PREVIEW_CHARS, one_line=True)
    else:
        return None  # neither an answer nor an error: none of the line shapes
    if positions is not None:
        row.input_offset, row.input_length = positions.claim(custom_id)
    return row


def _read_answer(row: BatchRequest, body: dict, batch: Batch) -> None:
    """Tokens, model and preview from a 2xx body of any endpoint."""
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    row.input_tokens = _int32(usage.get("prompt_tokens", usage.get("input_tokens")))
    row.output_tokens = _int32(usage.get("completion_tokens", usage.get("output_tokens")))
    row.total_tokens = _int32(usage.get("total_tokens"))
    model = _text(body.get("model"), 100)
    row.model = model if model != batch.model else ""
    row.preview = _text(_answer_text(body), PREVIEW_CHARS, one_line=True)


def _answer_text(body: dict):
    choice = _at(body, "choices", 0)
    if isinstance(_at(choice, "message"), dict):  # chat completions
        message = choice["message"]
        return message.get("content") if isinstance(message.get("content"), str) else message.get("refusal")
    if isinstance(_at(choice, "text"), str):  # completions
        return choice["text"]
    if isinstance(body.get("output"), list):  # responses
        for item in body["output"]:
            parts = _at(item, "content")
            for part in parts if isinstance(parts, list) else ():
                if _at(part, "type") == "output_text" and isinstance(_at(part, "text"), str):
                    return part["text"]
        return None
    if isinstance(body.get("data"), list) and body["data"]:  # embeddings
        vectors = [_at(item, "embedding") for item in body["data"]]
        size = _vector_size(vectors[0])
        if size is not None:
            return f"vector of {size}" if len(vectors) == 1 else f"{len(vectors)} vectors of {size}"
    if isinstance(_at(body, "results", 0, "flagged"), bool):  # moderations
        return "flagged" if body["results"][0]["flagged"] else "not flagged"
    return None


def _vector_size(embedding) -> int | None:
    if isinstance(embedding, list):
        return len(embedding)
    if isinstance(embedding, str):  # encoding_format "base64": little-endian float32s
        return (len(embedding) * 3 // 4 - embedding[-2:].count("=")) // 4
    return None


def _at(value, *path):
    """value[path[0]][path[1]]..., or None wherever the shape differs."""
    for key in path:
        if isinstance(key, int) and isinstance(value, list) and len(value) > key:
            value = value[key]
        elif isinstance(key, str) and isinstance(value, dict):
            value = value.get(key)
        else:
            return None
    return value


def _text(value, limit: int, *, one_line: bool = False) -> str:
    """A string fit for any database column: at most `limit` characters, no NUL (PostgreSQL text cannot hold
    one), no lone surrogate (not encodable as UTF-8)."""
    if not isinstance(value, str):
        return ""
    value = value[:limit * 2 if one_line else limit].replace("\x00", "")
    if one_line:
        value = " ".join(value.split())
    return value[:limit].encode("utf-8", "replace").decode("utf-8")


def _code(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return _text(value, 100)


def _int32(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value in _INT32 else None
