"""The archive on an S3-compatible bucket (django-storages + boto3, set by ARCHIVE_S3_* variables), against a real
S3 server the suite starts: moto's server mode, in a subprocess on a free port (no network). Copies, reads by
ranged GETs, downloads streamed through Django (never a pre-signed URL), and the S3 credentials kept out of every
error text, page and log line."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
from types import SimpleNamespace

import boto3
import pytest
import requests

from batches import archive
from batches.errors import SafeReporterFilter
from batches.store import store_batch
from tests.processes import ROOT, stop_process
from tests.simclient import call, control

ACCESS_KEY, SECRET_KEY = "AKIAARCHIVETESTS0001", "archive-s3-secret-for-tests-only-0123456789"
PREFIX = "team/archive"


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server in its own process (its memory is not ours), on a free port; returns its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url, timeout=1)
            break
        except requests.RequestException:  # not listening yet, or (a busy machine) slow to answer its first request
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("moto's server did not start:\n" + stop_process(process)) from None
            time.sleep(0.1)
    yield url
    stop_process(process)


@pytest.fixture
def s3_archive(settings, s3_server, tmp_path):
    """STORAGES["archive"] as settings.py builds it from ARCHIVE_S3_* variables, on a new bucket of the moto server.
    Returns the bucket's name and a boto3 client for looking at it."""
    bucket = f"batchboard-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY)
    client.create_bucket(Bucket=bucket)
    settings.ARCHIVE_TMP_DIR = tmp_path / "incoming"
    settings.STORAGES = {**settings.STORAGES, "archive": _configured_storage({
        "ARCHIVE_S3_BUCKET": bucket, "ARCHIVE_S3_ENDPOINT_URL": s3_server, "ARCHIVE_S3_REGION": "us-east-1",
        "ARCHIVE_S3_ACCESS_KEY_ID": ACCESS_KEY, "ARCHIVE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "ARCHIVE_S3_PREFIX": f"/{PREFIX}/"})}
    return SimpleNamespace(bucket=bucket, client=client, url=s3_server)


def _configured_storage(variables: dict) -> dict:
    """STORAGES["archive"] of the production settings module started with these environment variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARCHIVE_", "AWS_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "dashboard.settings", **variables})
    result = subprocess.run(
        [sys.executable, "-c", "import json; from django.conf import settings; "
         "print(json.dumps(settings.STORAGES['archive'], default=str))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _api_bytes(simulator, file_id: str) -> bytes:
    response = call(simulator, "GET", f"/files/{file_id}/content")
    assert response.status_code == 200
    return response.content


def test_the_s3_archive_is_set_only_by_environment_variables(s3_archive):
    options = _configured_storage({"ARCHIVE_S3_BUCKET": "b", "ARCHIVE_S3_ACCESS_KEY_ID": "id",
                                   "ARCHIVE_S3_SECRET_ACCESS_KEY": "secret"})
    assert options["BACKEND"] == "storages.backends.s3.S3Storage"
    assert (options["OPTIONS"]["bucket_name"], options["OPTIONS"]["access_key"], options["OPTIONS"]["secret_key"],
            options["OPTIONS"]["endpoint_url"], options["OPTIONS"]["location"]) == ("b", "id", "secret", None, "")
    assert _configured_storage({})["BACKEND"] == "django.core.files.storage.FileSystemStorage"


def test_a_copy_is_uploaded_under_the_prefix_named_by_its_hash(finished_batch, s3_archive, run_archive, simulator,
                                                               settings):
    assert set(run_archive().values()) == {"stored"}
    rows = list(finished_batch.archived_files.all())
    listed = s3_archive.client.list_objects_v2(Bucket=s3_archive.bucket)["Contents"]
    assert sorted(item["Key"] for item in listed) == sorted(f"{PREFIX}/{row.name}" for row in rows)
    for row in rows:
        original = _api_bytes(simulator, row.file_id)
        stored = s3_archive.client.get_object(Bucket=s3_archive.bucket, Key=f"{PREFIX}/{row.name}")["Body"].read()
        assert stored == original and row.bytes == len(original)
        assert row.sha256 == hashlib.sha256(original).hexdigest() and row.name.startswith(row.sha256[:2] + "/")
        assert row.file_id not in row.name and finished_batch.batch_id not in row.name
    assert not list(settings.ARCHIVE_TMP_DIR.iterdir())


def test_stream_and_read_range_ask_s3_for_only_the_bytes_they_need(finished_batch, s3_archive, run_archive,
                                                                    simulator):
    run_archive()
    row = finished_batch.archived_files.get(kind="output")
    original = _api_bytes(simulator, row.file_id)
    ranges = []
    events = archive.storage().connection.meta.client.meta.events
    events.register("before-parameter-build.s3.GetObject", lambda params, **_: ranges.append(params.get("Range")))
    assert archive.read_range(row, 10, 20) == original[10:30] and ranges == ["bytes=10-29"]
    assert b"".join(archive.stream(row, start=100, chunk_size=4096)) == original[100:]
    assert ranges[-1] == "bytes=100-"
    assert b"".join(archive.stream(row)) == original and ranges[-1] is None
    assert archive.read_range(row, len(original) + 5, 10) == b"" and list(archive.stream(row, start=len(original))) == []
    assert len(ranges) == 3  # nothing past the end was asked for


def test_a_download_streams_the_archived_copy_through_django_never_by_a_presigned_url(
        client, login, finished_batch, s3_archive, run_archive, simulator):
    original = _api_bytes(simulator, finished_batch.output_file_id)
    run_archive()
    simulator.advance(40 * 86400)  # the API has deleted its files
    login("operator")
    response = client.get(f"/batches/sim/{finished_batch.batch_id}/files/output/")
    assert response.status_code == 200 and response.streaming and not response.has_header("Location")
    assert response["X-Batchboard-Source"] == "archive"
    body = b"".join(response.streaming_content)
    assert body == original
    headers = str(response.headers)
    for text in (s3_archive.url, s3_archive.bucket, "X-Amz-", "Signature", "AWSAccessKeyId", ACCESS_KEY):
        assert text not in headers
    assert finished_batch.audit_events.get().result.endswith(f"completed from the archive, {len(body):,} bytes sent")
    page = client.get(f"/batches/sim/{finished_batch.batch_id}/").content.decode()
    assert page.count(">archived</span>") == 3 and s3_archive.url not in page and s3_archive.bucket not in page


def test_s3_credentials_never_appear_in_errors_pages_or_logs(client, login, finished_batch, s3_archive, run_archive,
                                                            caplog):
    s3_archive.client.delete_bucket(Bucket=s3_archive.bucket)  # every upload now fails
    assert set(run_archive().values()) == {"failed"}
    errors = set(finished_batch.archived_files.values_list("last_error", flat=True))
    assert errors == {"the copy could not be stored: S3UploadFailedError"}
    login("viewer")
    page = client.get(f"/batches/sim/{finished_batch.batch_id}/").content.decode()
    assert page.count("archive failed: the copy could not be stored") == 3
    assert "archive" in caplog.text  # the failures were logged
    for text in (page, caplog.text):
        assert SECRET_KEY not in text and ACCESS_KEY not in text
    shown = SafeReporterFilter().get_safe_settings()["STORAGES"]["archive"]["OPTIONS"]  # Django's error pages
    assert SECRET_KEY not in str(shown) and ACCESS_KEY not in str(shown)


def test_a_large_file_is_copied_to_s3_with_bounded_memory(connection, simulator, sim_clock, s3_archive, run_archive,
                                                          archive_queue, settings):
    settings.ARCHIVE_FILES, settings.ARCHIVE_BACKFILL_DAYS = "results", 1
    created = control(simulator, "POST", "/_sim/batches", json={
        "status": "completed", "lines": 2000, "fail_share": 0, "output_bytes": 50_000_000,
        "created_at": sim_clock.now() - 3600})
    row = store_batch(connection, created.json())[0].archived_files.get()
    archive.storage().bucket.load()  # boto3's one-time set-up (its service models) is no part of the copy
    tracemalloc.start()
    try:
        outcome = run_archive()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    row.refresh_from_db()
    assert outcome == {row.pk: "stored"} and row.bytes > 49_000_000
    head = s3_archive.client.head_object(Bucket=s3_archive.bucket, Key=f"{PREFIX}/{row.name}")
    assert head["ContentLength"] == row.bytes
    assert peak < 10 * 2**20, f"peak {peak / 2**20:.1f} MB"
