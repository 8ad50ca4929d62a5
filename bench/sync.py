"""Sync benchmark: cold import, a realistic steady state, and a naive client, against the simulator.

    python bench/sync.py [--sizes 10000,100000] [--active 20] [--polls 1000] [--database-url postgres://...]

For each size: a cold import; then steady-state cycles while the account moves as a real one does (active
batches progress, a quarter of them older than the first list page, and a new batch arrives every other
cycle), with the cycle's time and SQL query count; then a naive client that auto-pages the whole list
every cycle, as the official SDK's `for batch in client.batches.list()` does. Then 1,000 polls of
unchanged batches, which must add no snapshot row.

Targets: steady state <= 2 HTTP requests per cycle, a steady cycle at 100,000 stored batches costs no more
than at 10,000, cold import of 10,000 < 20 s, 1,000 unchanged polls add 0 snapshot rows.
"""

import argparse
import os
import platform
import time

from _setup import run_on_private_database, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="historical batches per run (default 10000,100000)")
    parser.add_argument("--active", type=int, default=20, help="active batches (default 20)")
    parser.add_argument("--polls", type=int, default=1000, help="unchanged polls for the snapshot check")
    run_on_private_database(parser, "sync", run)


def run(args) -> None:
    from django.conf import settings
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from batches import sync
    from batches.client import BatchApi
    from batches.models import Batch, BatchSnapshot, Connection
    from simulator import Clock, Simulator, SimulatorServer

    settings.SYNC_CYCLE_BUDGET_SECONDS = 3600  # the cold import in one cycle, to time it whole
    rows, populate_s = [], []
    for size in [int(s) for s in args.sizes.split(",")]:
        clock = Clock(frozen=True)
        simulator = Simulator(seed=1, speed=60, clock=clock)
        started = time.monotonic()
        simulator.populate(historical=size)
        now = clock.now()
        # Active batches: three quarters among the newest, a quarter deeper than the first list page.
        for i in range(args.active):
            created = now - (60 * i if i % 4 else 3600 * 24 * 3 + i)
            simulator.add_synthetic("in_progress", created_at=created, lines=2000, processing_seconds=6 * 3600)
        populate_s.append(time.monotonic() - started)
        with SimulatorServer(simulator, api_key="sk-bench") as server:
            conn = Connection(name=f"Bench {size}", slug=f"bench-{size}", base_url=server.url)
            conn.set_api_key("sk-bench")
            conn.save()
            server.reset_stats()
            result = sync.sync_connection(connection_id=conn.pk)
            assert not result.error and not result.cut_short, result.summary()
            rows.append((f"{size:,}: cold import", server.stats()["requests"], f"{result.seconds:.2f}", "",
                         f"{result.new} new"))

            timings, requests_made, queries, changed, arrived = [], [], [], 0, 0
            for cycle in range(20):
                clock.advance(15)
                if cycle % 2:
                    simulator.add_synthetic("validating", created_at=clock.now(), lines=100)
                    arrived += 1
                server.reset_stats()
                Connection.objects.filter(pk=conn.pk).update(lease_until=None)
                with CaptureQueriesContext(db) as captured:
                    result = sync.sync_connection(connection_id=conn.pk)
                assert not result.error, result.error
                timings.append(result.seconds)
                requests_made.append(server.stats()["requests"])
                queries.append(len(captured))
                changed += result.changed
            median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
            rows.append((f"{size:,}: steady cycle (median of 20)", median(requests_made), f"{median(timings):.3f}",
                         median(queries), f"{changed} changes, {arrived} arrivals"))

            api = BatchApi(base_url=server.url, api_key="sk-bench")
            server.reset_stats()
            started, after, listed = time.monotonic(), None, 0
            while True:  # the SDK's auto-paging: every page, every cycle
                page = api.list_batches(after=after, limit=100)
                listed += len(page["data"])
                if not page["has_more"]:
                    break
                after = page["data"][-1]["id"]
            api.close()
            rows.append((f"{size:,}: naive client cycle (auto-paging)", server.stats()["requests"],
                         f"{time.monotonic() - started:.2f}", "", f"{listed} listed"))
    # Unchanged polls, on the last account: freeze the clock, poll many times, count snapshot rows.
    before = BatchSnapshot.objects.count()
    with SimulatorServer(simulator, api_key="sk-bench") as server:
        Connection.objects.filter(pk=conn.pk).update(base_url=server.url)
        started = time.monotonic()
        for _ in range(args.polls):
            Connection.objects.filter(pk=conn.pk).update(lease_until=None)
            sync.sync_connection(connection_id=conn.pk)
        added = BatchSnapshot.objects.count() - before
        rows.append((f"{args.polls} unchanged polls", server.stats()["requests"], f"{time.monotonic() - started:.2f}",
                     "", f"{added} snapshot rows added"))
    print(f"Sync benchmark: sizes {args.sizes} + {args.active} active batches each (simulators populated in "
          f"{', '.join(f'{s:.1f}s' for s in populate_s)}); {Batch.objects.count()} batches stored at the end; "
          f"database {db.vendor}; {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(table(rows, ("measurement", "HTTP requests", "seconds", "SQL queries", "notes")))


if __name__ == "__main__":
    main()
