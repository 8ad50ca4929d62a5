"""Import benchmark: a large account behind a slow API, imported in cycles bounded by SYNC_CYCLE_BUDGET_SECONDS.

    python bench/import_budget.py [--batches 30000] [--latency-ms 50] [--budget 5] [--database-url postgres://...]

Each cycle is one `sync_batches` run (no --full). Target: every cycle ends within the budget plus one
request, and after enough cycles every batch is stored exactly once, with new batches arriving meanwhile.
"""

import argparse
import os
import platform
import time

from _setup import run_on_private_database, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=30000, help="batches in the account (default 30000)")
    parser.add_argument("--latency-ms", type=int, default=50, help="API latency per request (default 50)")
    parser.add_argument("--budget", type=float, default=5.0, help="SYNC_CYCLE_BUDGET_SECONDS (default 5)")
    run_on_private_database(parser, "import", run)


def run(args) -> None:
    from django.conf import settings
    from django.db import connection as db
    from django.db.models import Count

    from batches import sync
    from batches.models import Batch, Connection
    from simulator import Clock, Simulator, SimulatorServer

    settings.SYNC_CYCLE_BUDGET_SECONDS = args.budget
    simulator = Simulator(seed=5, speed=1, clock=Clock(frozen=True))
    started = time.monotonic()
    simulator.populate(historical=args.batches)
    populate_s = time.monotonic() - started
    rows, total_requests, arrived = [], 0, 0
    with SimulatorServer(simulator, api_key="sk-bench", latency_ms=args.latency_ms) as server:
        conn = Connection(name="Import", slug="import", base_url=server.url)
        conn.set_api_key("sk-bench")
        conn.save()
        request_s = cycle_max = 0.0
        healths = set()
        for cycle in range(1, 10_000):
            if cycle % 3 == 2:  # a script submits a batch now and then during the import
                server.inject_batch("validating", lines=10)
                arrived += 1
            server.reset_stats()
            result = sync.sync_connection(connection_id=conn.pk)
            assert not result.error, result.error
            total_requests += result.requests
            cycle_max = max(cycle_max, result.seconds)
            request_s = max(request_s, result.seconds / max(result.requests, 1))
            conn.refresh_from_db()
            healths.add(conn.health())
            Connection.objects.filter(pk=conn.pk).update(next_sync_at=None)
            if not result.cut_short and conn.last_full_walk_at:
                break
        stored = Batch.objects.filter(connection=conn).count()
        duplicates = (Batch.objects.filter(connection=conn).values("batch_id").annotate(n=Count("id"))
                      .filter(n__gt=1).count())
        rows.append(("cycles", cycle, ""))
        rows.append(("longest cycle, seconds", f"{cycle_max:.2f}", f"budget {args.budget:g} s"))
        rows.append(("HTTP requests, all cycles", total_requests, ""))
        rows.append(("batches stored", stored, f"{args.batches} + {arrived} arrived during the import"))
        rows.append(("duplicate rows", duplicates, ""))
        rows.append(("health states seen", ", ".join(sorted(healths)), ""))
    print(f"Import benchmark: {args.batches} batches, {args.latency_ms} ms latency, cycle budget {args.budget:g} s "
          f"(simulator populated in {populate_s:.1f}s); database {db.vendor}; {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    print(table(rows, ("measurement", "value", "notes")))
    assert stored == args.batches + arrived and duplicates == 0, "the import is incomplete or duplicated"
    assert cycle_max <= args.budget + 2 * request_s + 1, "a cycle overran its budget"


if __name__ == "__main__":
    main()
