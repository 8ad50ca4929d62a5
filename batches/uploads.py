"""A JSONL file uploaded in the browser, checked line by line before anything is sent to the API.

`validate` reads the file once, a chunk at a time (never whole in memory), and applies the Batch API's input
rules (CONTRACT §6, §7.1) to every line: a JSON object; `custom_id` present and unique; `method` POST; `url` one
of the Batch endpoints and the same in every line; a `body` with a `model`, the same in every line; no
streaming; no line longer than SUBMIT_MAX_LINE_BYTES. It reports at most MAX_ERRORS errors with their line
numbers, then how many there were in all. A file over the per-batch limits (BATCH_MAX_REQUESTS lines,
BATCH_MAX_BYTES) is no error: it is split into several batches.
"""

import hashlib
import json
import secrets
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files import File

from . import archive
from .results import MAX_CUSTOM_ID_CHARS

# The endpoints the Batch guide lists (CONTRACT §10: /v1/videos is in the spec only, and deprecated).
ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations",
             "/v1/images/generations", "/v1/images/edits")
MAX_ERRORS = 100
PREVIEW_LINES = 5
PREVIEW_CHARS = 300
READ_CHUNK = 1 << 20


@dataclass
class Report:
    requests: int = 0
    bytes: int = 0
    errors: list = field(default_factory=list)  # (line number, message), the first MAX_ERRORS
    error_count: int = 0
    endpoint: str = ""
    model: str = ""
    preview: list = field(default_factory=list)
    parts: int = 0  # batches it makes (BATCH_MAX_REQUESTS and BATCH_MAX_BYTES each)

    @property
    def ok(self) -> bool:
        return not self.error_count

    def error(self, number: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((number, message))


def validate(handle, size: int | None = None) -> Report:
    """Check every line of the open binary file `handle`."""
    report = _Checker()
    if size is not None and size > settings.SUBMIT_MAX_UPLOAD_BYTES:
        report.error(0, f"The file is larger than {settings.SUBMIT_MAX_UPLOAD_BYTES:,} bytes (SUBMIT_MAX_UPLOAD_BYTES).")
        return report
    for number, line, length in lines(iter(lambda: handle.read(READ_CHUNK), b"")):
        report.check(number, line, length)
    if not report.requests and not report.error_count:
        report.error(0, "The file has no requests.")
    return report


def lines(chunks, max_bytes: int | None = None):
    """(line number, bytes without the newline or None when longer than max_bytes, length) of each line; a
    final newline ends the last line, it does not start another."""
    max_bytes = max_bytes or settings.SUBMIT_MAX_LINE_BYTES
    number, head, size = 0, [], 0
    for chunk in chunks:
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            size += newline - start
            number += 1
            if size <= max_bytes:
                head.append(chunk[start:newline])
            yield number, (b"".join(head) if size <= max_bytes else None), size
            head, size, start = [], 0, newline + 1
        size += len(chunk) - start
        if size <= max_bytes:
            head.append(chunk[start:])
        else:
            head = []
    if size:
        yield number + 1, (b"".join(head) if size <= max_bytes else None), size


class _Checker(Report):
    def __init__(self):
        super().__init__()
        self._seen: dict[bytes, int] = {}  # a digest of each custom_id -> its first line
        self._part_count = self._part_bytes = 0

    def check(self, number: int, line: bytes | None, length: int) -> None:
        self.bytes += length + 1
        if line is None:
            return self.error(number, f"The line is longer than {settings.SUBMIT_MAX_LINE_BYTES:,} bytes.")
        if not line.strip():
            return self.error(number, "The line is blank.")
        self._count_part(length + 1)
        self.requests += 1
        if len(self.preview) < PREVIEW_LINES:
            self.preview.append(line[:PREVIEW_CHARS].decode("utf-8", "replace")
                                + ("…" if len(line) > PREVIEW_CHARS else ""))
        try:
            item = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            return self.error(number, "The line is not UTF-8 text.")
        except (ValueError, RecursionError) as exc:
            return self.error(number, f"The line is not valid JSON ({str(exc)[:80]}).")
        if not isinstance(item, dict):
            return self.error(number, "The line is not a JSON object.")
        self._check_custom_id(number, item.get("custom_id"))
        if item.get("method") != "POST":
            self.error(number, f"`method` must be \"POST\", not {_shown(item.get('method'))}.")
        url = item.get("url")
        if url not in ENDPOINTS:
            self.error(number, f"`url` {_shown(url)} is not a Batch endpoint ({', '.join(ENDPOINTS)}).")
        elif not self.endpoint:
            self.endpoint = url
        elif url != self.endpoint:
            self.error(number, f"`url` {_shown(url)} differs from the file's {self.endpoint}: one endpoint a batch.")
        body = item.get("body")
        if not isinstance(body, dict):
            return self.error(number, "`body` must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self.error(number, "`body.model` is missing.")
        elif not self.model:
            self.model = model
        elif model != self.model:
            self.error(number, f"`body.model` {_shown(model)} differs from the file's {self.model}: one model a batch.")
        if body.get("stream") is True:
            self.error(number, "`body.stream` is true: batches do not stream.")

    def _check_custom_id(self, number: int, custom_id) -> None:
        if not isinstance(custom_id, str) or not custom_id:
            return self.error(number, "`custom_id` is missing (a non-empty string is required).")
        if len(custom_id) > MAX_CUSTOM_ID_CHARS:
            return self.error(number, f"`custom_id` is longer than {MAX_CUSTOM_ID_CHARS} characters.")
        digest = hashlib.blake2b(custom_id.encode("utf-8", "surrogatepass"), digest_size=12).digest()
        first = self._seen.setdefault(digest, number)
        if first != number:
            self.error(number, f"`custom_id` {_shown(custom_id)} repeats line {first}.")

    def _count_part(self, length: int) -> None:
        if (not self.parts or self._part_count >= settings.BATCH_MAX_REQUESTS
                or (self._part_count and self._part_bytes + length > settings.BATCH_MAX_BYTES)):
            self.parts, self._part_count, self._part_bytes = self.parts + 1, 0, 0
        self._part_count, self._part_bytes = self._part_count + 1, self._part_bytes + length


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "missing"
    return text if len(text) <= 60 else text[:60] + "…"


def stage(handle) -> str:
    """Keep a validated upload in the archive storage until it is submitted; returns its name there."""
    handle.seek(0)
    name = f"uploads/{secrets.token_hex(16)}.jsonl"
    return archive.storage().save(name, File(handle, name=name))


def staged_lines(name: str):
    """A staged upload's lines, each ending with a newline (blank lines cannot be in a validated file)."""
    with archive.storage().open(name, "rb") as handle:
        for _, line, _ in lines(iter(lambda: handle.read(READ_CHUNK), b"")):
            yield line + b"\n"

