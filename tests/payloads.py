"""Batch payloads in the shapes the contract documents (CONTRACT.md §5), for parser and store tests."""

CREATED = 1711471533


def batch(**overrides) -> dict:
    payload = {
        "id": "batch_abc123",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "errors": None,
        "input_file_id": "file-abc123",
        "completion_window": "24h",
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": CREATED,
        "in_progress_at": None,
        "expires_at": None,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "usage": {
            "input_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 0,
        },
        "metadata": None,
    }
    payload.update(overrides)
    return payload


JUST_CREATED = batch()
IN_PROGRESS = batch(
    status="in_progress", in_progress_at=CREATED + 5, expires_at=CREATED + 86400,
    request_counts={"total": 100, "completed": 40, "failed": 2},
    usage={"input_tokens": 4000, "input_tokens_details": {"cached_tokens": 1000}, "output_tokens": 2000,
           "output_tokens_details": {"reasoning_tokens": 300}, "total_tokens": 6000},
    metadata={"description": "nightly eval"},
)
ALL_FAILED = batch(
    status="completed", in_progress_at=CREATED + 5, expires_at=CREATED + 86400, finalizing_at=CREATED + 60,
    completed_at=CREATED + 90, error_file_id="file-HOWS94", output_file_id=None,
    request_counts={"total": 9, "completed": 0, "failed": 9},
)
VALIDATION_FAILED = batch(
    status="failed", failed_at=CREATED + 20,
    errors={"object": "list", "data": [
        {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "param": None, "line": 3},
        {"code": "url_mismatch", "message": "The url does not match.", "param": "url", "line": 17},
    ]},
)
CANCELLED = batch(
    status="cancelled", in_progress_at=CREATED + 5, expires_at=CREATED + 86400, cancelling_at=CREATED + 100,
    cancelled_at=CREATED + 160, output_file_id="file-out", error_file_id="file-err",
    request_counts={"total": 100, "completed": 23, "failed": 1},
)
NO_USAGE = {k: v for k, v in batch(status="completed", completed_at=CREATED + 50).items() if k not in ("usage", "model")}
FUTURE = batch(status="paused_for_review", brand_new_field={"x": 1}, request_counts=None, usage=None)
