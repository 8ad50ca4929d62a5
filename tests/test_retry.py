"""Retry as a new batch: the confirmation, the batch it makes (once, whatever happens), splitting, metadata,
the retry file, lineage and merged results. Against the real simulator over HTTP."""

import json
import re

import pytest
import requests

from batches.models import AuditEvent, Batch, BatchRequest, RequestOutcome, Submission, SubmissionPart
from batches.results import index_batch
from tests.conftest import SIM_KEY


def _url(batch, tail="retry/"):
    return f"/batches/sim/{batch.batch_id}/{tail}"


def _token(page: str) -> str:
    return re.search(r'name="token" value="([0-9a-f]{32})"', page).group(1)


def _retry(client, batch, **data):
    page = client.get(_url(batch), data).content.decode()
    return client.post(_url(batch), {"token": _token(page), **data}), _token(page)


def _file_lines(simulator, file_id) -> list[dict]:
    text = requests.get(f"{simulator.url}/files/{file_id}/content", timeout=10,
                        headers={"Authorization": f"Bearer {SIM_KEY}"}).text
    return [json.loads(line) for line in text.splitlines()]


def _failed_ids(batch) -> set:
    return set(BatchRequest.objects.filter(batch=batch, outcome=RequestOutcome.FAILED)
               .values_list("custom_id", flat=True))


def _uploads(simulator) -> int:
    return simulator.stats()["by_endpoint"].get("POST /v1/files", 0)


def test_the_confirmation_shows_count_endpoint_model_cost_lines_and_basis(client, login, failed_batch):
    login("operator")
    page = client.get(_url(failed_batch)).content.decode()
    failed = len(_failed_ids(failed_batch))
    assert failed > 0
    assert f'<dd id="retry-count">{failed}' in page
    assert "/v1/chat/completions" in page and "gpt-4o-mini" in page
    assert "byte-based: no tokenizer" in page and "≈ $" in page
    first = sorted(BatchRequest.objects.filter(batch=failed_batch, outcome=RequestOutcome.FAILED),
                   key=lambda r: r.input_offset)[0]
    assert first.custom_id in page.split('id="retry-lines"')[1]


def test_a_retry_sends_the_original_lines_of_the_failed_requests_once_as_a_linked_child(client, login, simulator,
                                                                                        failed_batch):
    user = login("operator")
    response, token = _retry(client, failed_batch)
    assert response.status_code == 302 and response["Location"] == _url(failed_batch, "lineage/")
    assert simulator.stats()["batches_created"] == 1
    child = Batch.objects.exclude(pk=failed_batch.pk).get()
    sent = next(b for b in simulator.truth() if b["id"] == child.batch_id)["metadata"]  # as the API got it
    assert list(sent)[:2] == ["retry_of", "batchboard_intent"]  # (PostgreSQL's jsonb keeps no key order)
    assert child.metadata["retry_of"] == failed_batch.batch_id and child.metadata["batchboard_intent"] == f"{token}-1"
    assert child.metadata["description"] == "nightly eval"
    sent = _file_lines(simulator, child.input_file_id)
    assert {line["custom_id"] for line in sent} == _failed_ids(failed_batch)
    numbers = [int(line["custom_id"].split("-")[1]) for line in sent]
    assert numbers == sorted(numbers)  # input order
    part = SubmissionPart.objects.get()
    assert part.batch == child and part.upload_filename == f"batchboard-{token}-1.jsonl"
    event = AuditEvent.objects.get(action="submit")
    assert event.user == user and event.batch == child and event.ok and event.request_id
    page = client.get(_url(failed_batch, "lineage/")).content.decode()
    assert child.batch_id in page and "retry 1" in page
    detail = client.get(_url(child, "")).content.decode()
    assert f"A retry of" in detail and failed_batch.batch_id in detail
    assert child.batch_id in client.get(_url(failed_batch, "")).content.decode()


def test_a_double_click_posts_the_same_token_and_makes_one_batch(client, login, simulator, failed_batch):
    login("operator")
    token = _token(client.get(_url(failed_batch)).content.decode())
    first = client.post(_url(failed_batch), {"token": token})
    second = client.post(_url(failed_batch), {"token": token})
    assert first.status_code == second.status_code == 302
    assert simulator.stats()["batches_created"] == 1 and _uploads(simulator) == 1
    assert Submission.objects.count() == 1
    assert "Already submitted" in client.get(second["Location"]).content.decode()


def test_a_lost_upload_answer_is_found_by_its_filename_and_not_uploaded_again(client, login, simulator,
                                                                              failed_batch):
    login("operator")
    simulator.set_faults(lose_answer="upload")
    response, token = _retry(client, failed_batch)
    assert Submission.objects.get().state == Submission.INTERRUPTED
    assert simulator.stats()["batches_created"] == 0 and _uploads(simulator) == 1
    page = client.get(response["Location"]).content.decode()
    assert "Interrupted" in page and "Resume" in page
    client.post(_url(failed_batch), {"token": token})  # Resume posts the same token
    assert _uploads(simulator) == 1 and simulator.stats()["batches_created"] == 1
    assert Submission.objects.get().state == Submission.DONE


def test_a_lost_create_answer_is_found_by_the_head_walk_and_not_created_again(client, login, simulator,
                                                                             failed_batch):
    login("operator")
    simulator.set_faults(lose_answer="create")
    _, token = _retry(client, failed_batch)
    assert simulator.stats()["batches_created"] == 1
    assert SubmissionPart.objects.get().batch is None
    client.post(_url(failed_batch), {"token": token})
    assert simulator.stats()["batches_created"] == 1
    part = SubmissionPart.objects.get()
    assert part.batch is not None and part.batch.metadata["batchboard_intent"] == f"{token}-1"
    assert AuditEvent.objects.filter(action="submit", ok=True, result__startswith="Found").count() == 1


def test_a_sync_that_sees_the_created_batch_first_links_it(client, login, simulator, connection, failed_batch):
    from batches.sync import sync_connection

    login("operator")
    simulator.set_faults(lose_answer="create")
    _, token = _retry(client, failed_batch)
    sync_connection(connection_id=connection.pk, full=True)
    assert SubmissionPart.objects.get().batch is not None  # the store linked it
    client.post(_url(failed_batch), {"token": token})
    assert simulator.stats()["batches_created"] == 1 and Submission.objects.get().state == Submission.DONE


def test_a_crash_before_any_call_leaves_a_recorded_intent_that_resumes_into_one_batch(login, simulator,
                                                                                      failed_batch):
    from batches import actions

    user = login("operator")
    submission, new = actions.record_submission(
        token="a" * 32, user=user, kind=Submission.RETRY, connection=failed_batch.connection, parent=failed_batch,
        endpoint=failed_batch.endpoint, model=failed_batch.model, metadata=[["retry_of", failed_batch.batch_id]],
        selection={"outcomes": ["failed"], "codes": []})
    again, new_again = actions.record_submission(token="a" * 32, user=user, kind=Submission.RETRY,
                                                 connection=failed_batch.connection, endpoint="x")
    assert new and not new_again and again.pk == submission.pk
    assert actions.submit(submission=submission, user=user).ok
    assert actions.submit(submission=submission, user=user).info
    assert simulator.stats()["batches_created"] == 1


def test_a_create_that_fails_before_reaching_the_api_is_sent_again_with_the_same_file(login, simulator,
                                                                                      failed_batch):
    from batches import actions

    user = login("operator")
    submission, _ = actions.record_submission(
        token="b" * 32, user=user, kind=Submission.RETRY, connection=failed_batch.connection, parent=failed_batch,
        endpoint=failed_batch.endpoint, model=failed_batch.model, metadata=[], selection={"outcomes": ["failed"]})
    simulator.set_faults(lose_answer="")
    simulator.simulator.creations_per_hour = 0  # the create is refused with a 429: nothing created
    outcome = actions.submit(submission=submission, user=user)
    assert not outcome.ok and "429" in outcome.message
    simulator.simulator.creations_per_hour = 2000
    assert actions.submit(submission=submission, user=user).ok
    assert _uploads(simulator) == 1 and simulator.stats()["batches_created"] == 1


def test_the_hourly_creation_limit_is_respected(client, login, simulator, failed_batch, settings):
    settings.BATCH_CREATIONS_PER_HOUR = 1
    login("operator")
    _retry(client, failed_batch)
    response, _ = _retry(client, failed_batch)
    assert simulator.stats()["batches_created"] == 1
    assert "batch creations an hour" in client.get(response["Location"]).content.decode()
    assert Submission.objects.filter(state=Submission.INTERRUPTED).count() == 1


def test_a_retry_over_the_per_batch_limits_becomes_several_linked_batches(client, login, simulator, failed_batch,
                                                                          settings):
    settings.BATCH_MAX_REQUESTS = 4
    failed = _failed_ids(failed_batch)
    login("operator")
    page = client.get(_url(failed_batch)).content.decode()
    parts = -(-len(failed) // 4)
    assert f"({parts} batches)" in page
    _retry(client, failed_batch)
    assert simulator.stats()["batches_created"] == parts
    children = Batch.objects.exclude(pk=failed_batch.pk)
    assert children.count() == parts
    assert sorted(line["custom_id"] for child in children for line in _file_lines(simulator, child.input_file_id)) \
        == sorted(failed)
    lineage = client.get(_url(failed_batch, "lineage/")).content.decode()
    assert all(child.batch_id in lineage for child in children)


def test_a_retry_of_a_batch_whose_files_expired_at_the_provider_is_built_from_the_archive(
        client, login, simulator, archived_batch):
    batch = archived_batch("completed", lines=30, fail_share=0.3, output_expires_after=5 * 86400)
    index_batch(batch.pk)
    simulator.advance(40 * 86400)  # every file of it is gone at the provider now
    assert requests.get(f"{simulator.url}/files/{batch.input_file_id}/content", timeout=10,
                        headers={"Authorization": f"Bearer {SIM_KEY}"}).status_code == 404
    login("operator")
    _retry(client, batch)
    child = Batch.objects.exclude(pk=batch.pk).get()
    assert {line["custom_id"] for line in _file_lines(simulator, child.input_file_id)} == _failed_ids(batch)


def test_a_retry_can_be_narrowed_to_error_codes(client, login, simulator, failed_batch):
    codes = dict(BatchRequest.objects.filter(batch=failed_batch).exclude(error_code="")
                 .values_list("error_code", "custom_id"))
    code = sorted(codes)[0]
    login("operator")
    _retry(client, failed_batch, codes=[code])
    child = Batch.objects.exclude(pk=failed_batch.pk).get()
    expected = set(BatchRequest.objects.filter(batch=failed_batch, error_code=code).values_list("custom_id", flat=True))
    assert {line["custom_id"] for line in _file_lines(simulator, child.input_file_id)} == expected


def test_a_code_that_is_not_in_the_menu_narrows_the_retry_to_nothing_never_widens_it(client, login, failed_batch):
    login("operator")
    page = client.get(_url(failed_batch) + "?codes=batch_cancelled").content.decode()
    retryable = BatchRequest.objects.filter(batch=failed_batch, outcome__in=[2, 3, 5]).count()
    assert retryable > 0 and f"{retryable} request" not in page
    assert re.search(r"\b0 requests?\b|Nothing to send|no request", page, re.I)


def test_the_retry_file_holds_the_original_lines_in_input_order(client, login, failed_batch, archive_storage):
    login("operator")
    response = client.get(_url(failed_batch, "retry/file/"))
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{failed_batch.batch_id}_retry.jsonl"'
    body = b"".join(response.streaming_content)
    original = {json.loads(line)["custom_id"]: line for line in
                archive_storage.open(failed_batch.archived_files.get(kind="input").name).read().splitlines()}
    lines = body.splitlines()
    assert [original[json.loads(line)["custom_id"]] for line in lines] == lines
    assert {json.loads(line)["custom_id"] for line in lines} == _failed_ids(failed_batch)
    assert AuditEvent.objects.filter(action="download", detail="retry file").exists()


def test_metadata_is_trimmed_to_the_api_limits_and_the_page_says_what(client, login, simulator, archived_batch):
    metadata = {f"k{i}": f"v{i}" for i in range(15)}
    metadata["k0"] = "x" * 512  # at the limit: kept
    batch = archived_batch("completed", lines=20, fail_share=0.5, metadata=metadata)
    Batch.objects.filter(pk=batch.pk).update(metadata={**metadata, "y" * 65: "long key", "batchboard_intent": "old",
                                                       "k1": "z" * 600})
    index_batch(batch.pk)
    login("operator")
    page = client.get(_url(batch)).content.decode()
    assert "Trimmed to the API's limits" in page
    assert "dropped: keys have at most 64 characters" in page and "“k1” cut to 512 characters" in page
    assert "“batchboard_intent” is replaced" in page and "dropped: at most 16 pairs" in page
    _retry(client, batch)
    child = Batch.objects.exclude(pk=batch.pk).get()
    assert len(child.metadata) == 16 and len(child.metadata["k1"]) == 512
    assert all(len(key) <= 64 and len(value) <= 512 for key, value in child.metadata.items())


def test_viewers_see_no_retry_and_operators_see_how_many(client, login, failed_batch):
    login("viewer")
    assert "Retry" not in client.get(_url(failed_batch, "")).content.decode()
    client.logout()
    login("operator")
    n = BatchRequest.objects.filter(batch=failed_batch).exclude(outcome=RequestOutcome.SUCCEEDED).count()
    assert f"Retry {n} requests…" in client.get(_url(failed_batch, "")).content.decode()


def test_lineage_counts_each_custom_ids_latest_outcome_and_merges_the_results(client, login, simulator,
                                                                             connection, failed_batch, run_archive):
    from batches.sync import sync_connection

    login("operator")
    _retry(client, failed_batch)
    simulator.advance(2 * 86400)
    sync_connection(connection_id=connection.pk, full=True)
    child = Batch.objects.exclude(pk=failed_batch.pk).get()
    assert child.is_terminal
    assert set(run_archive().values()) == {"stored"}  # the archive copies the child's files, as it does any batch's
    index_batch(child.pk)
    first = BatchRequest.objects.filter(batch=failed_batch, outcome=RequestOutcome.SUCCEEDED).count()
    second = BatchRequest.objects.filter(batch=child, outcome=RequestOutcome.SUCCEEDED).count()
    failing = BatchRequest.objects.filter(batch=child).exclude(outcome=RequestOutcome.SUCCEEDED).count()
    page = client.get(_url(child, "lineage/")).content.decode()
    summary = re.sub(r"<[^>]+>", "", page.split('id="lineage-summary">')[1].split("</p>")[0])
    assert f"{first} succeeded first time, {second} succeeded on retry 1, {failing} still failing" in summary
    output = b"".join(client.get(_url(child, "lineage/results/output/")).streaming_content).splitlines()
    assert len(output) == first + second == len({json.loads(line)["custom_id"] for line in output})
    assert all(json.loads(line)["response"]["status_code"] == 200 for line in output)
    errors = b"".join(client.get(_url(failed_batch, "lineage/results/error/")).streaming_content).splitlines()
    assert len(errors) == failing
    assert {json.loads(line)["custom_id"] for line in errors} == set(
        BatchRequest.objects.filter(batch=child).exclude(outcome=RequestOutcome.SUCCEEDED)
        .values_list("custom_id", flat=True))


def test_a_request_that_outlived_its_lease_sends_nothing_after_another_took_over(login, simulator, failed_batch):
    from datetime import timedelta

    from django.utils import timezone

    from batches import actions

    user = login("operator")
    submission, _ = actions.record_submission(
        token="b" * 32, user=user, kind=Submission.RETRY, connection=failed_batch.connection, parent=failed_batch,
        endpoint=failed_batch.endpoint, model=failed_batch.model, metadata=[], selection={"outcomes": ["failed"]})
    ours = timezone.now() + timedelta(seconds=5)
    Submission.objects.filter(pk=submission.pk).update(lease_until=ours)
    lease = actions._Lease(submission, ours)
    lease.renew()  # still ours: renewed
    Submission.objects.filter(pk=submission.pk).update(lease_until=timezone.now() + timedelta(hours=1))  # taken over
    part = SubmissionPart.objects.create(submission=submission, number=1, name="x", bytes=1, requests=1)
    with pytest.raises(actions._LeaseLost):
        actions._send_part(None, submission, part, user, lease)  # stops before the upload: no API call at all
    assert simulator.stats()["batches_created"] == 0 and _uploads(simulator) == 0
