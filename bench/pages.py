"""Page benchmark: the batch list with many batches and snapshots, a detail page with a long history, the
bytes an idle live poll costs, snapshot retention's hourly run, and the results explorer over the request index.

    python bench/pages.py [--batches 1000000] [--snapshots 10000000] [--detail-snapshots 10000]
                          [--request-batches 100] [--requests-per-batch 50000] [--parts list,detail,explorer]
                          [--rounds 5] [--database-url postgres://postgres@127.0.0.1:5432/postgres]

Server time is measured in-process around Django's test client (no network), with the SQL query count.
Every list URL is measured at page sizes 10, 50 and 200, each time twice: right after a change stored the
way a sync stores it (the first render after a change) and once more (warm). Deep pages are reached the way
a reader reaches them, by the pager's "Older" link from the page before; "typed" is the same page number
written into the URL by hand.
Targets: list p95 < 100 ms after a change and < 50 ms warm, <= 8 queries, whatever the filter, sort, page
size or depth; detail p95 < 50 ms after a change. Idle polls: the bytes of request and answer, reported.
Explorer: BatchRequest rows for --request-batches finished batches (set-based SQL, one batch at a time, rows in
an order unrelated to their custom ids, as the indexer writes them); every combination of its filters and
sorts on one of those batches, first and deep pages, p95 < 100 ms warm; one request's page (its lines from a
small archived file) p95 < 50 ms; the list filtered by a request error code (<= 8 queries); and the index's
bytes per request (< 300 with its indexes).
"""

import argparse
import html
import itertools
import os
import platform
import random
import re
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from datetime import timedelta

from _setup import run_on_private_database, table

FILTERS = [
    "", "?status=in_progress", "?status=completed&status=failed", "?status=all_failed", "?connection=bench-2",
    "?model=gpt-4o-mini", "?endpoint=/v1/embeddings", "?q=batch_000123", "?q=nightly", "?sort=-tokens",
    "?created_from=2026-01-01&created_to=2026-01-31", "?page=40", "?status=validating&connection=bench-1",
]
# Lists whose page DEEP_PAGE is reached through the pager (and, below, every sort's); the first also typed.
DEEP = ["", "?status=completed", "?status=all_failed", "?q=nightly"]
DEEP_PAGE = 2000
PAGE_SIZES = (10, 50, 200)

warnings.filterwarnings("ignore", message="Limit for query logging exceeded")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1_000_000)
    parser.add_argument("--snapshots", type=int, default=10_000_000)
    parser.add_argument("--detail-snapshots", type=int, default=10_000)
    parser.add_argument("--request-batches", type=int, default=100, help="finished batches given indexed requests")
    parser.add_argument("--requests-per-batch", type=int, default=50_000)
    parser.add_argument("--parts", default="list,detail,explorer",
                        help="what to measure, of list (the batch list), detail (a batch page, polls, retention) "
                             "and explorer (the request explorer and the list's request error filter)")
    parser.add_argument("--rounds", type=int, default=5, help="measurements per URL, page size and column")
    # One request's page reads its lines from an archived file: the archive goes to a directory of its own.
    archive_root = tempfile.mkdtemp(prefix="batchboard-bench-archive-")
    os.environ["ARCHIVE_ROOT"] = archive_root
    try:
        run_on_private_database(parser, "pages", run)
    finally:
        shutil.rmtree(archive_root, ignore_errors=True)


# Odd multipliers of a multiplicative hash: deterministic "random" picks computed by the database.
_HASH = (2654435761, 2246822519, 3266489917, 668265263, 374761393, 2869860233)
STATUS_MIX = ["completed"] * 14 + ["failed", "expired", "cancelled", "in_progress", "validating", "finalizing"]
MODELS = ["gpt-4o-mini", "gpt-4.1-mini", "gpt-5-mini", "text-embedding-3-small"]
TEAMS = ["growth", "search", "support", "research", "platform"]
NAMES = ["nightly eval", "support triage", "catalogue embeddings", "translation backfill"]


def _pick(salt: int, choices: list[str]) -> str:
    """SQL choosing one of `choices` per row number i, the same on every database."""
    cases = " ".join(f"WHEN {n} THEN '{value}'" for n, value in enumerate(choices))
    return f"CASE {_hash(salt, len(choices))} {cases} END"


def _hash(salt: int, modulo: int) -> str:
    return f"(i * {_HASH[salt]} %% 4294967296 / 65536 %% {modulo})"


def _dialect(vendor: str):
    """What the SQL below writes differently per database: time arithmetic and JSON values."""
    if vendor == "postgresql":
        return (lambda seconds: f"(CAST(%(base)s AS timestamptz) + make_interval(secs => {seconds}))",
                lambda text: f"CAST({text} AS jsonb)")
    return lambda seconds: f"datetime(%(base)s, '+' || ({seconds}) || ' seconds')", lambda text: text


def generate(args) -> tuple:
    """Fill the database with set-based SQL (no row passes through Python); on PostgreSQL the tables'
    secondary indexes are built after the load, as a bulk load should. Returns the detail batch and the
    seconds taken."""
    from django.db import connection as db
    from django.utils import timezone

    from batches.models import Batch, BatchSnapshot, Connection

    started = time.monotonic()
    connections = []
    for i in range(1, 4):
        conn = Connection(name=f"Bench {i}", slug=f"bench-{i}", base_url="http://127.0.0.1:9/v1")
        conn.set_api_key("sk-bench")
        conn.save()
        connections.append(conn)
    at, json = _dialect(db.vendor)
    # Metadata as teams label their batches: a team on 9 in 10 (one of five), a project on 2 in 3 (one of
    # twelve), for the usage page's stacks and budgets (USAGE_METADATA_KEYS).
    metadata = json("'{\"description\": \"' || name || '\"' || team || project || '}'")
    raw = json("'{\"id\": \"' || batch_id || '\"}'")
    # Per row number i: a status from STATUS_MIX (1 in 100 completed batches had every request fail), a
    # size, a model and its endpoint, a name, one of three connections, created evenly over 330 days and
    # last changed a day later; unfinished batches are part done.
    batches = f"""WITH RECURSIVE n(i) AS (SELECT CAST(0 AS bigint) UNION ALL SELECT i + 1 FROM n WHERE i < %(count)s - 1),
    b AS (SELECT i, {_pick(0, STATUS_MIX)} AS status, 10 + {_hash(1, 4991)} AS total, {_pick(2, MODELS)} AS model,
                 {_pick(3, NAMES)} || ' #' || i AS name, {_hash(4, 100)} = 0 AS all_failed, {_hash(5, 1000)} AS part,
                 'batch_' || substr('00000000' || i, length('00000000' || i) - 5) AS batch_id,
                 i * %(step)s AS offset_s,
                 CASE WHEN {_hash(1, 10)} = 0 THEN '' ELSE ', "team": "' || {_pick(4, TEAMS)} || '"' END AS team,
                 CASE WHEN {_hash(2, 3)} = 0 THEN '' ELSE ', "project": "p-' || {_hash(3, 12)} || '"' END AS project
          FROM n),
    d AS (SELECT *, CASE WHEN status = 'completed' THEN total ELSE part * total / 1000 END AS done FROM b)
    INSERT INTO {Batch._meta.db_table} (connection_id, batch_id, endpoint, model, status, input_file_id,
        output_file_id, error_file_id, completion_window, created_at, in_progress_at, expires_at,
        total_requests, completed_requests, failed_requests, input_tokens, cached_tokens, output_tokens,
        reasoning_tokens, total_tokens, errors, metadata, raw, search_text, first_seen_at, last_synced_at,
        last_changed_at, version, in_flight, done_permille)
    SELECT CASE i %% 3 WHEN 0 THEN %(c0)s WHEN 1 THEN %(c1)s ELSE %(c2)s END, batch_id,
        CASE WHEN model LIKE 'text-%%' THEN '/v1/embeddings' ELSE '/v1/chat/completions' END, model, status,
        'file-in-' || i, '', '', '24h', {at("offset_s")}, {at("offset_s + 60")}, {at("offset_s + 86400")},
        total, CASE WHEN all_failed AND status = 'completed' THEN 0 ELSE done - done / 30 END,
        CASE WHEN all_failed AND status = 'completed' THEN done ELSE done / 30 END,
        done * 500, 0, done * 200, 0, done * 700, {json("'[]'")}, {metadata}, {raw},
        lower(batch_id || ' file-in-' || i || ' ' || name), {at("offset_s")}, {at("offset_s + 86400")},
        {at("offset_s + 86400")}, %(versions)s, status IN ('validating', 'in_progress', 'finalizing', 'cancelling'),
        CASE WHEN status = 'completed' THEN 1000 ELSE (1000 * done + total / 2) / total END
    FROM d"""
    # Versions 1..k of every batch. Their status changes at every version (validating, then in_progress
    # and finalizing by turns, the batch's own status last), so retention finds nothing to thin: the steady
    # state its hourly run meets.
    snapshots = f"""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %(count)s)
    INSERT INTO {BatchSnapshot._meta.db_table} (batch_id, version, observed_at, status, total_requests,
        completed_requests, failed_requests, input_tokens, cached_tokens, output_tokens, reasoning_tokens,
        total_tokens, output_file_id, error_file_id, errors, metadata)
    SELECT b.id, n.i, b.created_at, CASE WHEN n.i = %(count)s THEN b.status WHEN n.i = 1 THEN 'validating'
                                         WHEN n.i %% 2 = 0 THEN 'in_progress' ELSE 'finalizing' END,
        b.total_requests, b.completed_requests * n.i / %(count)s, b.failed_requests * n.i / %(count)s,
        b.input_tokens, 0, b.output_tokens, 0, b.total_tokens, '', '', {json("'[]'")}, NULL
    FROM {Batch._meta.db_table} b CROSS JOIN n"""
    per_batch = max(args.snapshots // max(args.batches, 1), 1)
    with _indexes_built_afterwards(db, [Batch, BatchSnapshot]), db.cursor() as cursor:
        base = (timezone.now() - timedelta(days=330)).strftime("%Y-%m-%d %H:%M:%S")
        cursor.execute(batches, {"count": args.batches, "base": base, "versions": per_batch,
                                 "step": 330 * 86400 / max(args.batches, 1),
                                 **{f"c{n}": c.pk for n, c in enumerate(connections)}})
        cursor.execute(snapshots, {"count": per_batch})

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


@contextmanager
def _indexes_built_afterwards(db, models):
    """PostgreSQL: drop the tables' indexes that back no constraint, and build them again at the end."""
    if db.vendor != "postgresql":
        yield
        return
    tables = [m._meta.db_table for m in models]
    with db.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) AND indexname NOT IN "
                       "(SELECT conname FROM pg_constraint)", [tables])
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    yield
    with db.cursor() as cursor:
        for _, definition in indexes:
            cursor.execute(definition)


def timed(client, url, **headers):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    db.queries_log.clear()  # it keeps 9,000 queries: once full, a capture would count none
    with CaptureQueriesContext(db) as queries:
        started = time.perf_counter()
        response = client.get(url, **headers)
        elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code in (200, 204), (url, response.status_code)
    return elapsed, len(queries), response


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


class Changes:
    """Changes stored through batches/store.py as a sync stores them: an active batch moves between
    in_progress and finalizing with one more request done (its status count and data version change)."""

    def __init__(self):
        from batches.models import ACTIVE_STATUSES, Batch, Connection
        from batches.payload import batch_fields

        self.fields = list(batch_fields({"id": "x"}))
        self.connections = {c.pk: c for c in Connection.objects.all()}
        self.pool = list(Batch.objects.filter(status__in=ACTIVE_STATUSES[1:3]).values_list("pk", flat=True)[:200])
        self.rng = random.Random(2)

    def make(self, pk=None) -> None:
        from batches.models import Batch
        from batches.store import store_fields

        batch = Batch.objects.get(pk=pk or self.rng.choice(self.pool))
        fields = {name: getattr(batch, name) for name in self.fields}
        if pk is None:
            fields["status"] = "finalizing" if batch.status == "in_progress" else "in_progress"
        fields["completed_requests"] = batch.completed_requests + 1
        store_fields(self.connections[batch.connection_id], fields)


def _older_link(response) -> str | None:
    found = re.search(r'href="([^"]*)" rel="next"', response.content.decode())
    return "/" + html.unescape(found.group(1)) if found else None


def _deep_url(client, query: str, size: int) -> str:
    """The pager's link to page DEEP_PAGE (or the last page), taken from the page before it."""
    sep = "&" if query else "?"
    page = DEEP_PAGE
    while page > 1:
        link = _older_link(client.get(f"/{query}{sep}page={page - 1}"))
        if link:
            return link
        page = max(1, page // 2)
    return "/" + query


def list_rows(client, settings, changes, rounds: int) -> list[tuple]:
    from batches.selectors import DEFAULT_SORT, SORT_LABELS

    # Every sort the list offers, first and deep pages.
    sorts = [f"?sort={name}" for name in SORT_LABELS if name != DEFAULT_SORT]
    samples = {}  # (label, size) -> {"warm": [...], "change": [...], "queries": n}
    for size in PAGE_SIZES:
        settings.LIST_PAGE_SIZE = size
        urls = [(q or "(no filter)", "/" + q) for q in dict.fromkeys(FILTERS + sorts)]
        urls += [(f"{q or '(no filter)'} deep", _deep_url(client, q, size)) for q in DEEP + sorts]
        urls.append(("(no filter) deep, typed", f"/?page={DEEP_PAGE}"))
        for label, url in urls:
            timed(client, url)  # templates and rows rendered once, as on a screen that stays open
            entry = samples.setdefault((label, size), {"warm": [], "change": [], "queries": 0})
            for _ in range(rounds):
                changes.make()
                for column in ("change", "warm"):
                    elapsed, queries, _ = timed(client, url)
                    entry[column].append(elapsed)
                    entry["queries"] = max(entry["queries"], queries)
    settings.LIST_PAGE_SIZE = 50

    def row(name, entries):
        warm = [t for e in entries for t in e["warm"]]
        change = [t for e in entries for t in e["change"]]
        return (name, len(warm) + len(change), f"{pct(warm, 50):.1f} / {pct(warm, 95):.1f}",
                f"{pct(change, 50):.1f} / {pct(change, 95):.1f}", max(e["queries"] for e in entries))

    labels = list(dict.fromkeys(label for label, _ in samples))
    rows = [row(f"list {label}", [samples[label, size] for size in PAGE_SIZES]) for label in labels]
    rows += [row(f"list, page size {size}", [samples[label, size] for label in labels]) for size in PAGE_SIZES]
    rows.append(row("list, everything above", list(samples.values())))
    return rows


def poll_bytes(client, page: str) -> tuple[float, int, int]:
    """An idle poll as it travels over HTTP/1.1: the request a browser sends (htmx's headers, the page's
    CSRF header, the cookies, the headers every browser request carries) and the 204 answer."""
    hx = {"HTTP_HX_REQUEST": "true", "HTTP_X_BATCHBOARD_POLL": "1"}
    fragment = client.get(page, **hx).content.decode()
    poll = html.unescape(re.search(r'hx-get="([^"]+)"', fragment).group(1))
    csrf = re.search(r'X-CSRFToken&quot;: &quot;([^&]+)&quot;|"X-CSRFToken": "([^"]+)"',
                     client.get(page).content.decode())
    origin = "https://batchboard.example.com"
    cookies = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
    request_headers = {
        "Host": origin.split("//")[1],
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                      "Chrome/131.0.0.0 Safari/537.36",
        "Accept": "*/*", "Accept-Language": "en-US,en;q=0.9", "Accept-Encoding": "gzip, deflate, br, zstd",
        "Referer": origin + page, "Connection": "keep-alive", "Cookie": cookies,
        "HX-Request": "true", "HX-Current-URL": origin + page, "HX-Target": "batch-live",
        "HX-Trigger": "batch-live", "X-Batchboard-Poll": "1",
        "X-CSRFToken": next(g for g in csrf.groups() if g) if csrf else "",
    }
    request = f"GET {poll} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request_headers.items()) + "\r\n"
    elapsed, queries, response = timed(client, poll, **hx)
    assert response.status_code == 204, (poll, response.status_code)
    answer = len(b"HTTP/1.1 204 No Content\r\n" + response.serialize_headers() + b"\r\n\r\n") + len(response.content)
    return elapsed, len(request.encode()), answer, queries


def run(args) -> None:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection as db
    from django.test import Client

    from batches.models import BatchSnapshot

    settings.ALLOWED_HOSTS = ["*"]
    parts = set(args.parts.split(","))
    detail, seconds = generate(args)
    admin = User.objects.create_superuser("bench", password="x")
    client = Client()
    client.force_login(admin)
    changes = Changes()
    rows, notes = [], []
    if "list" in parts:
        rows += list_rows(client, settings, changes, args.rounds)
    if "detail" in parts:
        detail_rows(client, changes, detail, args, rows, notes)
    if "explorer" in parts:
        explorer_seconds = generate_requests(args)
        rows += explorer_rows(client, settings, args, notes)
        notes.append(f"request index generated in {explorer_seconds:.0f}s")

    print(f"Page benchmark: {args.batches:,} batches, {BatchSnapshot.objects.count():,} snapshots "
          f"(generated in {seconds:.0f}s){_requests_note(parts)}; database {db.vendor}; {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    print(table(rows, ("measurement", "requests", "warm p50 / p95 ms", "after a change p50 / p95 ms",
                       "max queries")))
    print("\n".join(notes))


def _requests_note(parts) -> str:
    from batches.models import BatchRequest

    return f", {BatchRequest.objects.count():,} indexed requests" if "explorer" in parts else ""


def detail_rows(client, changes, detail, args, rows, notes) -> None:
    from django.urls import reverse
    from django.utils import timezone

    from batches.models import BatchSnapshot
    from batches.retention import thin_snapshots
    from batches.store import rebuild_batch_counts

    url = reverse("batch-detail", args=[detail.connection.slug, detail.batch_id])
    timed(client, url)
    warm, change, most = [], [], 0
    for _ in range(max(10, args.rounds * 10)):
        changes.make(detail.pk)
        for times in (change, warm):
            elapsed, queries, _ = timed(client, url)
            times.append(elapsed)
            most = max(most, queries)
    count = BatchSnapshot.objects.filter(batch=detail).count()
    rows.append((f"detail, {count:,} snapshots", len(warm) + len(change), f"{pct(warm, 50):.1f} / {pct(warm, 95):.1f}",
                 f"{pct(change, 50):.1f} / {pct(change, 95):.1f}", most))

    for name, page in (("list", "/?status=in_progress"), ("detail", url)):
        elapsed, sent, answered, queries = poll_bytes(client, page)
        rows.append((f"idle {name} poll (204)", 1, f"{elapsed:.1f}", "", queries))
        notes.append(f"idle {name} poll: {sent + answered} bytes ({sent} request + {answered} response)")

    now = timezone.now()
    for name, at in (("first run", now), ("the next hour's run", now + timedelta(hours=1))):
        started = time.perf_counter()
        deleted = thin_snapshots(now=at)
        notes.append(f"snapshot retention, {name}: {time.perf_counter() - started:.2f} s, {deleted:,} rows deleted")
    started = time.perf_counter()
    counted = rebuild_batch_counts()
    notes.append(f"rebuild_batch_counts: {time.perf_counter() - started:.2f} s for {counted:,} batches")


# ----- the results explorer ----------------------------------------------------------------------------------
# Of 1,000 requests: 930 succeed, 45 fail (a code below), 18 expire, 4 are cancelled, 3 never ran.
FAILURES = [("rate_limit_exceeded", 429, "Rate limit reached for gpt-4o-mini on requests per min.")] * 10 + [
    ("context_length_exceeded", 400, "This model's maximum context length is 128000 tokens.")] * 5 + [
    ("invalid_request", 400, "Invalid 'messages[1].content': string too long.")] * 4 + [
    ("server_error", 500, "The server had an error while processing your request.")]
# Previews as the index keeps them: an answer's first 120 characters (most answers are longer), short ones whole.
ANSWERS = ["Your refund has been approved and will arrive within five working days; we are sorry for the trouble "
           "with the parcel"[:120],
           "The capital of France is Paris, which is also its largest city and the seat of its government and its "
           "parliament"[:120],
           "Summary: the customer reports a damaged parcel, asks for a replacement or a refund, and mentions a "
           "previous complaint"[:120],
           "Translated: bonjour tout le monde, votre commande a été expédiée et arrivera demain matin avant midi, "
           "merci"[:120],
           "The customer asks about shipping times to Norway and whether customs fees are included in the price they "
           "paid"[:120],
           "Sentiment: positive, mentions delivery", "Category: billing; priority: low",
           "No personal data found in this message; it may be shared with the wider support team and stored as it "
           "is"[:120]]
# Filters (each a choice of one dimension) whose every combination is measured, with both sorts.
EXPLORER_DIMENSIONS = [
    ("", "outcome=failed", "outcome=succeeded", "outcome=expired"),
    ("", "error=rate_limit_exceeded", "error=server_error"),
    ("", "custom_id=0012"),
    ("", "q=refund", "q=no+such+words", "q=e"),
    ("", "sort=-tokens"),
]
EXPLORER_DEEP = ["", "sort=-tokens", "outcome=succeeded", "error=rate_limit_exceeded", "sort=tokens", "q=refund",
                 "custom_id=1"]


def _case(salt: int, values: list) -> str:
    """SQL choosing one of `values` (text or numbers) per row number i."""
    def literal(value) -> str:
        return str(value) if isinstance(value, int) else "'" + value.replace("'", "''").replace("%", "%%") + "'"

    cases = " ".join(f"WHEN {n} THEN {literal(v)}" for n, v in enumerate(values))
    return f"CASE {_hash(salt, len(values))} {cases} END"


def generate_requests(args) -> float:
    """BatchRequest rows for the first --request-batches completed batches, --requests-per-batch each, one
    INSERT … SELECT per batch (as the indexer fills one batch at a time), in an order unrelated to custom_id."""
    from django.db import connection as db
    from django.utils import timezone

    from batches.models import ArchivedFile, Batch, BatchRequest

    started = time.monotonic()
    codes, statuses, messages = ([f[k] for f in FAILURES] for k in range(3))
    insert = f"""WITH RECURSIVE n(j) AS (SELECT CAST(0 AS bigint) UNION ALL SELECT j + 1 FROM n WHERE j < %(per)s - 1),
    r AS (SELECT j, %(first)s + j AS i FROM n),
    o AS (SELECT j, i, {_hash(0, 1000)} AS h FROM r)
    INSERT INTO {BatchRequest._meta.db_table} (batch_id, custom_id, outcome, status_code, error_code, model,
        input_tokens, output_tokens, total_tokens, preview, input_offset, input_length, result_offset,
        result_length, result_in_error_file)
    SELECT %(batch)s, 'request-' || substr('0000000' || j, length('0000000' || j) - 6),
        CASE WHEN h < 930 THEN 1 WHEN h < 975 THEN 2 WHEN h < 993 THEN 3 WHEN h < 997 THEN 4 ELSE 5 END,
        CASE WHEN h < 930 THEN 200 WHEN h < 975 THEN {_case(1, statuses)} END,
        CASE WHEN h < 930 THEN '' WHEN h < 975 THEN {_case(1, codes)} WHEN h < 993 THEN 'batch_expired'
             WHEN h < 997 THEN 'batch_cancelled' ELSE '' END,
        '',
        CASE WHEN h < 930 THEN 50 + {_hash(2, 2000)} END, CASE WHEN h < 930 THEN 10 + {_hash(3, 800)} END,
        CASE WHEN h < 930 THEN 60 + {_hash(2, 2000)} + {_hash(3, 800)} END,
        CASE WHEN h < 930 THEN substr({_case(4, ANSWERS)} || ' (' || j || ')', 1, 120)
             WHEN h < 975 THEN {_case(1, messages)}
             WHEN h < 997 THEN 'This request could not be executed before the completion window expired.'
             ELSE '' END,
        j * 420, 420, CASE WHEN h < 997 THEN j * 900 END, CASE WHEN h < 997 THEN 900 END, h >= 930 AND h < 997
    FROM o ORDER BY {_hash(5, 1000003)}"""
    batch_ids = list(Batch.objects.filter(status="completed").order_by("id")
                     .values_list("id", flat=True)[:args.request_batches])
    with _indexes_built_afterwards(db, [BatchRequest]), db.cursor() as cursor:
        for n, batch_id in enumerate(batch_ids):
            cursor.execute(insert, {"per": args.requests_per_batch, "first": n * args.requests_per_batch,
                                    "batch": batch_id})
    Batch.objects.filter(id__in=batch_ids).update(
        total_requests=args.requests_per_batch, completed_requests=args.requests_per_batch * 930 // 1000,
        failed_requests=args.requests_per_batch * 45 // 1000)
    # Their files, archived and indexed (no bytes are written: the table's timing does not read them).
    now = timezone.now()
    ArchivedFile.objects.bulk_create([
        ArchivedFile(batch_id=batch_id, kind=kind, file_id=f"file-{kind}-{batch_id}", state="stored",
                     name=f"bench/absent-{batch_id}-{kind}", stored_at=now, indexed_at=now,
                     indexed_lines=args.requests_per_batch)
        for batch_id in batch_ids for kind in ("input", "output", "error")])
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {BatchRequest._meta.db_table}")
    return time.monotonic() - started


def _archive_a_few(batch, rows: list) -> list:
    """Small archived input, output and error files holding the lines of these requests of the batch, their
    rows pointed at them. Returns the rows."""
    import json

    from django.core.files.base import ContentFile

    from batches import archive
    from batches.models import ArchivedFile, BatchRequest
    data = {"input": b"", "output": b"", "error": b""}
    for row in rows:
        question = {"custom_id": row.custom_id, "method": "POST", "url": "/v1/chat/completions", "body": {
            "model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Answer briefly."},
                                                 {"role": "user", "content": f"Question {row.custom_id}?"}]}}
        if row.outcome == 1:
            result = {"id": "batch_req_1", "custom_id": row.custom_id, "error": None, "response": {
                "status_code": 200, "request_id": "req_1", "body": {"object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": row.preview}}],
                    "usage": {"total_tokens": row.total_tokens}}}}
        else:
            result = {"id": "batch_req_2", "custom_id": row.custom_id, "response": {
                "status_code": row.status_code, "request_id": "req_2",
                "body": {"error": {"code": row.error_code, "message": row.preview}}}, "error": None}
        kind = "error" if row.result_in_error_file else "output"
        row.input_offset, line = len(data["input"]), (json.dumps(question) + "\n").encode()
        row.input_length, data["input"] = len(line), data["input"] + line
        row.result_offset, line = len(data[kind]), (json.dumps(result) + "\n").encode()
        row.result_length, data[kind] = len(line), data[kind] + line
    BatchRequest.objects.bulk_update(rows, ["input_offset", "input_length", "result_offset", "result_length"])
    for kind, content in data.items():
        name = archive.storage().save(f"bench/{batch.pk}-{kind}.jsonl", ContentFile(content))
        ArchivedFile.objects.filter(batch=batch, kind=kind).update(name=name, bytes=len(content))
    return rows


def _deep_request_url(base: str, query: str, page: int, size: int) -> tuple[int, str]:
    """The pager's link to `page` of the explorer (or its last page, when it has fewer), cursor included, made
    from the row before that page."""
    from urllib.parse import parse_qs

    from batches import selectors
    from batches.converters import decode_id
    from batches.models import Batch

    slug, batch_id = base.strip("/").split("/")[1:3]
    batch = Batch.objects.get(connection__slug=slug, batch_id=decode_id(batch_id))
    filters = {k: v if k == "outcome" else v[0] for k, v in parse_qs(query).items()}
    rows = selectors.filtered_requests(batch, filters, content=True)
    page = min(page, max(1, (rows.count() - 1) // size + 1))
    if page == 1:
        return page, base + (f"?{query}" if query else "")
    before = rows[(page - 1) * size - 1]
    keys = selectors.REQUEST_SORTS[filters.get("sort") or selectors.DEFAULT_REQUEST_SORT]
    return page, f"{base}?{query + '&' if query else ''}page={page}&after={selectors._cursor(before, keys)}"


def explorer_rows(client, settings, args, notes) -> list[tuple]:
    from django.core.cache import cache
    from django.db import connection as db
    from django.urls import reverse

    from batches.models import Batch, BatchRequest

    batches = list(Batch.objects.filter(requests__isnull=False).distinct().order_by("id")
                   .select_related("connection"))
    if not batches:
        return []
    batch = batches[len(batches) // 2]
    base = reverse("batch-requests", args=[batch.connection.slug, batch.batch_id])
    size = settings.LIST_PAGE_SIZE
    rows = []

    def measure(label: str, url: str, times: int, *, batch_counted: bool = True) -> tuple:
        """Warm views, and first views (in the table's "after a change" column): the URL opened with its kept
        counts gone; the batch's own tally, counted once per batch, kept unless `batch_counted` is False."""
        timed(client, url)
        warm, first, most = [], [], 0
        for _ in range(times):
            for samples in (first, warm):
                if samples is first:
                    cache.clear()
                    if batch_counted:
                        timed(client, base)
                elapsed, queries, _ = timed(client, url)
                samples.append(elapsed)
                most = max(most, queries)
        return (label, 2 * times, f"{pct(warm, 50):.1f} / {pct(warm, 95):.1f}",
                f"{pct(first, 50):.1f} / {pct(first, 95):.1f}", most), warm + first

    row, _ = measure("explorer, the batch's first view (nothing counted yet)", base, args.rounds, batch_counted=False)
    rows.append(row)
    everything, worst = [], []
    for combination in itertools.product(*EXPLORER_DIMENSIONS):
        query = "&".join(part for part in combination if part)
        row, samples = measure(f"explorer ?{query}" if query else "explorer (no filter)",
                               base + (f"?{query}" if query else ""), args.rounds)
        rows.append(row)
        everything += samples
        worst.append((pct(samples, 95), row[0]))
    deep_page = max(2, args.requests_per_batch // size // 2)
    for query in EXPLORER_DEEP:
        page, url = _deep_request_url(base, query, deep_page, size)
        row, samples = measure(f"explorer {'?' + query if query else '(no filter)'} page {page:,}"
                               f"{' (cursor)' if page > 1 else ''}", url, args.rounds)
        rows.append(row)
        everything += samples
        worst.append((pct(samples, 95), row[0]))
    rows.append(("explorer, every filter combination and deep page (warm and first views)", len(everything),
                 f"{pct(everything, 50):.1f} / {pct(everything, 95):.1f}", "", max(r[4] for r in rows)))
    notes.append("explorer rows: 'after a change' is the first view of the URL (its search's count not kept yet; "
                 "the batch's tally, counted on its first view, kept)")
    notes.append("explorer, slowest p95s: " + "; ".join(f"{label} {ms:.1f} ms" for ms, label in
                                                         sorted(worst, reverse=True)[:5]))

    archived = _archive_a_few(batch, list(BatchRequest.objects.filter(batch=batch).order_by("custom_id")[:40]))
    picks = [("succeeded", next(r for r in archived if r.outcome == 1)),
             ("failed", next((r for r in archived if r.outcome == 2), archived[-1]))]
    for label, request in picks:
        url = reverse("batch-request", args=[batch.connection.slug, batch.batch_id, request.custom_id])
        row, _ = measure(f"one request ({label})", url, max(10, args.rounds * 10))
        rows.append(row)
    # The links to the previous and next failed request where failures are rare (their search reads the batch's
    # failed rows once) or absent (no search): another batch, its failures turned into successes but a few.
    other = batches[len(batches) // 2 + 1] if len(batches) > 1 else None
    if other is not None:
        middle = BatchRequest.objects.filter(batch=other).order_by("custom_id")[args.requests_per_batch // 2]
        _archive_a_few(other, [middle])
        for label, keep in (("1 in 10,000 failed", max(1, args.requests_per_batch // 10_000)), ("none failed", 0)):
            failed = BatchRequest.objects.filter(batch=other, outcome=2).order_by("custom_id")
            kept = list(failed.values_list("custom_id", flat=True)[:keep])
            failed.exclude(custom_id__in=kept).update(outcome=1, status_code=200, error_code="")
            url = reverse("batch-request", args=[other.connection.slug, other.batch_id, middle.custom_id])
            row, _ = measure(f"one request ({label} in its batch)", url, max(10, args.rounds * 10))
            rows.append(row)

    for query in ("request_error=rate_limit_exceeded", "request_error=server_error",
                  "request_error=batch_expired&status=completed", "request_error=no_such_code",
                  "request_error=rate_limit_exceeded&sort=-tokens"):
        row, _ = measure(f"list ?{query}", f"/?{query}", args.rounds)
        rows.append(row)
    deep = _deep_url(client, "?request_error=rate_limit_exceeded", size)
    row, _ = measure("list ?request_error=rate_limit_exceeded deep", deep, args.rounds)
    rows.append(row)

    started = time.perf_counter()
    response = client.get(reverse("batch-requests-export", args=[batch.connection.slug, batch.batch_id, "csv"]))
    sent = sum(len(chunk) for chunk in response.streaming_content)
    response.close()
    notes.append(f"CSV export of {args.requests_per_batch:,} requests: {sent / 1e6:.1f} MB in "
                 f"{time.perf_counter() - started:.2f} s")
    count = BatchRequest.objects.count()
    if db.vendor == "postgresql" and count:
        with db.cursor() as cursor:
            table_name = BatchRequest._meta.db_table
            cursor.execute("SELECT pg_relation_size(%s), pg_indexes_size(%s), pg_total_relation_size(%s)",
                           [table_name] * 3)
            heap, indexes, total = cursor.fetchone()
            cursor.execute("SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
                           "WHERE indrelid = %s::regclass", [table_name])
            each = ", ".join(f"{name} {size_ / count:.1f}" for name, size_ in cursor.fetchall())
        notes.append(f"request index size: {total / count:.0f} bytes per request in all (rows {heap / count:.0f}, "
                     f"indexes {indexes / count:.0f}: {each}; TOAST and maps the rest), {count:,} requests")
    return rows


if __name__ == "__main__":
    main()
