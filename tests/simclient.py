"""Tiny raw-HTTP helpers for talking to the simulator in tests (requests, no SDK, no client of ours)."""

import json

import requests

from tests.conftest import SIM_KEY

AUTH = {"Authorization": f"Bearer {SIM_KEY}"}


def call(sim, method: str, path: str, **kwargs) -> requests.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return requests.request(method, sim.url + path, headers=headers, timeout=10, **kwargs)


def jsonl(items) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def chat_lines(n: int, model: str = "gpt-4o-mini", endpoint: str = "/v1/chat/completions") -> list[dict]:
    return [{"custom_id": f"task-{i}", "method": "POST", "url": endpoint,
             "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]}}
            for i in range(n)]


def upload(sim, data: bytes, filename: str = "input.jsonl", purpose: str = "batch") -> requests.Response:
    return call(sim, "POST", "/files", files={"file": (filename, data)}, data={"purpose": purpose})


def create_batch(sim, lines, **extra) -> dict:
    file_id = upload(sim, jsonl(lines)).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
    response = call(sim, "POST", "/batches", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def read_lines(sim, file_id: str) -> list[dict]:
    response = call(sim, "GET", f"/files/{file_id}/content")
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def control(sim, method: str, path: str, **kwargs) -> requests.Response:
    """The simulator's /_sim/* control endpoints (no auth, never faulted)."""
    return requests.request(method, sim.url.removesuffix("/v1") + path, timeout=10, **kwargs)
