"""Metrics benchmark: how long one Prometheus scrape of /metrics takes with many stored batches.

    python bench/metrics.py [--batches 100000] [--rounds 20] [--database-url postgres://...]

The batches are bench/pages.py's (three connections, four models, every status, set-based SQL), one snapshot
each; the status counts and the usage rollup are rebuilt and each connection gets sync counters for three
outcomes. Server time is
measured in-process around Django's test client (no network), with the SQL query count. Target: p95 < 200 ms
at 100,000 batches.
"""

import argparse
import os
import platform
import time
from types import SimpleNamespace

from _setup import run_on_private_database, table
from pages import generate, pct, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20, help="scrapes measured (after one not counted)")
    run_on_private_database(parser, "metrics", run)


def run(args) -> None:
    from django.conf import settings
    from django.db import connection as db
    from django.test import Client

    from batches.models import Connection, SyncCounter
    from batches.store import rebuild_batch_counts
    from usage.rollup import rebuild

    started = time.monotonic()
    generate(SimpleNamespace(batches=args.batches, snapshots=args.batches, detail_snapshots=10))
    rebuild_batch_counts()
    rebuild()  # the usage rollup, which the sync keeps and the request, token and cost series read
    for connection in Connection.objects.all():
        for kind in ("", "server", "rate_limited"):
            SyncCounter.objects.create(connection=connection, error_kind=kind, cycles=1000, seconds=250.0,
                                       requests=1200)
    generated = time.monotonic() - started

    settings.METRICS_TOKEN = "bench-token"
    settings.ALLOWED_HOSTS = ["testserver"]
    client, auth = Client(), {"HTTP_AUTHORIZATION": "Bearer bench-token"}
    timed(client, "/metrics", **auth)  # the first one opens the connection and warms the caches
    times, queries, body = [], 0, b""
    for _ in range(args.rounds):
        elapsed, queries, response = timed(client, "/metrics", **auth)
        times.append(elapsed)
        body = response.content
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    print(f"Metrics benchmark: {args.batches:,} batches (generated in {generated:.1f} s), database {db.vendor}; "
          f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(table([("GET /metrics", args.rounds, f"{pct(times, 50):.1f}", f"{pct(times, 95):.1f}", f"{max(times):.1f}",
                  queries, series, f"{len(body):,}")],
                ("scrape", "rounds", "p50 ms", "p95 ms", "max ms", "queries", "series", "bytes")))
    print(f"Target p95 < 200 ms: {'met' if pct(times, 95) < 200 else 'MISSED'}")


if __name__ == "__main__":
    main()
