"""Every kind of simulator response against the official OpenAPI description, and the official SDK."""

import copy
from pathlib import Path

import jsonschema
import openai
import pytest
import yaml

from tests.conftest import SIM_KEY
from tests.simclient import call, chat_lines, create_batch, jsonl, read_lines, upload

SPEC = yaml.safe_load((Path(__file__).parent / "data" / "openapi-batch-subset.yaml").read_text())


def _nullable_optionals(schema):
    """CONTRACT.md §9.1: the API sends null for unset optional properties the spec types as non-null.
    Make exactly those nullable; nothing else is loosened."""
    if isinstance(schema, list):
        return [_nullable_optionals(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {k: _nullable_optionals(v) for k, v in schema.items()}
    if isinstance(schema.get("properties"), dict):
        required = set(schema.get("required", []))
        schema["properties"] = {
            name: prop if name in required else {"anyOf": [prop, {"type": "null"}]}
            for name, prop in schema["properties"].items()
        }
    return schema


COMPONENTS = {"schemas": {name: _nullable_optionals(s) for name, s in SPEC["components"]["schemas"].items()}}


def assert_valid(instance, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": copy.deepcopy(COMPONENTS)}
    jsonschema.Draft202012Validator(schema).validate(instance)


def test_the_nullability_patch_keeps_required_fields_strict():
    with pytest.raises(jsonschema.ValidationError):
        assert_valid({"id": "b", "object": "batch", "endpoint": "/v1/x", "input_file_id": "f",
                      "completion_window": "24h", "status": None, "created_at": 1}, "Batch")
    with pytest.raises(jsonschema.ValidationError):
        assert_valid({"id": "b", "object": "batch", "endpoint": "/v1/x", "input_file_id": "f",
                      "completion_window": "24h", "status": "paused", "created_at": 1}, "Batch")


def test_every_success_response_matches_the_spec(simulator):
    lines = chat_lines(30)
    uploaded = upload(simulator, jsonl(lines))
    assert_valid(uploaded.json(), "OpenAIFile")
    simulator.simulator.failure_share = 0.3
    batch = create_batch(simulator, lines, metadata={"description": "contract"})
    assert_valid(batch, "Batch")
    for _ in range(6):
        simulator.advance(600)
        assert_valid(call(simulator, "GET", f"/batches/{batch['id']}").json(), "Batch")
    done = call(simulator, "GET", f"/batches/{batch['id']}").json()
    assert done["status"] == "completed"
    listing = call(simulator, "GET", "/batches", params={"limit": 2}).json()
    assert_valid(listing, "ListBatchesResponse")
    for item in listing["data"]:
        assert_valid(item, "Batch")
    files = call(simulator, "GET", "/files").json()
    assert_valid(files, "ListFilesResponse")
    assert_valid(call(simulator, "GET", f"/files/{done['output_file_id']}").json(), "OpenAIFile")
    for line in read_lines(simulator, done["output_file_id"]) + read_lines(simulator, done["error_file_id"]):
        assert_valid(line, "BatchRequestOutput")
    for line in read_lines(simulator, uploaded.json()["id"]):
        assert_valid(line, "BatchRequestInput")
    other = create_batch(simulator, chat_lines(3))
    cancelled = call(simulator, "POST", f"/batches/{other['id']}/cancel").json()
    assert_valid(cancelled, "Batch")
    assert_valid(call(simulator, "DELETE", f"/files/{uploaded.json()['id']}").json(), "DeleteFileResponse")


def test_every_error_response_is_the_standard_envelope(simulator):
    responses = [
        call(simulator, "GET", "/batches", headers={"Authorization": "Bearer wrong"}),
        call(simulator, "GET", "/batches/batch_nope"),
        call(simulator, "GET", "/files/file-nope"),
        call(simulator, "GET", "/batches", params={"limit": 101}),
        call(simulator, "POST", "/batches", json={"endpoint": "/v1/chat/completions"}),
    ]
    for kind in ("429", "500", "503", "quota"):
        simulator.set_faults(rate=1.0, kinds=[kind])
        responses.append(call(simulator, "GET", "/batches"))
    simulator.set_faults(rate=0)
    assert {r.status_code for r in responses} >= {401, 404, 400, 429, 500, 503}
    for response in responses:
        assert_valid(response.json(), "ErrorResponse")
        assert response.headers["x-request-id"]


def test_the_official_sdk_works_unchanged(simulator):
    simulator.simulator.populate(historical=250)
    sdk = openai.OpenAI(api_key=SIM_KEY, base_url=simulator.url, max_retries=0)
    uploaded = sdk.files.create(file=("tasks.jsonl", jsonl(chat_lines(12))), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes > 0
    created = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h", metadata={"team": "sdk"})
    assert created.status == "validating"

    ids = [b.id for b in sdk.batches.list(limit=100)]  # the SDK follows `after` across pages
    truth = [b["id"] for b in simulator.truth()]
    assert len(ids) == len(set(ids)) == len(truth) == 251
    assert set(ids) == set(truth)

    simulator.advance(3 * 3600)
    retrieved = sdk.batches.retrieve(created.id)
    assert retrieved.status == "completed" and retrieved.request_counts.total == 12
    content = sdk.files.content(retrieved.output_file_id).text
    assert len([line for line in content.splitlines() if line]) == retrieved.request_counts.completed

    another = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert sdk.batches.cancel(another.id).status == "cancelling"
    assert sdk.files.delete(uploaded.id).deleted is True


def test_raw_responses_pass_the_sdks_strict_models(simulator):
    simulator.simulator.populate(historical=40, active=8)
    for raw in call(simulator, "GET", "/batches", params={"limit": 100}).json()["data"]:
        openai.types.Batch.model_validate(raw, strict=True)
    uploaded = upload(simulator, jsonl(chat_lines(2))).json()
    openai.types.FileObject.model_validate(uploaded, strict=True)
    for raw in call(simulator, "GET", "/files").json()["data"]:
        openai.types.FileObject.model_validate(raw, strict=True)
    openai.types.FileDeleted.model_validate(call(simulator, "DELETE", f"/files/{uploaded['id']}").json(), strict=True)
