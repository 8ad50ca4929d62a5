"""Webhooks benchmark: how long a batch's end (completed, failed, expired, cancelled) takes to reach the database
and an open list page, with OpenAI webhooks on, beside the same with polling only.

    python bench/webhooks.py [--changes 20] [--speed 100] [--database-url postgres://...]

Runs two simulators side by side, each the API of one connection: "webhooks" sends signed batch.* events to
the receiver, "polling" sends none. Both run under `make run`'s defaults (a Celery worker with beat, the web
server, SYNC_* and LIVE_POLL_SECONDS from settings) and a headless Chromium on the list page. The script puts
`--changes` running batches into each simulator, due to finish a second apart. The moment each batch ends at
the API is read from its simulator ten times a second, the moment it is stored from the database ten times a
second, the moment it shows from the page's DOM ten times a second.
Targets with webhooks: p95 < 2 s to the database, < 2 s + LIVE_POLL_SECONDS to the page.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import threading
import time

import requests
from _setup import ROOT, free_port, run_on_private_database, stop_processes, table, wait_http
from freshness import CHROMIUM_ARGS, OBSERVER

SECRET = "whsec_YmVuY2gtb25seS13ZWJob29rLXNlY3JldC0wMDAwMDA="
TERMINAL = ("completed", "failed", "expired", "cancelled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=20, help="batches that finish, per connection (default 20)")
    parser.add_argument("--speed", type=float, default=100, help="simulator speed: finalizing takes 30-180 s / speed")
    parser.add_argument("--max-minutes", type=float, default=5, help="give up after this long")
    run_on_private_database(parser, "webhooks", run)


def run(args) -> None:
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.db import connection as db
    from playwright.sync_api import sync_playwright

    from batches.models import Batch, Connection

    workdir = os.path.dirname(db.settings_dict["NAME"]) if db.vendor == "sqlite" else str(ROOT / "var")
    web_port = free_port()
    sims = {"webhooks": f"http://127.0.0.1:{free_port()}", "polling": f"http://127.0.0.1:{free_port()}"}
    env = {**os.environ, "DEBUG": "1", "CELERY_BROKER_URL": f"sqla+sqlite:///{workdir}/broker-{web_port}.sqlite3"}
    for name in ("SYNC_ACTIVE_INTERVAL", "SYNC_TRANSITION_INTERVAL", "SYNC_TICK_SECONDS", "LIVE_POLL_SECONDS"):
        env.pop(name, None)  # make run's defaults
    slug_of = {}
    for slug, url in sims.items():
        conn = Connection(name=slug.title(), slug=slug, base_url=url + "/v1")
        conn.set_api_key("sk-sim")
        if slug == "webhooks":
            conn.set_webhook_secret(SECRET)
        conn.save()
        slug_of[conn.pk] = slug
    user = User.objects.create_user("watcher", password="watch-it-1234")
    user.groups.add(Group.objects.get(name="Viewer"))

    # Seeds apart, so that the two simulators' batch ids are too.
    processes = [subprocess.Popen([sys.executable, "-m", "simulator", "--port", url.rsplit(":", 1)[1], "--speed",
                                   str(args.speed), "--api-key", "sk-sim", "--seed", str(seed)], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL) for seed, url in enumerate(sims.values(), start=1)]
    processes += [
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "dashboard", "worker", "-B", "--concurrency", "2",
                          "--loglevel", "WARNING", "--schedule", f"{workdir}/beat-{web_port}"],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{web_port}"],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    truth: dict[str, tuple[str, float]] = {}  # "id status" -> (connection, first moment the API showed it)
    stored: dict[str, float] = {}  # "id status" -> first moment the database held it
    stop = threading.Event()

    def watch_apis():
        while not stop.is_set():
            for slug, url in sims.items():
                try:
                    batches = requests.get(url + "/_sim/batches", timeout=5).json()["data"]
                except requests.RequestException:
                    continue
                now = time.time()
                for b in batches:
                    if b["status"] in TERMINAL:
                        truth.setdefault(f"{b['id']} {b['status']}", (slug, now))
            time.sleep(0.1)

    def watch_database():
        while not stop.is_set():
            now = time.time()
            for batch_id, status in Batch.objects.filter(status__in=TERMINAL).values_list("batch_id", "status"):
                stored.setdefault(f"{batch_id} {status}", now)
            time.sleep(0.1)

    try:
        for url in sims.values():
            wait_http(url + "/_sim/stats")
        wait_http(f"http://127.0.0.1:{web_port}/healthz")
        requests.post(sims["webhooks"] + "/_sim/webhooks", timeout=5, json={
            "url": f"http://127.0.0.1:{web_port}/webhooks/openai/webhooks/", "secret": SECRET}).raise_for_status()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{web_port}/login/")
            page.fill("input[name=username]", "watcher")
            page.fill("input[name=password]", "watch-it-1234")
            page.click("button[type=submit]")
            page.wait_for_url(f"http://127.0.0.1:{web_port}/")
            page.evaluate(OBSERVER)
            threading.Thread(target=watch_apis, daemon=True).start()
            threading.Thread(target=watch_database, daemon=True).start()
            for i in range(args.changes):  # each finishes (1 - u) of its processing time from now, then finalizes
                for url in sims.values():
                    requests.post(url + "/_sim/batches", timeout=5, json={
                        "status": "in_progress", "lines": 10, "processing_seconds": 4 + i}).raise_for_status()
            deadline = time.monotonic() + args.max_minutes * 60
            while time.monotonic() < deadline:
                time.sleep(1)
                seen = page.evaluate("() => window.__seen")
                if len(truth) >= 2 * args.changes and all(key in seen for key in truth):
                    break
            seen = page.evaluate("() => window.__seen")
            browser.close()
    finally:
        stop.set()
        stop_processes(processes)
    rows = []
    for slug in sims:
        keys = [key for key, (where, _) in truth.items() if where == slug]
        for label, moments in (("database", stored), ("open page", seen)):
            delays = sorted(max(moments[key] - truth[key][1], 0.0) for key in keys if key in moments)
            if delays:
                pick = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]  # noqa: E731
                rows.append((slug, label, f"{len(delays)}/{len(keys)}", f"{pick(0.5):.1f}", f"{pick(0.95):.1f}",
                             f"{delays[-1]:.1f}"))
            else:
                rows.append((slug, label, f"0/{len(keys)}", "", "", ""))
    print(f"Webhooks benchmark: {args.changes} batches finishing per connection (simulators at {args.speed:g}x), "
          f"make run's defaults (LIVE_POLL_SECONDS {settings.LIVE_POLL_SECONDS}), embedded broker; database "
          f"{db.vendor}; {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(table(rows, ("connection", "seen in", "ends", "p50 s", "p95 s", "max s")))
    print(f"Targets with webhooks: database p95 < 2 s, open page p95 < {2 + settings.LIVE_POLL_SECONDS} s")


if __name__ == "__main__":
    main()
