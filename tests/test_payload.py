from datetime import datetime, timezone

import pytest

from batches.payload import MalformedPayload, batch_fields
from tests import payloads


def test_it_parses_a_just_created_batch_with_nulls():
    fields = batch_fields(payloads.JUST_CREATED)
    assert fields["batch_id"] == "batch_abc123"
    assert fields["status"] == "validating"
    assert fields["created_at"] == datetime.fromtimestamp(payloads.CREATED, tz=timezone.utc)
    assert fields["in_progress_at"] is None and fields["expires_at"] is None
    assert fields["output_file_id"] == "" and fields["errors"] == [] and fields["metadata"] is None
    assert fields["total_requests"] == 0 and fields["total_tokens"] == 0


def test_it_parses_counts_usage_and_metadata_of_an_in_progress_batch():
    fields = batch_fields(payloads.IN_PROGRESS)
    assert (fields["total_requests"], fields["completed_requests"], fields["failed_requests"]) == (100, 40, 2)
    assert (fields["input_tokens"], fields["cached_tokens"], fields["output_tokens"],
            fields["reasoning_tokens"], fields["total_tokens"]) == (4000, 1000, 2000, 300, 6000)
    assert fields["metadata"] == {"description": "nightly eval"}


def test_a_completed_batch_with_only_failures_keeps_a_null_output_file():
    fields = batch_fields(payloads.ALL_FAILED)
    assert fields["status"] == "completed" and fields["output_file_id"] == ""
    assert fields["error_file_id"] == "file-HOWS94"
    assert fields["completed_requests"] == 0 and fields["failed_requests"] == 9


def test_validation_errors_keep_their_line_numbers():
    errors = batch_fields(payloads.VALIDATION_FAILED)["errors"]
    assert [(e["code"], e["line"], e["param"]) for e in errors] == [
        ("invalid_json_line", 3, None), ("url_mismatch", 17, "url")]


def test_a_cancelled_batch_keeps_partial_counts_and_every_timestamp():
    fields = batch_fields(payloads.CANCELLED)
    assert (fields["completed_requests"], fields["failed_requests"]) == (23, 1)
    assert fields["in_progress_at"] and fields["cancelling_at"] and fields["cancelled_at"]


def test_missing_usage_and_model_read_as_unknown_not_zero():
    fields = batch_fields(payloads.NO_USAGE)
    assert fields["model"] == ""
    assert all(fields[k] is None for k in ("input_tokens", "cached_tokens", "output_tokens", "total_tokens"))


def test_an_unknown_status_and_extra_fields_are_kept():
    fields = batch_fields(payloads.FUTURE)
    assert fields["status"] == "paused_for_review"
    assert fields["raw"]["brand_new_field"] == {"x": 1}
    assert fields["total_requests"] == 0 and fields["total_tokens"] is None


@pytest.mark.parametrize("payload", [None, [], "batch", {"status": "completed"}, {"id": ""}, {"id": 12},
                                     {"id": "x" * 300}])
def test_a_payload_without_a_usable_id_is_refused(payload):
    with pytest.raises(MalformedPayload):
        batch_fields(payload)


def test_odd_values_are_stored_safely():
    fields = batch_fields(payloads.batch(
        status="in_progress\x00", created_at=10**15, expires_at="soon", in_progress_at=-5,
        request_counts={"total": "12", "completed": -3, "failed": 2**70},
        metadata={"k\x00": "<script>alert(1)</script>"}, model=["not", "a", "string"],
    ))
    assert fields["status"] == "in_progress"
    assert fields["created_at"] is None and fields["expires_at"] is None
    assert fields["in_progress_at"] == datetime(1969, 12, 31, 23, 59, 55, tzinfo=timezone.utc)
    assert fields["total_requests"] == 12 and fields["completed_requests"] == -3
    assert fields["failed_requests"] == 2**63 - 1
    assert fields["metadata"] == {"k": "<script>alert(1)</script>"}
    assert fields["model"] == "['not', 'a', 'string']"
