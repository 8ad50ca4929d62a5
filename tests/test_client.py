"""batches/client.py against the simulator over real HTTP: retries, classification, streaming."""

import time

import pytest

from batches.client import BatchApi, PermanentError, TransientError, stream_chunks
from tests.conftest import SIM_KEY


@pytest.fixture
def api(simulator, settings):
    settings.API_READ_TIMEOUT = 0.5
    client = BatchApi(base_url=simulator.url, api_key=SIM_KEY, organization="org-1", project="proj-1")
    yield client
    client.close()


def _requests(simulator, endpoint="GET /v1/batches") -> int:
    return simulator.stats()["by_endpoint"].get(endpoint, 0)


def test_it_sends_the_key_org_project_and_a_product_user_agent(api):
    headers = api.session.headers
    assert headers["Authorization"] == f"Bearer {SIM_KEY}"
    assert headers["OpenAI-Organization"] == "org-1" and headers["OpenAI-Project"] == "proj-1"
    assert headers["User-Agent"].startswith("Batchboard/")


def test_list_and_retrieve(api, simulator):
    simulator.simulator.populate(historical=3)
    page = api.list_batches(limit=2)
    assert len(page["data"]) == 2 and page["has_more"] is True
    assert api.retrieve_batch(page["data"][0]["id"])["id"] == page["data"][0]["id"]
    assert api.requests_made == 2


@pytest.mark.parametrize("kind", ["500", "503", "drop"])
def test_server_errors_and_dropped_connections_on_gets_are_retried(api, simulator, kind):
    simulator.set_faults(next=2, kinds=[kind])
    assert api.list_batches()["data"] == []
    assert api.requests_made == 3 and _requests(simulator) == 3


def test_retries_are_bounded(api, simulator):
    simulator.set_faults(rate=1.0, kinds=["500"])
    with pytest.raises(TransientError) as info:
        api.list_batches()
    assert info.value.status == 500
    assert _requests(simulator) == 3


def test_a_rate_limit_is_transient_carries_retry_after_and_is_not_slept_on(api, simulator):
    simulator.set_faults(next=1, kinds=["429"], retry_after=37)
    with pytest.raises(TransientError) as info:
        api.list_batches()
    assert info.value.status == 429 and info.value.code == "rate_limit_exceeded"
    assert info.value.retry_after == 37
    assert info.value.request_id
    assert _requests(simulator) == 1


def test_a_quota_429_is_permanent(api, simulator):
    simulator.set_faults(next=1, kinds=["quota"])
    with pytest.raises(PermanentError) as info:
        api.list_batches()
    assert info.value.code == "insufficient_quota"
    assert _requests(simulator) == 1


def test_a_truncated_body_is_transient_not_a_crash(api, simulator):
    simulator.set_faults(next=1, kinds=["truncated"])
    with pytest.raises(TransientError, match="malformed or truncated"):
        api.list_batches()


def test_a_slow_answer_times_out_as_transient(api, simulator):
    simulator.set_faults(next=3, kinds=["timeout"], slow_seconds=1.5)
    with pytest.raises(TransientError, match="timed out"):
        api.list_batches()


def test_a_bad_key_is_permanent_and_unknown_ids_too(simulator):
    bad = BatchApi(base_url=simulator.url, api_key="sk-wrong-key-1234")
    with pytest.raises(PermanentError) as info:
        bad.list_batches()
    assert info.value.status == 401 and "sk-wrong-key-1234" not in str(info.value)
    good = BatchApi(base_url=simulator.url, api_key=SIM_KEY)
    with pytest.raises(PermanentError) as info:
        good.retrieve_batch("batch_unknown")
    assert info.value.status == 404


def test_cancel_is_never_retried_blindly(api, simulator):
    batch = simulator.inject_batch("in_progress", lines=50)
    simulator.set_faults(next=1, kinds=["500"])
    with pytest.raises(TransientError):
        api.cancel_batch(batch["id"])
    assert _requests(simulator, "POST /v1/batches/{id}/cancel") == 1
    cancelled, request_id = api.cancel_batch(batch["id"])
    assert cancelled["status"] == "cancelling" and request_id.startswith("req_")


def test_file_content_is_a_stream(api, simulator):
    batch = simulator.inject_batch("completed", lines=300, fail_share=0, created_at=simulator.simulator.clock.now() - 60)
    meta = api.file_metadata(batch["output_file_id"])
    response = api.file_content(batch["output_file_id"])
    try:
        assert response.raw is not None and not response._content_consumed
        assert sum(len(chunk) for chunk in response.iter_content(8192)) == meta["bytes"]
    finally:
        response.close()


def test_a_drip_fed_answer_is_cut_at_the_call_deadline(api, simulator, settings):
    """Today a server sending one byte every read-timeout-minus-a-bit holds the caller for ever."""
    settings.API_CALL_DEADLINE = 1.0
    simulator.set_faults(next=1, kinds=["drip"], slow_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(TransientError, match="longer than 1s"):
        api.list_batches()
    assert time.monotonic() - started < 1.5


def _dripped_file(api, simulator, slow_seconds: float):
    batch = simulator.inject_batch("completed", lines=50, created_at=simulator.simulator.clock.now() - 60)
    simulator.set_faults(next=1, kinds=["drip"], slow_seconds=slow_seconds)
    return api.file_content(batch["input_file_id"])


def test_a_file_arriving_under_the_minimum_pace_is_cut_after_the_grace_time(api, simulator, settings):
    settings.FILE_STREAM_MIN_BYTES_PER_SECOND, settings.FILE_STREAM_GRACE_SECONDS = 100, 0.5
    response = _dripped_file(api, simulator, slow_seconds=0.05)  # 20 bytes/s
    received, started = [], time.monotonic()
    with pytest.raises(TransientError, match="slower than 100 bytes/s"):
        for chunk in stream_chunks(response):
            received.append(chunk)
    response.close()
    assert 0.5 <= time.monotonic() - started < 1.0 and 0 < len(b"".join(received)) < 50


def test_a_file_that_stops_arriving_is_cut_after_the_stall_time(api, simulator, settings):
    settings.FILE_STREAM_MIN_BYTES_PER_SECOND, settings.FILE_STREAM_STALL_SECONDS = 0, 0.3
    response = _dripped_file(api, simulator, slow_seconds=3)
    started = time.monotonic()
    with pytest.raises(TransientError, match="nothing arrived for 0.3s"):
        list(stream_chunks(response))
    response.close()
    assert time.monotonic() - started < 0.6


def test_a_file_stream_is_cut_at_its_deadline_however_steady(api, simulator, settings):
    settings.FILE_STREAM_MIN_BYTES_PER_SECOND = 10
    response = _dripped_file(api, simulator, slow_seconds=0.01)  # about 100 bytes/s, steadily
    started = time.monotonic()
    with pytest.raises(TransientError, match="longer than 0.5s"):
        list(stream_chunks(response, seconds=0.5))
    response.close()
    assert time.monotonic() - started < 0.8


def test_slow_retries_all_fit_in_the_call_deadline(api, simulator, settings):
    """Each attempt times out on its own read timeout; together they stop at the deadline, not 3 × the timeout."""
    settings.API_CALL_DEADLINE, settings.API_READ_TIMEOUT = 1.0, 0.8
    simulator.set_faults(next=3, kinds=["timeout"], slow_seconds=3)
    started = time.monotonic()
    with pytest.raises(TransientError):
        api.list_batches()
    assert time.monotonic() - started < 1.5


def _dripping_server(head: bytes, body: bytes):
    """A raw server that sends `head` at once, then `body` one byte every 0.2 s (whatever HTTP framing they
    hold: the status line, headers or a chunked body)."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                client.recv(65536)
                client.sendall(head)
                for i in range(len(body)):
                    client.sendall(body[i:i + 1])
                    time.sleep(0.2)
            except OSError:
                pass
            finally:
                client.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


@pytest.mark.parametrize("head,body", [
    (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 200 + b"\r\n\r\n{}"),  # headers dripped
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"2\r\n{}\r\n" * 100 + b"0\r\n\r\n"),  # chunks
])
def test_a_server_dripping_its_headers_or_chunks_is_cut_at_the_call_deadline(settings, head, body):
    """Per-read timeouts alone let these hold a worker for as long as the server likes (12 s and more)."""
    settings.API_CALL_DEADLINE, settings.API_READ_TIMEOUT = 1.0, 0.8
    listener, url = _dripping_server(head, body)
    api = BatchApi(base_url=url, api_key="sk-test-drip")
    started = time.monotonic()
    try:
        with pytest.raises(TransientError, match="longer than 1s"):
            api.list_batches()
    finally:
        api.close()
        listener.close()
    assert time.monotonic() - started < 1.6
