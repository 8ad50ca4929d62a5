"""Usage benchmark: the daily rollup's rebuild, and the usage page, its CSV tables and /metrics with many batches.

    python bench/usage.py [--batches 1000000] [--rounds 10] [--database-url postgres://...]

The batches are bench/pages.py's (three connections, four models, every status, teams and projects in their
metadata, created evenly over 330 days; set-based SQL), one snapshot each. `manage.py rebuild_usage`'s functions
fill the rollup and every batch's stored cost, timed. Then, in-process around Django's test client (no network), an Admin (who sees every
connection) opens /usage/ for the last 7, 30 and 90 days stacked by model and by metadata team, and each of the
page's CSV tables; /metrics is scraped with a token. Printed: p50, p95 and max ms and the SQL queries per page.
Target: p95 < 300 ms at 1,000,000 batches on PostgreSQL.
"""

import argparse
import os
import platform
import time
from types import SimpleNamespace

from _setup import run_on_private_database, table
from pages import generate, pct, timed

PERIODS = ("7", "30", "90")
STACKS = ("model", "meta:team")
TARGET_MS = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=10, help="measurements per URL (after one not counted)")
    run_on_private_database(parser, "usage", run)


def run(args) -> None:
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.db import connection as db
    from django.test import Client

    from batches.store import rebuild_batch_counts
    from usage import prices, rollup
    from usage.models import DailyDuration, DailyUsage

    started = time.monotonic()
    generate(SimpleNamespace(batches=args.batches, snapshots=args.batches, detail_snapshots=10))
    rebuild_batch_counts()
    generated = time.monotonic() - started
    started = time.monotonic()
    counted = rollup.rebuild()
    rebuilt = time.monotonic() - started
    started = time.monotonic()
    repriced = prices.reprice()  # what `manage.py rebuild_usage` does next: every batch's stored cost
    repricing = time.monotonic() - started
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute("ANALYZE")

    settings.METRICS_TOKEN = "bench-token"
    settings.ALLOWED_HOSTS = ["testserver"]
    admin = User.objects.create_user("bench-admin")
    admin.groups.add(Group.objects.get(name="Admin"))
    client = Client()
    client.force_login(admin)
    urls = [(f"/usage/ {days} days by {stack}", f"/usage/?period={days}&stack={stack}")
            for days in PERIODS for stack in STACKS]
    urls += [(f"/usage/{kind}.csv {days} days by {stack}", f"/usage/{kind}.csv?period={days}&stack={stack}")
             for kind in ("cost", "tokens", "requests") for days in PERIODS for stack in STACKS]
    rows, everything = [], []
    for label, url, headers in [(label, url, {}) for label, url in urls] + [
            ("/metrics", "/metrics", {"HTTP_AUTHORIZATION": "Bearer bench-token"})]:
        timed(client, url, **headers)  # templates compiled, connection open
        times, queries = [], 0
        for _ in range(args.rounds):
            elapsed, queries, _ = timed(client, url, **headers)
            times.append(elapsed)
        everything += times
        rows.append((label, args.rounds, f"{pct(times, 50):.1f}", f"{pct(times, 95):.1f}", f"{max(times):.1f}",
                     queries))
    print(f"Usage benchmark: {args.batches:,} batches (generated in {generated:.1f} s), database {db.vendor}; "
          f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"rollup rebuild: {counted:,} batches in {rebuilt:.1f} s -> {DailyUsage.objects.count():,} usage rows, "
          f"{DailyDuration.objects.count():,} duration rows; re-pricing: {repriced:,} batch costs in {repricing:.1f} s")
    print(table(rows, ("page", "rounds", "p50 ms", "p95 ms", "max ms", "queries")))
    worst = max(float(row[3]) for row in rows)
    print(f"Target p95 < {TARGET_MS} ms on every page: {'met' if worst < TARGET_MS else 'MISSED'} "
          f"(worst p95 {worst:.1f} ms, all pages p95 {pct(everything, 95):.1f} ms)")


if __name__ == "__main__":
    main()
