"""Scale-out benchmark: many connections synced by several workers through a real broker.

    python bench/scale_out.py [--connections 20] [--batches 10000] [--active 20] [--workers 4] [--minutes 3]
                              [--database-url postgres://...] [--broker-url redis://127.0.0.1:6379/14]

Each connection is its own simulated account (an in-process simulator server at 60x, so its active batches
move). The stored history is loaded up front, as after a first import; then `--workers` Celery worker
processes and one beat run with the production settings for `--minutes`. Prints cycles and HTTP requests
per minute, and the delay between a change at the API and the change in the database (p50 / p95 / max),
read by polling both ten times a second.
"""

import argparse
import os
import platform
import subprocess
import sys
import threading
import time

from _setup import ROOT, run_on_private_database, stop_processes, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--batches", type=int, default=10000, help="historical batches per connection")
    parser.add_argument("--active", type=int, default=20, help="active batches per connection")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--broker-url", default=os.environ.get("CELERY_BROKER_URL", ""),
                        help="default: a private file broker")
    run_on_private_database(parser, "scaleout", run)


def run(args) -> None:
    from django.db import connection as db
    from django.utils import timezone

    from batches.models import ACTIVE_STATUSES, Batch, Connection
    from batches.payload import batch_fields
    from batches.store import store_new_batches
    from simulator import Clock, Simulator, SimulatorServer

    workdir = os.path.dirname(db.settings_dict["NAME"]) if db.vendor == "sqlite" else str(ROOT / "var")
    broker = args.broker_url or f"sqla+sqlite:///{workdir}/broker-scaleout.sqlite3"
    servers, started = [], time.monotonic()
    for n in range(args.connections):
        simulator = Simulator(seed=100 + n, speed=60, clock=Clock())
        simulator.populate(historical=args.batches, active=args.active)
        server = SimulatorServer(simulator, api_key="sk-bench").start()
        servers.append(server)
        conn = Connection(name=f"Account {n}", slug=f"account-{n}", base_url=server.url, full_walk_due=False,
                          last_full_walk_at=timezone.now(), list_order="newest_first")
        conn.set_api_key("sk-bench")
        conn.save()
        fields = [batch_fields(b) for b in simulator.truth()]
        for i in range(0, len(fields), 2000):
            store_new_batches(conn, fields[i:i + 2000], observed_at=timezone.now())
    loaded_s = time.monotonic() - started
    by_slug = {c.slug: c.pk for c in Connection.objects.all()}
    env = {**os.environ, "CELERY_BROKER_URL": broker}
    processes = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "dashboard", "beat", "--loglevel", "WARNING",
                                   "--schedule", f"{workdir}/beat-scaleout"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    processes += [subprocess.Popen([sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--concurrency", "1",
                                    "--hostname", f"bench{i}@%h", "--loglevel", "WARNING"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for i in range(args.workers)]
    truth_seen: dict[tuple, float] = {}
    stored_seen: dict[tuple, float] = {}
    stop = threading.Event()

    # Only the batches active at the start can change (the accounts get no new ones), so only they are watched:
    # reading every batch ten times a second would hold each simulator's lock and starve its API.
    watched = {}  # (connection pk, batch id) -> server
    for n, server in enumerate(servers):  # the starting state is not a change
        for b in server.truth():
            truth_seen[(by_slug[f"account-{n}"], b["id"], b["status"])] = 0.0
            if b["status"] in ACTIVE_STATUSES:
                watched[by_slug[f"account-{n}"], b["id"]] = server

    def watch_truth():
        while not stop.is_set():
            now = time.time()
            for (connection_pk, batch_id), server in watched.items():
                status = server.simulator.retrieve_batch(batch_id)["status"]
                truth_seen.setdefault((connection_pk, batch_id, status), now)
            time.sleep(0.1)

    for server in servers:
        server.reset_stats()
    threading.Thread(target=watch_truth, daemon=True).start()
    run_started = time.monotonic()
    try:
        while time.monotonic() - run_started < args.minutes * 60:
            now = time.time()
            for key in Batch.objects.filter(batch_id__in={batch_id for _, batch_id in watched}).values_list(
                    "connection_id", "batch_id", "status"):
                stored_seen.setdefault(key, now)
            time.sleep(0.1)
    finally:
        stop.set()
        stop_processes(processes)
    minutes = (time.monotonic() - run_started) / 60
    stats = [server.stats() for server in servers]
    for server in servers:
        server.stop()
    cycles = sum(s["by_endpoint"].get("GET /v1/batches", 0) for s in stats)
    requests_total = sum(s["requests"] for s in stats)
    delays = sorted(stored_seen[key] - happened for key, happened in truth_seen.items()
                    if happened and key in stored_seen)
    pick = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))] if delays else float("nan")  # noqa: E731
    rows = [
        ("connections x stored batches", f"{args.connections} x {args.batches + args.active:,}", f"loaded in {loaded_s:.0f} s"),
        ("worker processes", args.workers, f"broker {broker.split(':')[0]}"),
        ("sync cycles per minute", f"{cycles / minutes:.0f}", "one list read per cycle"),
        ("HTTP requests per minute", f"{requests_total / minutes:.0f}", ""),
        ("changes observed", len(delays), ""),
        ("API change -> database, p50 / p95 / max s", f"{pick(0.5):.1f} / {pick(0.95):.1f} / {pick(1.0):.1f}", ""),
    ]
    print(f"Scale-out benchmark: {minutes:.1f} minutes; database {db.vendor}; {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    print(table(rows, ("measurement", "value", "notes")))


if __name__ == "__main__":
    main()
