"""Sync benchmark: cold import, steady-state cycle, and a naive full re-list, against the simulator.

    python bench/sync.py [--batches 10000] [--active 20] [--polls 1000] [--database-url postgres://...]

Prints a table. Targets: steady state <= 2 HTTP requests per cycle, cold import < 20 s,
1,000 polls of unchanged batches add 0 snapshot rows.
"""

import argparse
import os
import platform
import time

from _setup import run_on_private_database, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10000, help="historical batches (default 10000)")
    parser.add_argument("--active", type=int, default=20, help="active batches, among the newest (default 20)")
    parser.add_argument("--polls", type=int, default=1000, help="unchanged polls for the snapshot check")
    run_on_private_database(parser, "sync", run)


def run(args) -> None:
    from django.db import connection as db

    from batches import sync
    from batches.client import BatchApi
    from batches.models import BatchSnapshot, Connection
    from batches.store import store_batch
    from simulator import Clock, Simulator, SimulatorServer

    clock = Clock(frozen=True)
    simulator = Simulator(seed=1, speed=60, clock=clock)
    started = time.monotonic()
    simulator.populate(historical=args.batches, active=args.active)
    populate_s = time.monotonic() - started
    rows = []
    with SimulatorServer(simulator, api_key="sk-bench") as server:
        conn = Connection(name="Bench", slug="bench", base_url=server.url)
        conn.set_api_key("sk-bench")
        conn.save()

        server.reset_stats()
        result = sync.sync_connection(connection_id=conn.pk)
        assert not result.error, result.error
        rows.append(("cold import (full walk)", server.stats()["requests"], f"{result.seconds:.2f}",
                     f"{result.new} new"))

        # Steady state: the active batches move between cycles (the clock advances), nothing else.
        timings, requests_made, changed = [], [], 0
        for _ in range(20):
            clock.advance(15)
            server.reset_stats()
            result = sync.sync_connection(connection_id=conn.pk)
            timings.append(result.seconds)
            requests_made.append(server.stats()["requests"])
            changed += result.changed
        rows.append(("steady-state cycle (median of 20)", sorted(requests_made)[10],
                     f"{sorted(timings)[10]:.3f}", f"{changed} changes seen"))

        # The naive baseline: re-list every page each cycle and upsert everything.
        api = BatchApi(base_url=server.url, api_key="sk-bench")
        server.reset_stats()
        started, after = time.monotonic(), None
        while True:
            page = api.list_batches(after=after, limit=100)
            for payload in page["data"]:
                store_batch(conn, payload)
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
        rows.append(("naive full re-list cycle", server.stats()["requests"], f"{time.monotonic() - started:.2f}",
                     "baseline"))

        # Unchanged polls: freeze everything (the clock stays), poll many times, count snapshot rows.
        before = BatchSnapshot.objects.count()
        server.reset_stats()
        started = time.monotonic()
        for _ in range(args.polls):
            sync.sync_connection(connection_id=conn.pk)
        added = BatchSnapshot.objects.count() - before
        rows.append((f"{args.polls} unchanged polls", server.stats()["requests"],
                     f"{time.monotonic() - started:.2f}", f"{added} snapshot rows added"))
    print(f"Sync benchmark: {args.batches} historical + {args.active} active batches (simulator populated in "
          f"{populate_s:.1f}s); database {db.vendor}; {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(table(rows, ("measurement", "HTTP requests", "seconds", "notes")))


if __name__ == "__main__":
    main()
