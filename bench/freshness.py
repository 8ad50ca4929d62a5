"""Freshness benchmark: how long a change at the API takes to show on an open list page, with `make run`'s
defaults and world.

    python bench/freshness.py [--changes 20] [--speed 20] [--database-url postgres://...]

Runs what `make run` runs — the simulator (300 historical and 12 active batches at 20x, a new batch every
45 s), a Celery worker with beat, and the web server — plus a headless Chromium on the list page. A script
also submits a batch through the API every few seconds, as teams do. The true moment of each change is
read from the simulator ten times a second; the moment it shows is read from the page's DOM ten times a
second. Prints p50 / p95 / max of the delay per cadence: transitional (a batch leaves validating,
finalizing or cancelling), active (leaves in_progress) and new batch (appears). Target: p95 <= 10 s.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time

import requests
from _setup import ROOT, free_port, run_on_private_database, stop_processes, table, wait_http

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TRANSITIONAL = ("validating", "finalizing", "cancelling")
# Collects, in the page, when each row's status text first took each value (batch id from the row's link).
OBSERVER = """
() => {
  window.__seen = window.__seen || {};
  const look = () => {
    for (const row of document.querySelectorAll('table.batches tbody tr')) {
      const link = row.querySelector('a[href*="/batches/"]'), badge = row.querySelector('.badge');
      if (!link || !badge) continue;
      const id = link.getAttribute('href').split('/').filter(Boolean).pop();
      const key = id + ' ' + badge.textContent.trim().split(' ')[0];
      if (!(key in window.__seen)) window.__seen[key] = Date.now() / 1000;
    }
  };
  look();
  setInterval(look, 100);
}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=20, help="changes to observe per cadence (default 20)")
    parser.add_argument("--speed", type=float, default=20, help="simulator speed (make run: 20)")
    parser.add_argument("--submit-every", type=float, default=6.0, help="seconds between scripted submissions")
    parser.add_argument("--max-minutes", type=float, default=12, help="give up after this long")
    run_on_private_database(parser, "freshness", run)


def run(args) -> None:
    from django.contrib.auth.models import Group, User
    from django.db import connection as db

    from batches.models import Connection
    from playwright.sync_api import sync_playwright

    workdir = os.path.dirname(db.settings_dict["NAME"]) if db.vendor == "sqlite" else str(ROOT / "var")
    sim_port, web_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    env = {**os.environ, "DEBUG": "1", "CELERY_BROKER_URL": f"sqla+sqlite:///{workdir}/broker-{web_port}.sqlite3"}
    for name in ("SYNC_ACTIVE_INTERVAL", "SYNC_TRANSITION_INTERVAL", "SYNC_TICK_SECONDS", "LIVE_POLL_SECONDS"):
        env.pop(name, None)  # make run's defaults
    conn = Connection(name="Simulator", slug="simulator", base_url=sim_url + "/v1")
    conn.set_api_key("sk-sim")
    conn.save()
    user = User.objects.create_user("watcher", password="watch-it-1234")
    user.groups.add(Group.objects.get(name="Viewer"))

    processes = [
        subprocess.Popen([sys.executable, "-m", "simulator", "--port", str(sim_port), "--batches", "300",
                          "--active", "12", "--speed", str(args.speed), "--arrival-interval", "45",
                          "--api-key", "sk-sim"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "dashboard", "worker", "-B", "--concurrency", "2",
                          "--loglevel", "WARNING", "--schedule", f"{workdir}/beat-{web_port}"],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{web_port}"],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    truth: dict[str, float] = {}  # "id status" -> first moment the API showed it
    previous: dict[str, str] = {}  # "id status" -> the status it left
    stop = threading.Event()

    def watch_api():
        last: dict[str, str] = {}
        while not stop.is_set():
            try:
                batches = requests.get(sim_url + "/_sim/batches", timeout=5).json()["data"]
            except requests.RequestException:
                time.sleep(0.1)
                continue
            now = time.time()
            for b in batches:
                key = f"{b['id']} {b['status'].split('_')[0]}"
                if key not in truth:
                    truth[key] = now
                    previous[key] = last.get(b["id"], "new")
                last[b["id"]] = b["status"]
            time.sleep(0.1)

    def submit_batches():
        headers = {"Authorization": "Bearer sk-sim"}
        line = {"custom_id": "t-0", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}}
        while not stop.wait(args.submit_every):
            data = "".join(json.dumps({**line, "custom_id": f"t-{i}"}) + "\n" for i in range(50)).encode()
            try:
                file_id = requests.post(sim_url + "/v1/files", headers=headers, files={"file": ("in.jsonl", data)},
                                        data={"purpose": "batch"}, timeout=5).json()["id"]
                requests.post(sim_url + "/v1/batches", headers=headers, timeout=5, json={
                    "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
            except requests.RequestException:
                pass

    try:
        wait_http(sim_url + "/_sim/stats")
        wait_http(f"http://127.0.0.1:{web_port}/healthz")
        # What is there at the start is history: only changes from now on count.
        for b in requests.get(sim_url + "/_sim/batches", timeout=5).json()["data"]:
            truth[f"{b['id']} {b['status'].split('_')[0]}"] = 0.0
        threading.Thread(target=watch_api, daemon=True).start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{web_port}/login/")
            page.fill("input[name=username]", "watcher")
            page.fill("input[name=password]", "watch-it-1234")
            page.click("button[type=submit]")
            page.wait_for_url(f"http://127.0.0.1:{web_port}/")
            time.sleep(3)  # the first import lands
            page.evaluate(OBSERVER)
            threading.Thread(target=submit_batches, daemon=True).start()
            deadline = time.monotonic() + args.max_minutes * 60
            while time.monotonic() < deadline:
                time.sleep(2)
                delays = _delays(truth, previous, page.evaluate("() => window.__seen"))
                if all(len(v) >= args.changes for v in delays.values()):
                    break
            browser.close()
    finally:
        stop.set()
        stop_processes(processes)
    rows = []
    for cadence, values in delays.items():
        values.sort()
        if values:
            pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
            rows.append((cadence, len(values), f"{pick(0.5):.1f}", f"{pick(0.95):.1f}", f"{values[-1]:.1f}"))
        else:
            rows.append((cadence, 0, "", "", ""))
    print(f"Freshness benchmark: make run's world (simulator at {args.speed:g}x, 300 + 12 batches, a batch submitted "
          f"every {args.submit_every:g} s), defaults SYNC_ACTIVE_INTERVAL / SYNC_TRANSITION_INTERVAL / "
          f"SYNC_TICK_SECONDS / LIVE_POLL_SECONDS from settings, embedded broker; database {db.vendor}; "
          f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(table(rows, ("cadence", "changes", "p50 s", "p95 s", "max s")))


def _delays(truth: dict, previous: dict, seen: dict) -> dict[str, list[float]]:
    delays = {"transitional": [], "active": [], "new batch": []}
    for key, shown in seen.items():
        happened = truth.get(key)
        if not happened:  # history, or a status the page shows that the API poll never caught
            continue
        left = previous.get(key, "new")
        cadence = "new batch" if left == "new" else "transitional" if left in TRANSITIONAL else "active"
        delays[cadence].append(max(shown - happened, 0.0))
    return delays


if __name__ == "__main__":
    main()
