"""Test data for the request explorer: a batch's archived files and their BatchRequest rows, written the way the
indexer (batches/results.py) leaves them, without running it. Offsets and lengths point at whole lines, their
newline included."""

import json
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.utils import timezone

OUTCOMES = {"succeeded": 1, "failed": 2, "expired": 3, "cancelled": 4, "not_run": 5}


@dataclass
class Req:
    """One request as a test describes it. `input_line` / `result_line` replace the generated lines (bytes are
    written as they are, so a test can write broken JSON)."""

    custom_id: str
    outcome: str = "succeeded"
    question: str = "What is 2+2?"
    answer: str = "4."
    error_code: str = ""
    message: str = ""
    status_code: int | None = None
    tokens: tuple[int, int] | None = (10, 5)
    preview: str | None = None
    input_line: bytes | dict | None = None
    result_line: bytes | dict | None = None
    extra: dict = field(default_factory=dict)

    def input(self) -> dict:
        return {"custom_id": self.custom_id, "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."},
                                                              {"role": "user", "content": self.question}]}}

    def result(self) -> dict | None:
        if self.outcome == "succeeded":
            inp, out = self.tokens or (0, 0)
            return {"id": f"batch_req_{abs(hash(self.custom_id))}", "custom_id": self.custom_id,
                    "response": {"status_code": 200, "request_id": "req_1", "body": {
                        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": self.answer},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}}},
                    "error": None}
        if self.outcome == "failed":
            return {"id": "batch_req_x", "custom_id": self.custom_id,
                    "response": {"status_code": self.status_code or 400, "request_id": "req_2",
                                 "body": {"error": {"message": self.message or "Bad request.",
                                                    "type": "invalid_request_error", "param": None,
                                                    "code": self.error_code or "invalid_request"}}},
                    "error": None}
        if self.outcome in ("expired", "cancelled"):
            code = "batch_expired" if self.outcome == "expired" else "batch_cancelled"
            return {"id": "batch_req_y", "custom_id": self.custom_id, "response": None,
                    "error": {"code": code, "message": "This request could not be executed before the completion "
                                                       "window expired."}}
        return None


def _line(value) -> bytes:
    if isinstance(value, bytes):
        return value if value.endswith(b"\n") else value + b"\n"
    return (json.dumps(value) + "\n").encode()


def index_batch(batch, requests: list[Req], *, state: str = "stored", indexed: bool = True, malformed: int = 0,
                kinds=("input", "output", "error")) -> dict:
    """Write the batch's archived files (in `kinds`) through the archive storage and index `requests` into
    BatchRequest rows. Returns the ArchivedFile per kind."""
    from batches import archive
    from batches.models import ArchivedFile, BatchRequest

    data = {kind: bytearray() for kind in ("input", "output", "error")}
    rows = []
    for req in requests:
        line = _line(req.input_line if req.input_line is not None else req.input())
        input_at = len(data["input"])
        data["input"] += line
        result = req.result_line if req.result_line is not None else req.result()
        result_at = result_length = None
        in_error = req.outcome != "succeeded"
        if result is not None:
            kind = "error" if in_error else "output"
            result_at, text = len(data[kind]), _line(result)
            result_length = len(text)
            data[kind] += text
        status = req.status_code if req.status_code is not None else {
            "succeeded": 200, "failed": 400}.get(req.outcome)
        code = req.error_code or {"failed": "invalid_request", "expired": "batch_expired",
                                  "cancelled": "batch_cancelled"}.get(req.outcome, "")
        inp, out = req.tokens if req.tokens and req.outcome == "succeeded" else (None, None)
        preview = req.preview if req.preview is not None else (
            req.answer if req.outcome == "succeeded" else req.message or "Bad request." if req.outcome == "failed"
            else "")
        rows.append(BatchRequest(
            batch=batch, custom_id=req.custom_id, outcome=OUTCOMES[req.outcome], status_code=status,
            error_code=code, input_tokens=inp, output_tokens=out, total_tokens=None if inp is None else inp + out,
            preview=preview[:120], input_offset=input_at, input_length=len(line),
            result_offset=result_at, result_length=result_length, result_in_error_file=in_error, **req.extra))
    BatchRequest.objects.bulk_create(rows)
    now = timezone.now()
    files = {}
    for kind in kinds:
        name = archive.storage().save(f"test/{batch.pk}-{kind}.jsonl", ContentFile(bytes(data[kind])))
        lines = bytes(data[kind]).count(b"\n")
        files[kind] = ArchivedFile.objects.create(
            batch=batch, kind=kind, file_id=batch.file_id(kind) or f"file-{kind}", state=state, name=name,
            bytes=len(data[kind]), stored_at=now, indexed_bytes=len(data[kind]) if indexed else 0,
            indexed_lines=lines if indexed else 0, malformed_lines=malformed if kind == "output" else 0,
            indexed_at=now if indexed else None)
    return files
