"""Request index benchmark: a 50,000-request batch with a 200 MB output, archived and indexed.

    python bench/results.py [--requests 50000] [--megabytes 200] [--input-first] [--database-url postgres://...]

The simulator runs in its own process. This one copies the batch's input, output and error files from the
simulator's HTTP API into the archive storage (a temporary directory) as the archive queue does
(batches/archive.py: streamed, hashed, checked against the API's byte count), then indexes them with
batches.results.index_batch, then runs it again (a no-op). Reports the seconds and the peak RSS growth of each
phase, and what the index costs in the database per request: the BatchRequest table and its indexes
(pg_total_relation_size on PostgreSQL, the dbstat pages on SQLite).
Targets: copy + index < 60 s, peak RSS growth < 50 MB, < 300 bytes per request with 120-character previews.
`--input-first` indexes the input on its own first, as when it is too large for the input map: a "not run" row
per request that the results then update (the cost of that, in the database, is the point of the option).
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import requests
from _setup import ROOT, free_port, measure, run_on_private_database, stop_processes, table, wait_http

API_KEY = "sk-bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000, help="requests in the batch (default 50000)")
    parser.add_argument("--megabytes", type=float, default=200, help="size of the output file (default 200)")
    parser.add_argument("--fail-share", type=float, default=0.03, help="share of failed requests (default 0.03)")
    parser.add_argument("--input-first", action="store_true", help="index the input on its own, before the results")
    archive_root = tempfile.mkdtemp(prefix="batchboard-bench-archive-", dir=ROOT / "var")
    os.environ["ARCHIVE_ROOT"] = archive_root  # read by the settings, before Django starts
    # The copy enqueues the index task when it is done: into a broker of the bench's own, which nobody reads.
    os.environ["CELERY_BROKER_URL"] = f"sqla+sqlite:///{archive_root}/broker.sqlite3"
    os.environ["ARCHIVE_BACKFILL_DAYS"] = "1"  # the batch finished before the bench stores it
    try:
        run_on_private_database(parser, "results", run)
    finally:
        shutil.rmtree(archive_root, ignore_errors=True)


def run(args) -> None:
    from django.db import connection as db

    from batches import results
    from batches.models import BatchRequest, Connection
    from batches.results import index_batch
    from batches.store import store_batch

    if args.input_first:
        results.JOIN_BUDGET_BYTES = 0

    port = free_port()
    simulator = subprocess.Popen([sys.executable, "-m", "simulator", "--port", str(port), "--api-key", API_KEY],
                                 cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        sim_url = f"http://127.0.0.1:{port}"
        wait_http(sim_url + "/_sim/stats")
        payload = requests.post(sim_url + "/_sim/batches", timeout=600, json={
            "status": "completed", "lines": args.requests, "fail_share": args.fail_share,
            "created_at": time.time() - 7200, "output_bytes": int(args.megabytes * 1024 * 1024)}).json()
        conn = Connection(name="Bench", slug="bench", base_url=sim_url + "/v1")
        conn.set_api_key(API_KEY)
        conn.save()
        batch, _ = store_batch(conn, payload)
        # The simulator works out each file's size on the first request: not part of the copy's time.
        sizes = {kind: _file_bytes(sim_url, batch.file_id(kind)) for kind in ("input", "output", "error")}

        phases = [("copy into the archive", archive_files),
                  ("index", lambda: index_batch(batch.pk)),
                  ("index again (nothing left to do)", lambda: index_batch(batch.pk))]
        rows = []
        for label, phase in phases:
            seconds, growth = measure(phase)
            rows.append((label, f"{seconds:.2f}", f"{growth:.1f}"))
    finally:
        stop_processes([simulator])

    requests_indexed = BatchRequest.objects.filter(batch=batch).count()
    table_bytes, index_bytes = _index_size(db)
    per_request = (table_bytes + index_bytes) / max(requests_indexed, 1)
    total_s = float(rows[0][1]) + float(rows[1][1])
    peak = max(float(row[2]) for row in rows)
    mb = {kind: f"{size / 1048576:.2f}" for kind, size in sizes.items()}
    order = "input indexed first; " if args.input_first else ""
    print(f"Request index benchmark: {args.requests:,} requests, files {mb['input']} MB input, {mb['output']} MB "
          f"output, {mb['error']} MB error; {order}database {db.vendor}; {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    print(table(rows, ("phase", "seconds", "peak RSS growth MB")))
    print(table([
        ("requests indexed", f"{requests_indexed:,}", f"{args.requests:,} in the batch"),
        ("table bytes per request", f"{table_bytes / max(requests_indexed, 1):.0f}", ""),
        ("index bytes per request", f"{index_bytes / max(requests_indexed, 1):.0f}", "primary key and error code"),
        ("bytes per request", f"{per_request:.0f}", _target(per_request < 300, "< 300", args)),
        ("copy + index, seconds", f"{total_s:.2f}", _target(total_s < 60, "< 60", args)),
        ("peak RSS growth, MB", f"{peak:.1f}", _target(peak < 50, "< 50", args)),
    ], ("measurement", "value", "target at 50,000 requests and 200 MB")))


def archive_files() -> None:
    """What beat and the archive queue's worker do (batches/archive.py): claim the copies due and run each."""
    from batches import archive

    for pk, claim in archive.claim_due_files():
        assert archive.copy_file(pk, claimed_until=claim) == "stored"




def _file_bytes(sim_url: str, file_id: str | None) -> int:
    if not file_id:
        return 0
    return requests.get(f"{sim_url}/v1/files/{file_id}", headers={"Authorization": f"Bearer {API_KEY}"},
                        timeout=600).json()["bytes"]


def _index_size(db) -> tuple[int, int]:
    """Bytes of the BatchRequest table and of its indexes."""
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            cursor.execute("SELECT pg_table_size('batches_batchrequest'), pg_indexes_size('batches_batchrequest')")
            return cursor.fetchone()
        cursor.execute("SELECT name, type FROM sqlite_master WHERE tbl_name = 'batches_batchrequest'")
        kinds = dict(cursor.fetchall())
        cursor.execute(f"SELECT name, SUM(pgsize) FROM dbstat WHERE name IN ({', '.join(['%s'] * len(kinds))}) "
                       "GROUP BY name", list(kinds))
        sizes = dict(cursor.fetchall())
    return (sum(size for name, size in sizes.items() if kinds[name] == "table"),
            sum(size for name, size in sizes.items() if kinds[name] == "index"))


def _target(met: bool, target: str, args) -> str:
    if args.requests < 50_000 or args.megabytes < 200:  # a small run pays the tables' fixed pages alone
        return target
    return f"{target} ({'met' if met else 'NOT MET'})"


if __name__ == "__main__":
    main()
