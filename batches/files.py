"""A batch's files through the API: metadata and the request-error summary, read in the background (the
`files` queue) and cached per file id (file contents never change once published); and the stream slots
that cap the downloads per connection (downloads themselves are in actions).

A page only ever reads the cache: what is missing is scheduled, and the panel polls until it is there.
"""

import hashlib
import json
import logging
import time
from collections import OrderedDict

from django.conf import settings
from django.core.cache import cache

from .client import ApiError, BatchApi, PermanentError, stream_chunks
from .models import FILE_KINDS, Batch
from .payload import to_datetime
from .redact import shown

log = logging.getLogger(__name__)

_EXAMPLES_PER_GROUP = 3
_METADATA_TTL = 600
_SUMMARY_TTL = 24 * 3600
_PROBLEM_TTL = 60  # "could not be read right now" is asked again after this
# A read waits this long in the queue at most (the task then expires) before a page schedules it again.
QUEUED_SECONDS = 300
# A page asks the broker twice at most (a broker refusing connections answers in ~0.1 s this way; Celery's
# default policy takes ~0.6 s, and no retry at all ~6 s on Redis).
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
# Past this, a read still queued is worth a word: maybe no worker consumes the files queue.
_SLOW_QUEUE_SECONDS = 30


def panel(batch: Batch) -> dict:
    """What the files panel shows now, from the cache: a row per file kind, the request-error summary, and
    `pending` while some of it is still to be read, which is then scheduled (once) on the files queue."""
    rows = []
    for kind in FILE_KINDS:
        file_id = batch.file_id(kind)
        meta = cache.get(_cache_key("file-meta", batch.connection_id, file_id)) if file_id else {}
        rows.append({"kind": kind, "id": file_id, "pending": meta is None,
                     "bytes": meta.get("bytes") if meta and isinstance(meta.get("bytes"), int) else None,
                     "expires_at": to_datetime(meta.get("expires_at")) if meta else None,
                     "problem": meta.get("problem", "") if meta else ""})
    summary = (cache.get(_summary_key(batch)) or {}) if batch.error_file_id else None  # {}: not read yet
    pending = any(row["pending"] for row in rows) or summary == {}
    context = {"files": rows, "request_errors": summary, "pending": pending, "scheduled": True, "queued_for": 0,
               "slow_queue": False}
    if pending:
        context["scheduled"], queued_at = _schedule(batch)
        context["queued_for"] = round(time.time() - queued_at) if queued_at else 0
        context["slow_queue"] = context["queued_for"] > _SLOW_QUEUE_SECONDS
    return context


def read_request_errors(batch: Batch) -> dict | None:
    """The request-error summary if the files queue has read it already (for the detail page's outcome line);
    never schedules a read."""
    summary = cache.get(_summary_key(batch)) if batch.error_file_id else None
    return summary if summary and summary.get("groups") else None


def _schedule(batch: Batch) -> tuple[bool, float | None]:
    """Enqueue the batch's read unless one is queued already. Returns whether it is queued, and since when."""
    from .tasks import read_batch_files  # tasks call into this module

    key = _queued_key(batch)
    now = time.time()
    if not cache.add(key, now, QUEUED_SECONDS):
        return True, cache.get(key)
    try:
        read_batch_files.apply_async((batch.pk,), retry_policy=_PUBLISH_RETRY)
    except Exception:  # noqa: BLE001 - the broker is down or refuses: say so, and try again on the next poll
        log.warning("The files of batch pk %s could not be scheduled: the broker did not take the task", batch.pk,
                    exc_info=True)
        cache.delete(key)
        return False, None
    return True, now


def _queued_key(batch: Batch) -> str:
    """The "a read is queued" marker, per set of file ids: a batch that gains its output and error files
    when it finishes gets a read of its own."""
    return _cache_key("files-queued", batch.pk, *(batch.file_id(kind) for kind in FILE_KINDS))


def read_batch_files(batch_pk: int) -> None:
    """The files queue's work for one batch: each file's metadata, then the error-file summary, cached.
    Whatever is cached already is not read again; one scan per error file at a time."""
    batch = Batch.objects.select_related("connection").filter(pk=batch_pk).first()
    if batch is None:
        return
    try:
        _read_files(batch)
    finally:
        cache.delete(_queued_key(batch))  # done: the next page that still misses something schedules again


def _read_files(batch: Batch) -> None:
    for kind in FILE_KINDS:
        file_id = batch.file_id(kind)
        key = _cache_key("file-meta", batch.connection_id, file_id)
        if file_id and cache.get(key) is None:
            cache.set(key, *_read(batch, lambda api: api.file_metadata(file_id), _METADATA_TTL,
                                  gone="expired or deleted", failing="unavailable right now"))
    if batch.error_file_id and cache.get(_summary_key(batch)) is None:
        lock = _cache_key("error-scan", batch.connection_id, batch.error_file_id)
        if not cache.add(lock, 1, settings.ERROR_FILE_SCAN_SECONDS + 2 * settings.API_CALL_DEADLINE):
            return  # another worker is scanning this file right now
        try:
            cache.set(_summary_key(batch), *_read(
                batch, lambda api: _scan_error_file(api, batch.error_file_id), _SUMMARY_TTL,
                gone="The error file has expired or was deleted.", failing="The error file could not be read right now"))
        finally:
            cache.delete(lock)


def _read(batch: Batch, call, ttl: float, *, gone: str, failing: str) -> tuple[dict, float]:
    """What call(api) answers and how long to cache it; or the problem to show instead, cached long when the
    file is gone (404) and briefly otherwise (the key may be re-entered, the API may recover)."""
    try:
        with BatchApi.for_connection(batch.connection) as api:
            return call(api), ttl
    except PermanentError as exc:
        return ({"problem": gone}, ttl) if exc.status == 404 else ({"problem": str(exc)}, _PROBLEM_TTL)
    except ApiError as exc:
        return {"problem": f"{failing}: {exc}"}, _PROBLEM_TTL


def _summary_key(batch: Batch) -> str:
    return _cache_key("error-summary", batch.connection_id, batch.error_file_id, settings.ERROR_FILE_SCAN_BYTES)


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


def _scan_error_file(api: BatchApi, file_id: str) -> dict:
    """Reads at most ERROR_FILE_SCAN_BYTES, for at most ERROR_FILE_SCAN_SECONDS; a stream cut part-way counts
    what arrived and says why it stopped."""
    groups: OrderedDict = OrderedDict()
    lines = unreadable = read = 0
    truncated, cut = False, ""
    buffer = b""
    response = api.file_content(file_id)
    try:
        for chunk in stream_chunks(response, seconds=settings.ERROR_FILE_SCAN_SECONDS):
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
    except ApiError as exc:  # cut mid-way: say what we have
        if not groups:
            raise
        truncated, cut = True, exc.message
    finally:
        response.close()
    ordered = sorted(groups.values(), key=lambda g: -g["count"])
    return {"groups": ordered, "lines": lines, "unreadable": unreadable, "truncated": truncated, "cut": cut,
            "bytes_read": read}


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
        group["examples"].append({"custom_id": str(item.get("custom_id", ""))[:200], "message": shown(str(message))})
    return lines, unreadable
