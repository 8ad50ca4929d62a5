"""Scenario tests for the simulator's rules (CONTRACT.md §5-§7), over real HTTP."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from simulator import Clock, Simulator, SimulatorServer
from simulator.engine import MALFORMED_LINES
from tests.simclient import call, chat_lines, control, create_batch, jsonl, read_lines, upload

ROOT = Path(__file__).resolve().parent.parent


def _get(sim, batch_id):
    return call(sim, "GET", f"/batches/{batch_id}").json()


def test_validation_failures_carry_codes_and_one_based_line_numbers(simulator):
    lines = chat_lines(6)
    raw = [json.dumps(line) for line in lines]
    raw[1] = "{not json"
    raw[3] = json.dumps({**lines[3], "custom_id": "task-0"})
    raw[4] = json.dumps({**lines[4], "url": "/v1/embeddings"})
    raw[5] = json.dumps({**lines[5], "body": {**lines[5]["body"], "model": "gpt-4.1"}})
    file_id = upload(simulator, ("\n".join(raw) + "\n").encode()).json()["id"]
    batch = call(simulator, "POST", "/batches", json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}).json()
    assert batch["status"] == "validating"
    simulator.advance(600)
    failed = _get(simulator, batch["id"])
    assert failed["status"] == "failed" and failed["failed_at"] is not None
    assert failed["output_file_id"] is None and failed["error_file_id"] is None
    found = {(e["code"], e["line"]) for e in failed["errors"]["data"]}
    assert found == {("invalid_json_line", 2), ("duplicate_custom_id", 4), ("url_mismatch", 5), ("model_mismatch", 6)}


def test_an_empty_file_fails_validation(simulator):
    file_id = upload(simulator, b"\n").json()["id"]
    batch = call(simulator, "POST", "/batches", json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}).json()
    simulator.advance(600)
    assert _get(simulator, batch["id"])["errors"]["data"][0]["code"] == "empty_file"


def test_more_than_50000_lines_fail_validation(simulator):
    line = b'{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{}}\n'
    file_id = upload(simulator, line * 50001).json()["id"]
    batch = call(simulator, "POST", "/batches", json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}).json()
    simulator.advance(600)
    assert _get(simulator, batch["id"])["errors"]["data"][0]["code"] == "too_many_tasks"


def test_the_queued_token_limit_fails_a_batch(simulator):
    simulator.simulator.queued_token_limit = 10
    batch = create_batch(simulator, chat_lines(5))
    simulator.advance(600)
    error = _get(simulator, batch["id"])["errors"]["data"][0]
    assert error["code"] == "token_limit_exceeded" and error["line"] is None
    assert "Enqueued token limit reached for gpt-4o-mini" in error["message"]


def test_a_batch_runs_through_every_state_with_growing_counts_and_usage(simulator):
    batch = create_batch(simulator, chat_lines(400))
    assert (batch["status"], batch["request_counts"]["total"]) == ("validating", 0)
    seen, last = [], None
    for _ in range(400):
        simulator.advance(30)
        now = _get(simulator, batch["id"])
        if not seen or seen[-1] != now["status"]:
            seen.append(now["status"])
        if last and now["status"] == "in_progress":
            assert now["request_counts"]["completed"] >= last["request_counts"]["completed"]
        last = now
        if now["status"] == "completed":
            break
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    counts, usage = last["request_counts"], last["usage"]
    assert counts["total"] == 400 == counts["completed"] + counts["failed"]
    for name in ("in_progress_at", "finalizing_at", "completed_at"):
        assert last[name] is not None
    outputs = read_lines(simulator, last["output_file_id"])
    assert len(outputs) == counts["completed"]
    body_usage = [line["response"]["body"]["usage"] for line in outputs]
    assert usage["input_tokens"] == sum(u["prompt_tokens"] for u in body_usage)
    assert usage["output_tokens"] == sum(u["completion_tokens"] for u in body_usage)
    assert usage["input_tokens_details"]["cached_tokens"] == sum(
        u["prompt_tokens_details"]["cached_tokens"] for u in body_usage)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    file_meta = call(simulator, "GET", f"/files/{last['output_file_id']}").json()
    assert file_meta["purpose"] == "batch_output"
    assert file_meta["expires_at"] - file_meta["created_at"] == 30 * 86400


def test_output_order_is_unrelated_to_input_order(simulator):
    batch = create_batch(simulator, chat_lines(60))
    simulator.advance(7200)
    done = _get(simulator, batch["id"])
    ids = [line["custom_id"] for line in read_lines(simulator, done["output_file_id"])]
    assert set(ids) <= {f"task-{i}" for i in range(60)}
    assert ids != sorted(ids, key=lambda x: int(x.split("-")[1]))


def test_output_expires_after_sets_the_result_files_expiry(simulator):
    batch = create_batch(simulator, chat_lines(5), output_expires_after={"anchor": "created_at", "seconds": 7200})
    simulator.advance(7200)
    done = _get(simulator, batch["id"])
    meta = call(simulator, "GET", f"/files/{done['output_file_id']}").json()
    assert meta["expires_at"] - meta["created_at"] == 7200
    simulator.advance(7201)
    assert call(simulator, "GET", f"/files/{done['output_file_id']}/content").status_code == 404


def test_when_every_request_fails_the_batch_completes_without_an_output_file(simulator):
    simulator.simulator.failure_share = 1.0
    batch = create_batch(simulator, chat_lines(9))
    simulator.advance(7200)
    done = _get(simulator, batch["id"])
    assert done["status"] == "completed" and done["output_file_id"] is None
    assert done["request_counts"] == {"total": 9, "completed": 0, "failed": 9}
    errors = read_lines(simulator, done["error_file_id"])
    assert len(errors) == 9
    assert all(line["response"]["status_code"] >= 400 and line["response"]["body"]["error"]["message"]
               and line["error"] is None for line in errors)


def test_cancel_keeps_partial_results_and_lists_unrun_lines(simulator):
    batch = create_batch(simulator, chat_lines(1000))
    simulator.advance(130)
    while _get(simulator, batch["id"])["request_counts"]["completed"] < 100:
        simulator.advance(60)
    cancelling = call(simulator, "POST", f"/batches/{batch['id']}/cancel").json()
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
    again = call(simulator, "POST", f"/batches/{batch['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelling"
    assert again.json()["cancelling_at"] == cancelling["cancelling_at"]
    simulator.advance(600)
    done = _get(simulator, batch["id"])
    assert done["status"] == "cancelled" and done["in_progress_at"] and done["cancelling_at"] and done["cancelled_at"]
    counts = done["request_counts"]
    assert 0 < counts["completed"] < 1000
    assert len(read_lines(simulator, done["output_file_id"])) == counts["completed"]
    errors = read_lines(simulator, done["error_file_id"])
    unrun = [line for line in errors if line["response"] is None]
    assert len(unrun) == 1000 - counts["completed"] - counts["failed"]
    assert {line["error"]["code"] for line in unrun} == {"batch_cancelled"}
    refused = call(simulator, "POST", f"/batches/{batch['id']}/cancel")
    assert refused.status_code == 400 and refused.json()["error"]["message"]


def test_an_unfinished_batch_expires_after_the_window_with_batch_expired_lines(simulator):
    batch = control(simulator, "POST", "/_sim/batches", json={
        "status": "in_progress", "lines": 300, "processing_seconds": 10**6, "fail_share": 0}).json()
    assert batch["status"] == "in_progress"
    simulator.advance(86400)
    done = _get(simulator, batch["id"])
    assert done["status"] == "expired" and done["expired_at"] == done["expires_at"]
    counts = done["request_counts"]
    assert counts["completed"] < 300
    unrun = read_lines(simulator, done["error_file_id"])
    assert len(unrun) == 300 - counts["completed"]
    assert {line["error"]["code"] for line in unrun} == {"batch_expired"}
    if counts["completed"]:
        assert len(read_lines(simulator, done["output_file_id"])) == counts["completed"]


def test_listing_is_newest_first_and_pages_with_after(simulator):
    simulator.simulator.populate(historical=250)
    pages, after = [], None
    while True:
        params = {"limit": 100, **({"after": after} if after else {})}
        page = call(simulator, "GET", "/batches", params=params).json()
        pages.append(page)
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert [len(p["data"]) for p in pages] == [100, 100, 50]
    created = [b["created_at"] for p in pages for b in p["data"]]
    assert created == sorted(created, reverse=True)
    assert pages[0]["first_id"] == pages[0]["data"][0]["id"]


def test_pre_created_batches_cover_every_state(sim_clock):
    sim = Simulator(seed=3, speed=60, clock=sim_clock)
    sim.populate(historical=200, active=12)
    statuses = [b["status"] for b in sim.truth()]
    assert set(statuses) >= {"completed", "failed", "expired", "cancelled",
                             "validating", "in_progress", "finalizing", "cancelling"}
    assert sum(s in ("validating", "in_progress", "finalizing", "cancelling") for s in statuses) == 12


def test_speed_shortens_durations_but_timestamps_stay_wall_clock(sim_clock):
    sim = Simulator(seed=3, speed=60, clock=sim_clock)
    sim.populate(active=1)
    with SimulatorServer(sim, api_key=None) as server:
        batch = requests.post(server.url + "/files", files={"file": ("a.jsonl", jsonl(chat_lines(2)))},
                              data={"purpose": "batch"}, timeout=5).json()
        created = requests.post(server.url + "/batches", json={
            "input_file_id": batch["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            timeout=5).json()
    assert abs(created["created_at"] - time.time()) < 5
    assert created["expires_at"] - created["created_at"] == 86400 // 60


def test_a_server_stops_at_once_even_one_never_started():
    started = time.monotonic()
    with SimulatorServer(Simulator(clock=Clock(frozen=True))):
        pass
    assert time.monotonic() - started < 0.25  # not a whole poll of serve_forever (0.5 s) per test

    stopper = threading.Thread(target=SimulatorServer().stop, daemon=True)
    stopper.start()
    stopper.join(5)
    assert not stopper.is_alive()


def test_the_same_seed_gives_the_same_world():
    first, second = Simulator(seed=11, clock=Clock(start=1.8e9, frozen=True)), Simulator(
        seed=11, clock=Clock(start=1.8e9, frozen=True))
    first.populate(historical=30, active=5)
    second.populate(historical=30, active=5)
    assert first.truth() == second.truth()


@pytest.mark.parametrize("request_args,param", [
    (("GET", "/batches", {"params": {"limit": 0}}), "limit"),
    (("GET", "/batches", {"params": {"limit": 101}}), "limit"),
    (("POST", "/batches", {"json": {"input_file_id": "f", "endpoint": "/v1/nope", "completion_window": "24h"}}),
     "endpoint"),
    (("POST", "/batches", {"json": {"input_file_id": "f", "endpoint": "/v1/embeddings", "completion_window": "1h"}}),
     "completion_window"),
    (("POST", "/batches", {"json": {"input_file_id": "f", "endpoint": "/v1/embeddings", "completion_window": "24h",
                                    "metadata": {f"k{i}": "v" for i in range(17)}}}), "metadata"),
    (("POST", "/batches", {"json": {"input_file_id": "f", "endpoint": "/v1/embeddings", "completion_window": "24h",
                                    "metadata": {"k" * 65: "v"}}}), "metadata"),
    (("POST", "/batches", {"json": {"input_file_id": "f", "endpoint": "/v1/embeddings", "completion_window": "24h",
                                    "metadata": {"k": "v" * 513}}}), "metadata"),
    (("POST", "/batches", {"json": {"input_file_id": "f", "endpoint": "/v1/embeddings", "completion_window": "24h",
                                    "output_expires_after": {"anchor": "created_at", "seconds": 60}}}),
     "output_expires_after.seconds"),
])
def test_bad_parameters_get_400_naming_the_param(simulator, request_args, param):
    method, path, kwargs = request_args
    response = call(simulator, method, path, **kwargs)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_wrong_key_gets_401_and_unknown_ids_404(simulator):
    wrong = call(simulator, "GET", "/batches", headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    missing = requests.get(simulator.url + "/batches", timeout=5)
    assert missing.status_code == 401
    assert call(simulator, "GET", "/batches/batch_missing").status_code == 404
    assert call(simulator, "POST", "/batches/batch_missing/cancel").status_code == 404
    assert call(simulator, "GET", "/files/file-missing/content").status_code == 404


def test_every_response_has_a_request_id_and_rate_limit_headers(simulator):
    responses = [call(simulator, "GET", "/batches") for _ in range(3)]
    ids = {r.headers["x-request-id"] for r in responses}
    assert len(ids) == 3
    for name in ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                 "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"):
        assert name in responses[0].headers


def test_fault_injection_rate_is_within_tolerance_and_deterministic(simulator):
    def run():
        simulator.set_faults(rate=0.3, kinds=["429", "500", "503"], seed=5)
        return [call(simulator, "GET", "/batches").status_code for _ in range(300)]

    first, second = run(), run()
    assert first == second
    share = sum(code != 200 for code in first) / len(first)
    assert 0.23 <= share <= 0.37
    rate_limited = next(r for r in [call(simulator, "GET", "/batches") for _ in range(60)] if r.status_code == 429)
    assert int(rate_limited.headers["Retry-After"]) >= 1


def test_each_fault_kind_misbehaves_as_named(simulator):
    simulator.set_faults(rate=1.0, kinds=["drop"])
    with pytest.raises(requests.ConnectionError):
        call(simulator, "GET", "/batches")
    simulator.set_faults(kinds=["truncated"])
    truncated = call(simulator, "GET", "/batches")
    with pytest.raises(ValueError):
        truncated.json()
    simulator.set_faults(kinds=["timeout"], slow_seconds=1.0)
    with pytest.raises(requests.ReadTimeout):
        requests.get(simulator.url + "/batches", headers={"Authorization": "Bearer x"}, timeout=0.3)
    simulator.set_faults(rate=0)
    stats = requests.get(simulator.url.replace("/v1", "/_sim/stats"), timeout=5).json()  # never faulted
    assert stats["faults"] == {"drop": 1, "truncated": 1, "timeout": 1}


def test_a_drip_fault_on_file_content_drips_the_real_bytes(simulator):
    data = b'{"custom_id": "a"}\n{"custom_id": "b"}\n'
    file_id = upload(simulator, data).json()["id"]
    simulator.set_faults(next=1, kinds=["drip"], slow_seconds=0.02)
    started = time.monotonic()
    with call(simulator, "GET", f"/files/{file_id}/content", stream=True) as response:
        assert int(response.headers["Content-Length"]) == len(data)
        first = response.raw.read1(1024)
        body = first + response.raw.read()
    assert body == data and len(first) < len(data)
    assert time.monotonic() - started >= 0.02 * (len(data) - 1)
    assert simulator.stats()["faults"] == {"drip": 1}


def test_control_endpoints(simulator):
    base = simulator.url.replace("/v1", "")
    call(simulator, "GET", "/batches")
    stats = requests.get(base + "/_sim/stats", timeout=5).json()
    assert stats["requests"] == 1 and stats["by_endpoint"] == {"GET /v1/batches": 1}
    assert stats["by_status"] == {"200": 1}
    requests.post(base + "/_sim/reset-stats", timeout=5)
    assert requests.get(base + "/_sim/stats", timeout=5).json()["requests"] == 0
    injected = requests.post(base + "/_sim/batches", json={"status": "completed", "lines": 200, "fail_share": 0.5,
                                                           "created_at": time.time() - 3600}, timeout=5).json()
    assert injected["status"] == "completed" and injected["request_counts"]["total"] == 200
    truth = requests.get(base + "/_sim/batches", timeout=5).json()["data"]
    assert [b["id"] for b in truth] == [injected["id"]]
    before = simulator.simulator.clock.now()
    requests.post(base + "/_sim/advance", params={"seconds": 90}, timeout=5)
    assert simulator.simulator.clock.now() - before == pytest.approx(90)
    assert requests.post(base + "/_sim/faults", json={"rate": 2}, timeout=5).status_code == 400
    assert requests.post(base + "/_sim/batches", json={"status": "paused"}, timeout=5).status_code == 400


def test_an_injected_output_size_is_generated_lazily_and_streamed(simulator):
    batch = simulator.inject_batch("completed", lines=2000, fail_share=0, output_bytes=4_000_000,
                                   created_at=simulator.simulator.clock.now() - 7200)
    meta = call(simulator, "GET", f"/files/{batch['output_file_id']}").json()
    assert 3_600_000 <= meta["bytes"] <= 4_400_000
    with call(simulator, "GET", f"/files/{batch['output_file_id']}/content", stream=True) as response:
        received = sum(len(chunk) for chunk in response.iter_content(65536))
    assert received == meta["bytes"]


def test_the_command_line_serves_the_api():
    process = subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0", "--batches", "5", "--active", "2",
                                "--speed", "60", "--api-key", "sk-cli"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        url = banner.split(" at ")[1].split()[0]
        page = requests.get(url + "/batches", headers={"Authorization": "Bearer sk-cli"}, timeout=5).json()
        assert len(page["data"]) == 7
    finally:
        process.terminate()
        process.wait(10)
    help_text = subprocess.run([sys.executable, "-m", "simulator", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=30).stdout
    for flag in ("--batches", "--active", "--speed", "--seed", "--fault-rate", "--latency-ms", "--api-key"):
        assert flag in help_text


def _raw_lines(sim, file_id: str) -> list[bytes]:
    response = call(sim, "GET", f"/files/{file_id}/content")
    assert response.status_code == 200, response.text
    return [line for line in response.content.split(b"\n") if line.strip()]


def _readable(line: bytes) -> dict | None:
    """The line as a reader following CONTRACT §7.2 may use it, or None."""
    try:
        item = json.loads(line.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
        return None
    return item if isinstance(item.get("response"), dict) or isinstance(item.get("error"), dict) else None


def _inject(sim, **spec) -> dict:
    response = control(sim, "POST", "/_sim/batches", json=spec)
    assert response.status_code == 200, response.text
    return response.json()


def test_injected_batches_have_every_outcome_shape(simulator):
    ago = simulator.simulator.clock.now() - 3 * 86400
    completed = _inject(simulator, status="completed", lines=400, fail_share=0.5, created_at=ago)
    expired = _inject(simulator, status="expired", lines=300, fail_share=0.1, created_at=ago)
    cancelled = _inject(simulator, status="cancelled", lines=300, fail_share=0.1, created_at=ago)
    successes = read_lines(simulator, completed["output_file_id"])
    assert successes and {line["response"]["status_code"] for line in successes} == {200}
    failures = read_lines(simulator, completed["error_file_id"])
    statuses = {line["response"]["status_code"] for line in failures}
    assert any(400 <= s < 500 for s in statuses) and any(500 <= s < 600 for s in statuses)
    assert all(line["error"] is None and line["response"]["body"]["error"]["code"] for line in failures)
    for batch, code in ((expired, "batch_expired"), (cancelled, "batch_cancelled")):
        unrun = [line for line in read_lines(simulator, batch["error_file_id"]) if line["response"] is None]
        counts = batch["request_counts"]
        assert len(unrun) == counts["total"] - counts["completed"] - counts["failed"] > 0
        assert {line["error"]["code"] for line in unrun} == {code}


def test_an_injected_batch_can_leave_requests_with_no_result_line(simulator):
    batch = _inject(simulator, status="completed", lines=120, fail_share=0.2, not_run=7,
                    created_at=simulator.simulator.clock.now() - 7200)
    named = [line["custom_id"] for kind in ("output_file_id", "error_file_id")
             for line in read_lines(simulator, batch[kind])]
    inputs = [line["custom_id"] for line in read_lines(simulator, batch["input_file_id"])]
    assert len(inputs) == 120 and len(named) == len(set(named)) == 113 and set(named) < set(inputs)
    counts = batch["request_counts"]
    assert counts["total"] == 120 and counts["completed"] + counts["failed"] == 113


def test_unrun_lines_of_an_expired_batch_spare_the_not_run_requests(simulator):
    batch = _inject(simulator, status="expired", lines=200, fail_share=0, not_run=20,
                    created_at=simulator.simulator.clock.now() - 3 * 86400)
    lines = read_lines(simulator, batch["error_file_id"])
    if batch["output_file_id"]:
        lines += read_lines(simulator, batch["output_file_id"])
    assert len(lines) == len({line["custom_id"] for line in lines}) == 180


@pytest.mark.parametrize("fail_share, broken_file", [(0.2, "output_file_id"), (1.0, "error_file_id")])
def test_an_injected_batch_can_carry_malformed_lines(simulator, fail_share, broken_file):
    batch = _inject(simulator, status="completed", lines=100, fail_share=fail_share, malformed=16,
                    created_at=simulator.simulator.clock.now() - 7200)
    lines = _raw_lines(simulator, batch[broken_file])
    broken = [line for line in lines if _readable(line) is None]
    assert sorted(broken) == sorted(MALFORMED_LINES * 2)
    assert lines[0] in MALFORMED_LINES and lines[-1] not in MALFORMED_LINES  # spread among the good ones
    good = [line for kind in ("output_file_id", "error_file_id") if batch[kind]
            for line in _raw_lines(simulator, batch[kind]) if _readable(line) is not None]
    assert len(good) == 100


def test_an_injected_batch_without_requests_still_gets_its_malformed_lines(simulator):
    batch = _inject(simulator, status="completed", lines=10, not_run=10, malformed=3,
                    created_at=simulator.simulator.clock.now() - 7200)
    assert batch["output_file_id"] is None
    assert _raw_lines(simulator, batch["error_file_id"]) == list(MALFORMED_LINES[:3])


def test_injected_result_files_answer_404_after_output_expires_after(simulator):
    now = simulator.simulator.clock.now()
    batch = _inject(simulator, status="completed", lines=50, fail_share=0.3, created_at=now - 600,
                    output_expires_after=3600)
    for kind in ("output_file_id", "error_file_id"):
        meta = call(simulator, "GET", f"/files/{batch[kind]}").json()
        assert meta["expires_at"] - meta["created_at"] == 3600
        assert call(simulator, "GET", f"/files/{batch[kind]}/content").status_code == 200
    simulator.advance(3600)
    for kind in ("output_file_id", "error_file_id"):
        assert call(simulator, "GET", f"/files/{batch[kind]}/content").status_code == 404
        assert call(simulator, "GET", f"/files/{batch[kind]}").status_code == 404
    listed = {f["id"] for f in call(simulator, "GET", "/files", params={"purpose": "batch_output"}).json()["data"]}
    assert not listed & {batch["output_file_id"], batch["error_file_id"]}
    assert call(simulator, "GET", f"/files/{batch['input_file_id']}/content").status_code == 200
    gone = _inject(simulator, status="completed", lines=5, fail_share=0, created_at=now - 3 * 86400,
                   output_expires_after={"anchor": "created_at", "seconds": 3600})
    assert call(simulator, "GET", f"/files/{gone['output_file_id']}/content").status_code == 404


@pytest.mark.parametrize("spec", [{"not_run": 11}, {"not_run": -1}, {"not_run": "3"}, {"malformed": True},
                                  {"malformed": 50_001}, {"output_expires_after": "soon"},
                                  {"output_expires_after": {"anchor": "created_at", "seconds": 60}}])
def test_bad_injection_options_get_400(simulator, spec):
    response = control(simulator, "POST", "/_sim/batches", json={"status": "completed", "lines": 10, **spec})
    assert response.status_code == 400 and response.json()["error"]["message"]


def test_a_50000_line_batch_can_have_a_200_mb_output(simulator):
    batch = _inject(simulator, status="completed", lines=50_000, fail_share=0.03, output_bytes=200 * 1024 * 1024,
                    created_at=simulator.simulator.clock.now() - 7200)
    assert batch["request_counts"]["total"] == 50_000
    meta = call(simulator, "GET", f"/files/{batch['output_file_id']}").json()
    assert 190 * 1024 * 1024 <= meta["bytes"] <= 210 * 1024 * 1024
