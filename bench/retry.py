"""Retry and upload benchmark: a 50,000-line retry file built from a 200 MB archived input, and a 200 MB upload
checked line by line.

    python bench/retry.py [--requests 50000] [--megabytes 200] [--database-url postgres://...]

Writes an input file of `--requests` chat lines padded to `--megabytes` into the archive storage (a temporary
directory), indexes every request as failed (BatchRequest rows with the lines' positions), then:
1. builds the retry file of all of them (batches.retries: one pass over the archived input, parts within the
   API's limits, written back into the archive storage), as a retry does before its first API call;
2. checks the same bytes as an upload (batches.uploads.validate), as /batches/new/ does before its preview.
Reports the seconds and the peak RSS growth of each phase.
Targets at 50,000 requests and 200 MB: the retry file < 20 s, the upload check < 30 s, peak RSS growth < 50 MB.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from _setup import ROOT, measure, run_on_private_database, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000, help="requests in the input (default 50000)")
    parser.add_argument("--megabytes", type=float, default=200, help="size of the input file (default 200)")
    archive_root = tempfile.mkdtemp(prefix="batchboard-bench-retry-", dir=ROOT / "var")
    os.environ["ARCHIVE_ROOT"] = archive_root  # read by the settings, before Django starts
    try:
        run_on_private_database(parser, "retry", run)
    finally:
        shutil.rmtree(archive_root, ignore_errors=True)


def run(args) -> None:
    from django.db import connection as db
    from django.utils import timezone

    from batches import retries, uploads
    from batches.archive import storage
    from batches.models import ArchivedFile, Batch, BatchRequest, Connection, RequestOutcome

    conn = Connection(name="Bench", slug="bench", base_url="http://127.0.0.1:1/v1")
    conn.set_api_key("sk-bench")
    conn.save()
    batch = Batch.objects.create(connection=conn, batch_id="batch_bench", status="completed",
                                 endpoint="/v1/chat/completions", model="gpt-4o-mini", total_requests=args.requests)
    path = Path(storage().path("input.jsonl"))
    path.parent.mkdir(parents=True, exist_ok=True)
    positions = _write_input(path, args.requests, int(args.megabytes * 1024 * 1024))
    ArchivedFile.objects.create(batch=batch, kind="input", file_id="file-bench", state=ArchivedFile.STORED,
                                name="input.jsonl", bytes=path.stat().st_size, stored_at=timezone.now())
    BatchRequest.objects.bulk_create(
        [BatchRequest(batch=batch, custom_id=f"request-{n}", outcome=RequestOutcome.FAILED, error_code="server_error",
                      input_offset=offset, input_length=length) for n, (offset, length) in enumerate(positions, 1)],
        batch_size=2000)
    del positions

    built = []

    def build():
        rows = retries.retry_requests(batch, outcomes=["failed"])
        built.extend(retries.write_parts(retries.retry_lines(batch, rows), prefix="submissions/bench"))

    report = []

    def check():
        with path.open("rb") as handle:
            report.append(uploads.validate(handle, size=path.stat().st_size))

    rows = []
    for label, phase, target in (("build the retry file", build, 20), ("check it as an upload", check, 30)):
        seconds, growth = measure(phase)
        rows.append((label, f"{seconds:.2f}", f"{growth:.1f}", _target(seconds < target and growth < 50,
                                                                        f"< {target} s, < 50 MB", args)))
    sent = sum(part["requests"] for part in built)
    assert sent == args.requests, (sent, args.requests)
    assert report[0].ok and report[0].requests == args.requests, report[0].errors[:3]
    print(f"Retry benchmark: {args.requests:,} requests, input {path.stat().st_size / 1048576:.2f} MB, retry file "
          f"in {len(built)} part(s); database {db.vendor}; {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(table(rows, ("phase", "seconds", "peak RSS growth MB", "target at 50,000 requests and 200 MB")))


def _write_input(path: Path, requests: int, size: int) -> list[tuple[int, int]]:
    """Chat lines padded so that the file is about `size` bytes; the (offset, length) of each."""
    positions, offset = [], 0
    pad = max(0, size // max(requests, 1) - len(_line(requests, "")) - 1)  # the longest line fits
    with path.open("wb") as out:
        for n in range(1, requests + 1):
            line = _line(n, "x" * pad)
            out.write(line + b"\n")
            positions.append((offset, len(line)))
            offset += len(line) + 1
    return positions


def _line(n: int, padding: str) -> bytes:
    return json.dumps({"custom_id": f"request-{n}", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{n} {padding}"}],
                                "max_tokens": 200}}).encode()




def _target(met: bool, target: str, args) -> str:
    if args.requests < 50_000 or args.megabytes < 200:
        return target
    return f"{target} ({'met' if met else 'NOT MET'})"


if __name__ == "__main__":
    sys.exit(main())
