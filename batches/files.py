"""A batch's files through the API: metadata and the request-error summary (downloads stream in views).

Results are cached per file id (file contents never change once published).
"""

import hashlib
import json
from collections import OrderedDict

from django.conf import settings
from django.core.cache import cache

from .client import ApiError, BatchApi, PermanentError
from .models import FILE_KINDS, Batch
from .payload import to_datetime

_EXAMPLES_PER_GROUP = 3
_METADATA_TTL = 600
_SUMMARY_TTL = 24 * 3600


def file_details(batch: Batch) -> list[dict]:
    """One row per kind: id, size and expiry when the API can tell, or why it cannot."""
    rows, api = [], None
    try:
        for kind in FILE_KINDS:
            file_id = batch.file_id(kind)
            row = {"kind": kind, "id": file_id, "bytes": None, "expires_at": None, "problem": ""}
            if file_id:
                key = _cache_key("file-meta", batch.connection_id, file_id)
                meta = cache.get(key)
                if meta is None:
                    try:
                        api = api or BatchApi.for_connection(batch.connection)
                        meta = api.file_metadata(file_id)
                        cache.set(key, meta, _METADATA_TTL)
                    except PermanentError as exc:
                        meta = {"problem": "expired or deleted" if exc.status == 404 else str(exc)}
                    except ApiError as exc:
                        meta = {"problem": f"unavailable right now ({exc})"}
                row["bytes"] = meta.get("bytes") if isinstance(meta.get("bytes"), int) else None
                row["expires_at"] = to_datetime(meta.get("expires_at"))
                row["problem"] = meta.get("problem", "")
            rows.append(row)
    finally:
        if api is not None:
            api.close()
    return rows


def request_errors(batch: Batch) -> dict | None:
    """Group the error file's lines by status code + error code, with counts and a few examples.

    Reads at most ERROR_FILE_SCAN_BYTES of the stream; the result is cached per file id.
    """
    if not batch.error_file_id:
        return None
    key = _cache_key("error-summary", batch.connection_id, batch.error_file_id, settings.ERROR_FILE_SCAN_BYTES)
    summary = cache.get(key)
    if summary is not None:
        return summary
    try:
        summary = _scan_error_file(batch)
    except PermanentError as exc:
        return {"problem": "The error file has expired or was deleted." if exc.status == 404 else str(exc)}
    except ApiError as exc:
        return {"problem": f"The error file could not be read right now: {exc}"}
    cache.set(key, summary, _SUMMARY_TTL)
    return summary


# Stream slots: FILE_STREAMS_PER_CONNECTION cache keys per connection, each taken with add() (atomic on Redis and
# on the database cache). A holder that dies without giving its slot back loses it after a while; a long
# download renews it.
STREAM_SLOT_RENEW_SECONDS = 60


def take_stream_slot(connection_id: int) -> str | None:
    """A free stream slot of the connection (a cache key), or None when all are taken."""
    for n in range(settings.FILE_STREAMS_PER_CONNECTION):
        key = f"stream-slot:{connection_id}:{n}"
        if cache.add(key, 1, _stream_slot_seconds()):
            return key
    return None


def renew_stream_slot(key: str) -> None:
    cache.touch(key, _stream_slot_seconds())


def give_back_stream_slot(key: str) -> None:
    cache.delete(key)


def _stream_slot_seconds() -> float:
    """Longer than the longest gap between renewals: a renewal period plus one read that stalls."""
    return 2 * (STREAM_SLOT_RENEW_SECONDS + settings.FILE_STREAM_STALL_SECONDS)


def _cache_key(kind: str, *parts) -> str:
    """File ids come from the API: hash them so any string makes a valid cache key."""
    return f"{kind}:" + hashlib.sha256(repr(parts).encode()).hexdigest()[:40]


def _scan_error_file(batch: Batch) -> dict:
    api = BatchApi.for_connection(batch.connection)
    response = api.file_content(batch.error_file_id)
    groups: OrderedDict = OrderedDict()
    lines = unreadable = read = 0
    truncated = False
    buffer = b""
    try:
        for chunk in response.iter_content(64 * 1024):
            read += len(chunk)
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                lines, unreadable = _count(raw, groups, lines, unreadable)
            if read >= settings.ERROR_FILE_SCAN_BYTES:
                truncated = True
                break
        else:
            lines, unreadable = _count(buffer, groups, lines, unreadable)
    except Exception as exc:  # a stream cut mid-way: say what we have
        if not groups:
            raise ApiError(f"the error file stream broke: {type(exc).__name__}") from None
        truncated = True
    finally:
        response.close()
        api.close()
    ordered = sorted(groups.values(), key=lambda g: -g["count"])
    return {"groups": ordered, "lines": lines, "unreadable": unreadable, "truncated": truncated, "bytes_read": read}


def _count(raw: bytes, groups: OrderedDict, lines: int, unreadable: int) -> tuple[int, int]:
    if not raw.strip():
        return lines, unreadable
    lines += 1
    try:
        item = json.loads(raw)
        if not isinstance(item, dict):
            raise ValueError
    except ValueError:
        return lines, unreadable + 1
    response = item.get("response") if isinstance(item.get("response"), dict) else None
    error = item.get("error") if isinstance(item.get("error"), dict) else None
    status, code, message = None, None, ""
    if response is not None:
        status = response.get("status_code")
        body = response.get("body") if isinstance(response.get("body"), dict) else {}
        body_error = body.get("error") if isinstance(body.get("error"), dict) else {}
        code, message = body_error.get("code") or body_error.get("type"), body_error.get("message") or ""
    if error is not None:
        code, message = error.get("code") or code, error.get("message") or message
    group_key = (str(status) if status is not None else "", str(code or "unknown"))
    group = groups.setdefault(group_key, {"status": status, "code": code or "unknown", "count": 0, "examples": []})
    group["count"] += 1
    if len(group["examples"]) < _EXAMPLES_PER_GROUP:
        group["examples"].append({"custom_id": str(item.get("custom_id", ""))[:200], "message": str(message)[:500]})
    return lines, unreadable
