"""Download benchmark: a large output file streamed through the dashboard vs straight from the API.

    python bench/download.py [--megabytes 200]

Runs the simulator and the dashboard (gunicorn, one gthread worker) as separate processes, on a private
SQLite database. Reports throughput of both paths and the dashboard worker's peak RSS growth.
Targets: RSS growth < 30 MB; throughput through the dashboard >= 50% of direct.
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import requests
from _setup import ROOT, free_port, setup_django, stop_processes, table, wait_http


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def _fetch(url: str, **kwargs) -> tuple[int, float]:
    started, size = time.monotonic(), 0
    with requests.get(url, stream=True, timeout=60, **kwargs) as response:
        response.raise_for_status()
        for chunk in response.iter_content(1 << 20):
            size += len(chunk)
    return size, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=200)
    args = parser.parse_args()
    cleanup = setup_django(None, "download")
    processes = []
    try:
        processes = run(args)
    finally:
        stop_processes(processes)
        cleanup()


def run(args) -> list:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    from batches.models import Connection
    from batches.store import store_batch

    sim_port, web_port = free_port(), free_port()
    simulator = subprocess.Popen([sys.executable, "-m", "simulator", "--port", str(sim_port), "--api-key", "sk-bench"],
                                 cwd=ROOT, stdout=subprocess.DEVNULL)
    processes = [simulator]
    sim_url = f"http://127.0.0.1:{sim_port}"
    wait_http(sim_url + "/_sim/stats")
    lines = max(100, min(20000, int(args.megabytes * 1048576 / 2000)))  # ~2 KB lines at least, as real output
    payload = requests.post(sim_url + "/_sim/batches", timeout=60, json={
        "status": "completed", "lines": lines, "fail_share": 0, "created_at": time.time() - 7200,
        "output_bytes": int(args.megabytes * 1024 * 1024)}).json()
    file_id = payload["output_file_id"]
    headers = {"Authorization": "Bearer sk-bench"}
    size_meta = requests.get(f"{sim_url}/v1/files/{file_id}", headers=headers, timeout=120).json()["bytes"]

    conn = Connection(name="Bench", slug="bench", base_url=sim_url + "/v1")
    conn.set_api_key("sk-bench")
    conn.save()
    store_batch(conn, payload)
    admin = User.objects.create_superuser("bench", password="x")
    client = Client()
    client.force_login(admin)
    cookies = {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}

    env = {**os.environ, "ALLOWED_HOSTS": "127.0.0.1"}
    web = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "dashboard.wsgi", "--bind",
                            f"127.0.0.1:{web_port}", "--workers", "1", "--worker-class", "gthread", "--threads", "2",
                            "--timeout", "120", "--log-level", "warning"], cwd=ROOT, env=env)
    processes.append(web)
    web_url = f"http://127.0.0.1:{web_port}"
    wait_http(web_url + "/healthz")
    worker = _children(web.pid)[0]

    direct_bytes, direct_s = _fetch(f"{sim_url}/v1/files/{file_id}/content", headers=headers)
    before = _kib(worker, "VmRSS")
    via_bytes, via_s = _fetch(f"{web_url}/batches/bench/{payload['id']}/files/output/", cookies=cookies)
    peak = _kib(worker, "VmHWM")
    after = _kib(worker, "VmRSS")
    assert direct_bytes == via_bytes == size_meta, (direct_bytes, via_bytes, size_meta)

    mb = direct_bytes / 1024 / 1024
    rows = [
        ("straight from the simulator (requests)", f"{mb:.1f}", f"{direct_s:.2f}", f"{mb / direct_s:.1f}", "", ""),
        ("through the dashboard (gunicorn gthread)", f"{via_bytes / 1048576:.1f}", f"{via_s:.2f}",
         f"{mb / via_s:.1f}", f"{(peak - before) / 1024:.1f}", f"{(after - before) / 1024:.1f}"),
    ]
    print(f"Download benchmark: one {mb:.0f} MB output file ({lines:,} lines); web server gunicorn 1 gthread "
          f"worker; {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(table(rows, ("path", "MB", "seconds", "MB/s", "peak RSS growth MB", "RSS after MB")))
    print(f"throughput through the dashboard: {100 * direct_s / via_s:.0f}% of direct")
    return processes


if __name__ == "__main__":
    main()
