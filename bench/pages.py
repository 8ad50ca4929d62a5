"""Page benchmark: the batch list with many batches and snapshots, a detail page with a long history, and
the bytes an idle live poll costs.

    python bench/pages.py [--batches 100000] [--snapshots 1000000] [--detail-snapshots 10000]
                          [--requests 200] [--database-url postgres://postgres@127.0.0.1:5432/postgres]

Server time is measured in-process around Django's test client (no network), with the SQL query count.
Targets: list p95 < 100 ms with <= 8 queries whatever the page size; detail < 100 ms; idle poll < 1 KB.
"""

import argparse
import os
import platform
import random
import time
import warnings
from datetime import timedelta

from _setup import run_on_private_database, table

FILTERS = [
    "", "?status=in_progress", "?status=completed&status=failed", "?status=all_failed", "?connection=bench-2",
    "?model=gpt-4o-mini", "?endpoint=/v1/embeddings", "?q=batch_000123", "?q=nightly", "?sort=-tokens",
    "?created_from=2026-01-01&created_to=2026-01-31", "?page=40", "?status=validating&connection=bench-1",
]


warnings.filterwarnings("ignore", message="Limit for query logging exceeded")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100_000)
    parser.add_argument("--snapshots", type=int, default=1_000_000)
    parser.add_argument("--detail-snapshots", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    run_on_private_database(parser, "pages", run)


def generate(args) -> tuple:
    """Bulk-insert the data set; returns the detail batch and seconds taken."""
    from django.db import connection as db, transaction
    from django.utils import timezone

    from batches.models import Batch, BatchSnapshot, Connection

    started = time.monotonic()
    rng = random.Random(1)
    connections = []
    for i in range(1, 4):
        conn = Connection(name=f"Bench {i}", slug=f"bench-{i}", base_url="http://127.0.0.1:9/v1")
        conn.set_api_key("sk-bench")
        conn.save()
        connections.append(conn)
    statuses = ["completed"] * 14 + ["failed", "expired", "cancelled", "in_progress", "validating", "finalizing"]
    models = ["gpt-4o-mini", "gpt-4.1-mini", "gpt-5-mini", "text-embedding-3-small"]
    names = ["nightly eval", "support triage", "catalogue embeddings", "translation backfill"]
    base = timezone.now() - timedelta(days=330)
    chunk = []
    for i in range(args.batches):
        created = base + timedelta(seconds=i * 330 * 86400 // max(args.batches, 1))
        status = rng.choice(statuses)
        total = rng.randint(10, 5000)
        done = total if status == "completed" else rng.randint(0, total)
        model = rng.choice(models)
        chunk.append(Batch(
            connection=connections[i % 3], batch_id=f"batch_{i:06d}", status=status, model=model,
            endpoint="/v1/embeddings" if model.startswith("text-") else "/v1/chat/completions",
            input_file_id=f"file-in-{i}", created_at=created, expires_at=created + timedelta(days=1),
            in_progress_at=created + timedelta(minutes=1), total_requests=total,
            completed_requests=done - done // 30, failed_requests=done // 30, total_tokens=done * 700,
            input_tokens=done * 500, output_tokens=done * 200, cached_tokens=0, reasoning_tokens=0,
            metadata={"description": f"{rng.choice(names)} #{i}"}, raw={"id": f"batch_{i:06d}"},
            search_text=f"batch_{i:06d}\nfile-in-{i}\n{rng.choice(names)} #{i}",
            version=1 + args.snapshots // max(args.batches, 1),
        ))
        if len(chunk) == 5000:
            Batch.objects.bulk_create(chunk)
            chunk = []
    Batch.objects.bulk_create(chunk)

    # Snapshots with set-based SQL: every batch gets versions 1..k (k = snapshots / batches).
    per_batch = max(args.snapshots // max(args.batches, 1), 1)
    table_name = BatchSnapshot._meta.db_table
    with transaction.atomic(), db.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE bench_numbers (n integer)")
        cursor.executemany("INSERT INTO bench_numbers VALUES (%s)", [(n,) for n in range(1, per_batch + 1)])
        cursor.execute(
            f"INSERT INTO {table_name} (batch_id, version, observed_at, status, total_requests, "
            "completed_requests, failed_requests, input_tokens, cached_tokens, output_tokens, reasoning_tokens, "
            "total_tokens, output_file_id, error_file_id, errors, metadata) "
            "SELECT b.id, n.n, b.created_at, b.status, b.total_requests, b.completed_requests * n.n / %s, "
            "b.failed_requests * n.n / %s, b.input_tokens, 0, b.output_tokens, 0, b.total_tokens, '', '', '[]', NULL "
            f"FROM {Batch._meta.db_table} b CROSS JOIN bench_numbers n",
            [per_batch, per_batch],
        )
        cursor.execute("DROP TABLE bench_numbers")

    # One batch with a long in-progress history for the detail page.
    detail = Batch.objects.filter(status="in_progress").first()
    BatchSnapshot.objects.filter(batch=detail).delete()
    start = detail.created_at
    BatchSnapshot.objects.bulk_create([
        BatchSnapshot(batch=detail, version=v, observed_at=start + timedelta(seconds=5 * v), status="in_progress",
                      total_requests=detail.total_requests, completed_requests=detail.total_requests * v // (
                          args.detail_snapshots + 1), failed_requests=0)
        for v in range(1, args.detail_snapshots + 1)
    ], batch_size=5000)
    Batch.objects.filter(pk=detail.pk).update(version=args.detail_snapshots)
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")  # as autovacuum would have done on a live system
    return detail, time.monotonic() - started


def timed(client, url, **headers):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(db) as queries:
        started = time.perf_counter()
        response = client.get(url, **headers)
        if getattr(response, "streaming", False):
            b"".join(response.streaming_content)
        elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code in (200, 204), (url, response.status_code)
    return elapsed, len(queries), response


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def run(args) -> None:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection as db
    from django.test import Client
    from django.urls import reverse

    from batches.models import BatchSnapshot

    settings.ALLOWED_HOSTS = ["*"]
    detail, seconds = generate(args)
    admin = User.objects.create_superuser("bench", password="x")
    client = Client()
    client.force_login(admin)
    for url in FILTERS:  # warm caches, templates and the database
        timed(client, "/" + url)

    rows, all_times, max_queries = [], [], 0
    per_filter = {url: [] for url in FILTERS}
    for i in range(args.requests):
        url = FILTERS[i % len(FILTERS)]
        elapsed, queries, _ = timed(client, "/" + url)
        per_filter[url].append(elapsed)
        all_times.append(elapsed)
        max_queries = max(max_queries, queries)
    for url, times in per_filter.items():
        rows.append((f"list {url or '(no filter)'}", len(times), f"{pct(times, 50):.1f}", f"{pct(times, 95):.1f}", ""))
    rows.append(("list, all filters", len(all_times), f"{pct(all_times, 50):.1f}", f"{pct(all_times, 95):.1f}",
                 f"max {max_queries} queries"))
    for size in (10, 50, 200):
        settings.LIST_PAGE_SIZE = size
        _, queries, _ = timed(client, "/?status=completed")
        rows.append((f"list, page size {size}", 1, "", "", f"{queries} queries"))
    settings.LIST_PAGE_SIZE = 50

    url = reverse("batch-detail", args=[detail.connection.slug, detail.batch_id])
    timed(client, url)
    times, queries = [], 0
    for _ in range(50):
        elapsed, queries, _ = timed(client, url)
        times.append(elapsed)
    count = BatchSnapshot.objects.filter(batch=detail).count()
    rows.append((f"detail, {count:,} snapshots", 50, f"{pct(times, 50):.1f}", f"{pct(times, 95):.1f}",
                 f"{queries} queries"))

    hx = {"HTTP_HX_REQUEST": "true"}
    for name, page in (("list", "/"), ("detail", url)):
        fragment = client.get(page, **hx).content.decode()
        poll = fragment.split('hx-get="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        elapsed, queries, response = timed(client, poll, **hx)
        wire = len(b"HTTP/1.1 204 No Content\r\n" + response.serialize_headers() + b"\r\n\r\n") + len(response.content)
        rows.append((f"idle {name} poll (204)", 1, f"{elapsed:.1f}", "", f"{wire} bytes, {queries} queries"))

    print(f"Page benchmark: {args.batches:,} batches, {BatchSnapshot.objects.count():,} snapshots "
          f"(generated in {seconds:.0f}s); database {db.vendor}; {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(table(rows, ("measurement", "requests", "p50 ms", "p95 ms", "notes")))


if __name__ == "__main__":
    main()
