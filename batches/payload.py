"""The one place that turns an API Batch payload into Batch model fields.

The API is outside our control: every optional field may be null or missing, unknown fields and
future statuses appear, numbers can be odd. Nothing here raises except for a payload with no usable
id, which cannot be stored at all.
"""

from datetime import datetime, timezone as dt_timezone

from .models import TIMESTAMP_FIELDS

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
_ID_MAX = 255
_TEXT_MAX = 255
# Fields whose change a user can see; a change in any of them makes a snapshot.
VISIBLE_FIELDS = (
    "status",
    "total_requests",
    "completed_requests",
    "failed_requests",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "output_file_id",
    "error_file_id",
    "errors",
    "metadata",
)


class MalformedPayload(ValueError):
    """A payload that cannot be stored (not an object, or no usable id)."""


# What is kept of a payload's JSON (metadata and raw): deeper or larger parts are replaced by a marker,
# so one hostile payload can neither exhaust the stack nor fill the database.
JSON_MAX_DEPTH = 32
JSON_MAX_ITEMS = 5000
TRUNCATED = "[truncated by Batchboard]"


def clean_json(value, depth: int = 0):
    """Drop NUL characters (PostgreSQL refuses them in text and jsonb) and NaN; cut what is nested
    deeper than JSON_MAX_DEPTH or longer than JSON_MAX_ITEMS items per container."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if not isinstance(value, (dict, list)):
        return value
    if depth >= JSON_MAX_DEPTH:
        return TRUNCATED
    if isinstance(value, dict):
        items = list(value.items())[:JSON_MAX_ITEMS]
        return {clean_json(str(k)): clean_json(v, depth + 1) for k, v in items}
    return [clean_json(v, depth + 1) for v in value[:JSON_MAX_ITEMS]]


def _text(value, limit: int = _TEXT_MAX) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    return value.replace("\x00", "")[:limit]


def _int(value) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int):
        return None
    return min(max(value, INT64_MIN), INT64_MAX)


def to_datetime(value) -> datetime | None:
    """Unix seconds to an aware UTC datetime; None for null, garbage or out-of-range values."""
    seconds = _int(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=dt_timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _errors(value) -> list[dict]:
    data = value.get("data") if isinstance(value, dict) else value
    if not isinstance(data, list):
        return []
    errors = []
    for item in data:
        if not isinstance(item, dict):
            item = {"message": item}
        errors.append(
            {
                "code": _text(item.get("code"), 200) or None,
                "message": _text(item.get("message"), 4000) or None,
                "param": _text(item.get("param"), 200) or None,
                "line": _int(item.get("line")),
            }
        )
    return errors


def batch_fields(payload) -> dict:
    """Model field values for `payload` (a decoded API Batch object), the raw JSON included."""
    if not isinstance(payload, dict):
        raise MalformedPayload(f"expected a JSON object, got {type(payload).__name__}")
    batch_id = payload.get("id")
    if not isinstance(batch_id, str) or not batch_id.strip() or len(batch_id) > _ID_MAX or "\x00" in batch_id:
        raise MalformedPayload("the batch has no usable id")

    counts = payload.get("request_counts") if isinstance(payload.get("request_counts"), dict) else {}
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
    input_details = (usage or {}).get("input_tokens_details")
    output_details = (usage or {}).get("output_tokens_details")
    metadata = payload.get("metadata")

    fields = {
        "batch_id": batch_id,
        "endpoint": _text(payload.get("endpoint")),
        "model": _text(payload.get("model")),
        "status": _text(payload.get("status"), 64) or "unknown",
        "input_file_id": _text(payload.get("input_file_id")),
        "output_file_id": _text(payload.get("output_file_id")),
        "error_file_id": _text(payload.get("error_file_id")),
        "completion_window": _text(payload.get("completion_window"), 64),
        "total_requests": _int(counts.get("total")) or 0,
        "completed_requests": _int(counts.get("completed")) or 0,
        "failed_requests": _int(counts.get("failed")) or 0,
        "input_tokens": _int(usage.get("input_tokens")) if usage else None,
        "cached_tokens": _int(input_details.get("cached_tokens")) if isinstance(input_details, dict) else None,
        "output_tokens": _int(usage.get("output_tokens")) if usage else None,
        "reasoning_tokens": (
            _int(output_details.get("reasoning_tokens")) if isinstance(output_details, dict) else None
        ),
        "total_tokens": _int(usage.get("total_tokens")) if usage else None,
        "errors": _errors(payload.get("errors")),
        "metadata": clean_json(metadata) if isinstance(metadata, dict) else None,
        "raw": clean_json(payload),
    }
    for name in TIMESTAMP_FIELDS:
        fields[name] = to_datetime(payload.get(name))
    fields["search_text"] = search_text(fields)
    return fields


def search_text(source, *, request_error_codes=()) -> str:
    """What the list's search matches, lower-cased, one item a line: ids and file ids, the model, validation
    error codes, the error codes of its requests (from the request index, batches/results.py), and each metadata
    value both alone and as `key:value` (so `team:growth` finds one field). One indexed column serves every kind
    of search (trigram-indexed on PostgreSQL). `source` is a fields dict or a stored Batch."""
    get = source.get if isinstance(source, dict) else lambda name: getattr(source, name)
    metadata = get("metadata")
    pairs = metadata.items() if isinstance(metadata, dict) else []
    values = [str(v) for _, v in pairs] + [f"{k}:{v}" for k, v in pairs]
    codes = [e.get("code") or "" for e in get("errors") or [] if isinstance(e, dict)] + list(request_error_codes)
    parts = [get(name) or "" for name in ("batch_id", "input_file_id", "output_file_id", "error_file_id", "model")]
    return "\n".join(part for part in parts + codes + values if part).lower()[:20000]


def visible_state(source) -> tuple:
    """The user-visible part of a batch, from a fields dict or a model instance, for change detection."""
    get = source.get if isinstance(source, dict) else lambda name: getattr(source, name)
    return tuple(get(name) for name in VISIBLE_FIELDS)
