"""The archive: copies of finished batches' files in Batchboard's own storage (STORAGES["archive"]: a directory
by default, an S3-compatible bucket with ARCHIVE_S3_BUCKET), kept after the API deletes the originals.

Reading an archived file goes through the two functions below, whatever the storage: `stream` for the whole
file (or its tail from an offset), `read_range` for one request's line.

Copying is an outbox, like the sync's schedule: batches/store.py adds a row per file when it stores a batch
turning terminal (plan_copies), beat claims the rows due (claim_due_files) and the `archive` queue copies each
(copy_file). A copy is:
1. claimed, so that no other worker copies the same file (the claim is renewed while the bytes arrive, and a
   killed worker's claim lapses after CLAIM_SECONDS);
2. streamed from the API into a temporary file on local disk, hashed (SHA-256) and counted on the way;
3. checked against the byte count of the API's file metadata;
4. stored in one step, under a name derived from its hash: a rename on the filesystem, a single upload on S3
   (visible only once complete). Nothing is ever half-stored;
5. recorded as STORED; once every file of the batch is STORED (or GONE), the request index is enqueued.
A failed copy is retried with backoff; a file the API answers 404 for before it was copied is GONE.
"""

import hashlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages
from django.db import DatabaseError
from django.db.models import F, Q
from django.utils import timezone

from .client import ApiError, BatchApi, PermanentError, stream_chunks
from .models import STATUS_TIMESTAMP, TERMINAL_STATUSES, ArchivedFile, Batch
from .redact import shown

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
POLICY_KINDS = {"all": ("input", "output", "error"), "results": ("output", "error"), "none": ()}
_DUE = (ArchivedFile.PENDING, ArchivedFile.FAILED)
# A claimed copy waits this long in the queue at most (the task then expires) before beat may claim it again.
QUEUED_SECONDS = 600
# A running copy renews its claim every RENEW_SECONDS for CLAIM_SECONDS: a killed worker delays it that long.
CLAIM_SECONDS = 120
RENEW_SECONDS = 30
_BACKOFF_CAP = 6 * 3600
# Uploading a verified copy is not renewed; its claim assumes the bucket takes at least 1 MB/s.
_UPLOAD_BYTES_PER_SECOND = 1 << 20
# Temporary files older than this were left by a killed worker; the hourly cleanup removes them.
_ABANDONED_SECONDS = 2 * 3600


def storage():
    return storages["archive"]


# ----- reading ------------------------------------------------------------------------------------
def stream(archived: ArchivedFile, *, start: int = 0, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The stored copy's bytes from `start` on, chunk by chunk."""
    s3_object = _s3_object(archived.name)
    if s3_object is not None:  # S3File would download the whole object first: one streamed GET instead
        if archived.bytes is not None and start >= archived.bytes:
            return
        body = s3_object.get(**({"Range": f"bytes={start}-"} if start else {}))["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()
        return
    with storage().open(archived.name, "rb") as f:
        f.seek(start)
        while chunk := f.read(chunk_size):
            yield chunk


def read_range(archived: ArchivedFile, offset: int, length: int) -> bytes:
    """`length` bytes of the stored copy from `offset`: one request's line, without reading the rest."""
    if length <= 0:
        return b""
    s3_object = _s3_object(archived.name)
    if s3_object is not None:
        if archived.bytes is not None and offset >= archived.bytes:
            return b""  # S3 answers 416 for a range that starts past the end
        body = s3_object.get(Range=f"bytes={offset}-{offset + length - 1}")["Body"]
        try:
            return body.read()
        finally:
            body.close()
    with storage().open(archived.name, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _s3_object(name: str):
    """The boto3 Object of a name in the archive when it is an S3 bucket, else None. The module is loaded only
    when STORAGES names it, so the filesystem archive never imports boto3."""
    archive = storage()
    return archive.bucket.Object(_s3_key(archive, name)) if _is_s3(archive) else None


def _is_s3(archive) -> bool:
    s3 = sys.modules.get("storages.backends.s3")
    return s3 is not None and isinstance(archive, s3.S3Storage)


def _s3_key(archive, name: str) -> str:
    from storages.utils import clean_name

    return archive._normalize_name(clean_name(name))  # the prefix (ARCHIVE_S3_PREFIX) joined as S3Storage does


def stored_copy(batch: Batch, kind: str) -> ArchivedFile | None:
    return ArchivedFile.objects.filter(batch=batch, kind=kind, state=ArchivedFile.STORED).first()


def copies_by_kind(batch: Batch) -> dict[str, ArchivedFile]:
    return {copy.kind: copy for copy in ArchivedFile.objects.filter(batch=batch)}


# ----- planning (batches/store.py, in the transaction that stores the batch) ----------------------
def plan_copies(batch: Batch, *, was: str | None, now: datetime) -> int:
    """Add a row due now for each file of a batch just stored as terminal that ARCHIVE_FILES keeps; `was` is
    the status stored before (None: the batch is new). A batch Batchboard saw finishing always qualifies; one
    already finished when first seen only if it finished within ARCHIVE_BACKFILL_DAYS (so a first import of
    years of batches downloads nothing by default); a finished batch already archived gets rows for files that
    appeared since. Returns the rows added."""
    kinds = [kind for kind in POLICY_KINDS[settings.ARCHIVE_FILES] if batch.file_id(kind)]
    if not kinds or not batch.is_terminal:
        return 0
    if was is None:
        qualifies = _within_backfill(batch, now)
    elif was not in TERMINAL_STATUSES:
        qualifies = True
    else:
        qualifies = _within_backfill(batch, now) or batch.archived_files.exists()
    if not qualifies:
        return 0
    rows = [ArchivedFile(batch=batch, kind=kind, file_id=batch.file_id(kind), next_attempt_at=now) for kind in kinds]
    return len(ArchivedFile.objects.bulk_create(rows, ignore_conflicts=True))


def plan_stored_batches(*, days: float, now: datetime | None = None) -> int:
    """Add rows due now for the files of batches already stored as finished within the last `days` days (an
    upgrade, or ARCHIVE_BACKFILL_DAYS raised later): plan_copies only sees batches as a sync stores them. Files
    that have a row already are left as they are. Returns the rows added."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    finished = Q()
    for status in TERMINAL_STATUSES:
        finished |= Q(status=status, **{f"{STATUS_TIMESTAMP[status]}__gte": cutoff})
    added = 0
    for batch in Batch.objects.filter(finished).iterator(chunk_size=500):
        planned = set(batch.archived_files.values_list("kind", flat=True))
        rows = [ArchivedFile(batch=batch, kind=kind, file_id=batch.file_id(kind), next_attempt_at=now)
                for kind in POLICY_KINDS[settings.ARCHIVE_FILES] if batch.file_id(kind) and kind not in planned]
        ArchivedFile.objects.bulk_create(rows, ignore_conflicts=True)  # a sync may plan one meanwhile
        added += len(rows)
    return added


def _within_backfill(batch: Batch, now: datetime) -> bool:
    finished = batch.status_since
    days = settings.ARCHIVE_BACKFILL_DAYS
    return bool(days) and finished is not None and finished >= now - timedelta(days=days)


# ----- copying ------------------------------------------------------------------------------------
def claim_due_files(*, now: datetime | None = None, limit: int = 200) -> list[tuple[int, str]]:
    """Claim the copies due now (new ones, and failed ones whose backoff has passed), oldest first, for
    QUEUED_SECONDS. Returns (row id, claim) pairs: the claim is the copy task's token."""
    now = now or timezone.now()
    until = now + timedelta(seconds=QUEUED_SECONDS)
    due = (ArchivedFile.objects.filter(state__in=_DUE, next_attempt_at__lte=now)  # the archived_file_due index
           .order_by("next_attempt_at").values_list("pk", "next_attempt_at")[:limit])
    return [(pk, until.isoformat()) for pk, at in due if _move_claim(pk, at, until)]


def _move_claim(pk: int, held: datetime, until: datetime) -> bool:
    """Move a row's claim from `held` to `until`, if nobody moved it meanwhile (a conditional UPDATE)."""
    return ArchivedFile.objects.filter(pk=pk, state__in=_DUE, next_attempt_at=held).update(next_attempt_at=until) == 1


class _CopyFailed(Exception):
    """The copy cannot be stored: what to show, and whether to try again."""

    def __init__(self, message: str, *, gone: bool = False):
        super().__init__(message)
        self.message, self.gone = message, gone


class _ClaimLost(Exception):
    """Another worker holds this copy now (ours lapsed): stop without recording anything."""


def copy_file(archived_pk: int, *, claimed_until: str) -> str:
    """Copy one claimed file into the archive (the steps are in the module's docstring). Returns what happened:
    stored, gone, failed, or skipped (not ours to copy)."""
    archived = ArchivedFile.objects.select_related("batch__connection").filter(pk=archived_pk).first()
    claim = timezone.now() + timedelta(seconds=CLAIM_SECONDS)
    if archived is None or not _move_claim(archived_pk, datetime.fromisoformat(claimed_until), claim):
        return "skipped"
    copy = _Copy(archived, claim)
    try:
        copy.run()
    except _ClaimLost:
        log.warning("The archive copy of %s %s was taken over by another worker", archived.batch_id, archived.kind)
        return "skipped"
    except _CopyFailed as exc:
        return copy.record_failure(exc)
    except DatabaseError:
        raise  # the task retries; our claim lapses meanwhile
    except Exception as exc:  # noqa: BLE001 - a storage error or a bug: show it safely, retry later
        log.exception("The archive copy of %s %s failed", archived.batch_id, archived.kind)
        return copy.record_failure(_CopyFailed(f"the copy could not be stored: {_problem(exc)}"))
    finally:
        copy.discard_temporary()
    _index_when_complete(archived.batch_id)
    return "stored"


class _Copy:
    def __init__(self, archived: ArchivedFile, claim: datetime):
        self.archived, self.claim = archived, claim
        self.path = ""
        self.renewed = time.monotonic()

    def run(self) -> None:
        archived = self.archived
        sha256, size = self._download()
        name = f"{sha256[:2]}/{sha256}-{archived.pk}.jsonl"  # from the hash and our row, never from an API id
        self._renew(CLAIM_SECONDS + size / _UPLOAD_BYTES_PER_SECOND)
        name = _save(name, self.path)
        stored = ArchivedFile.objects.filter(pk=archived.pk, state__in=_DUE, next_attempt_at=self.claim).update(
            state=ArchivedFile.STORED, name=name, bytes=size, sha256=sha256, stored_at=timezone.now(),
            last_error="", next_attempt_at=None)
        if not stored:
            if ArchivedFile.objects.filter(pk=archived.pk).values_list("name", flat=True).first() != name:
                storage().delete(name)
            raise _ClaimLost

    def _download(self) -> tuple[str, int]:
        """Stream the file into a temporary file while hashing and counting it; check the count."""
        archived = self.archived
        os.makedirs(settings.ARCHIVE_TMP_DIR, mode=0o700, exist_ok=True)
        descriptor, self.path = tempfile.mkstemp(prefix="copy-", suffix=".part", dir=settings.ARCHIVE_TMP_DIR)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(descriptor, "wb") as out, BatchApi.for_connection(archived.batch.connection) as api:
                expected = api.file_metadata(archived.file_id).get("bytes")
                if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
                    raise _CopyFailed("the API's file metadata has no byte count to check the copy against")
                response = api.file_content(archived.file_id)
                try:
                    for chunk in stream_chunks(response, seconds=settings.ARCHIVE_COPY_SECONDS, chunk_size=CHUNK_BYTES):
                        size += len(chunk)
                        if size > expected:
                            break
                        digest.update(chunk)
                        out.write(chunk)
                        if time.monotonic() - self.renewed > RENEW_SECONDS:
                            self._renew(CLAIM_SECONDS)
                finally:
                    response.close()
        except ApiError as exc:
            gone = isinstance(exc, PermanentError) and exc.status == 404
            raise _CopyFailed("the API had deleted it before it was copied" if gone else str(exc), gone=gone) from None
        if size != expected:
            more = "more than" if size > expected else f"{size:,} bytes, not"
            raise _CopyFailed(f"the API sent {more} the {expected:,} bytes its file metadata announces")
        return digest.hexdigest(), size

    def _renew(self, seconds: float) -> None:
        claim = timezone.now() + timedelta(seconds=seconds)
        if not _move_claim(self.archived.pk, self.claim, claim):
            raise _ClaimLost
        self.claim, self.renewed = claim, time.monotonic()

    def record_failure(self, exc: _CopyFailed) -> str:
        archived = self.archived
        message = shown(exc.message)
        attempts = archived.attempts + 1
        if exc.gone:
            state, retry_at = ArchivedFile.GONE, None
        else:
            state = ArchivedFile.FAILED
            delay = min(settings.ARCHIVE_RETRY_SECONDS * 2 ** (attempts - 1), _BACKOFF_CAP)
            retry_at = timezone.now() + timedelta(seconds=delay) if attempts < settings.ARCHIVE_MAX_ATTEMPTS else None
        if not ArchivedFile.objects.filter(pk=archived.pk, state__in=_DUE, next_attempt_at=self.claim).update(
                state=state, attempts=F("attempts") + 1, last_error=message, next_attempt_at=retry_at):
            return "skipped"
        log.warning("The archive copy of %s %s (attempt %d) %s: %s", archived.batch_id, archived.kind, attempts,
                    "found it gone" if state == ArchivedFile.GONE else "failed", message)
        if state == ArchivedFile.GONE:
            _index_when_complete(archived.batch_id)
            return "gone"
        return "failed"

    def discard_temporary(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:  # moved into the archive
                pass


class _Verified(File):
    """A checked temporary copy: FileSystemStorage moves a file that has a temporary_file_path() (a rename on
    the same filesystem) instead of writing it again, so the archive never shows part of it."""

    def temporary_file_path(self) -> str:
        return self.file.name


def _save(name: str, path: str) -> str:
    """Store the verified temporary file under `name` (or a free variant of it); returns the name used."""
    archive = storage()
    if _is_s3(archive):
        from boto3.s3.transfer import TransferConfig

        # From the file's path, s3transfer reads each part from disk as it sends it (from a file object it would
        # read every 8 MB part into memory first). Each upload thread then holds about 2 MB (botocore reads a part
        # in 1 MB pieces to sign and checksum it): two threads keep a copy's memory small.
        archive.bucket.upload_file(path, _s3_key(archive, name), Config=TransferConfig(max_concurrency=2),
                                   ExtraArgs={"ContentType": "application/jsonl"})
        return name
    with open(path, "rb") as f:
        return archive.save(name, _Verified(f, name=name))


def _problem(exc: Exception) -> str:
    """What to show of a storage error (or a bug): its kind and, from S3, its error code; never its text,
    which may name endpoints, keys or signatures."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return type(exc).__name__ + (f" ({code})" if isinstance(code, str) and code.isalnum() else "")


def _index_when_complete(batch_pk: int) -> None:
    """Enqueue the request index once every file of the batch is STORED or GONE (and some are stored). Called
    after each copy's own row is committed, so of two copies ending together at least the later one sees both."""
    from .tasks import index_batch_requests  # tasks call into this module

    states = set(ArchivedFile.objects.filter(batch_id=batch_pk).values_list("state", flat=True))
    if ArchivedFile.STORED not in states or not states <= {ArchivedFile.STORED, ArchivedFile.GONE}:
        return
    try:
        index_batch_requests.delay(batch_pk)
    except Exception:  # noqa: BLE001 - the copies are stored; only the index waits
        log.warning("The request index of batch pk %s could not be enqueued", batch_pk, exc_info=True)


# ----- retention ----------------------------------------------------------------------------------
def remove_expired_copies(*, now: datetime | None = None, chunk: int = 500) -> int:
    """Delete the copies stored more than ARCHIVE_RETENTION_DAYS ago and mark them REMOVED (their request index
    rows stay; pages read "body expired" from the file's state). Each object is deleted before its row says
    so: a run cut short leaves a row to finish next time, never a copy kept past its time. Returns how many."""
    now = now or timezone.now()
    _remove_abandoned_temporaries()
    if not settings.ARCHIVE_RETENTION_DAYS:
        return 0
    cutoff = now - timedelta(days=settings.ARCHIVE_RETENTION_DAYS)
    archive, removed, failed = storage(), 0, set()
    while True:
        rows = list(ArchivedFile.objects.filter(state=ArchivedFile.STORED, stored_at__lt=cutoff)  # archived_file_stored
                    .exclude(pk__in=failed).order_by("stored_at").values_list("pk", "name")[:chunk])
        if not rows:
            return removed
        deleted = []
        for pk, name in rows:
            try:
                archive.delete(name)
                deleted.append(pk)
            except Exception as exc:  # noqa: BLE001 - the storage is down: try this one again next run
                log.warning("Archive retention could not delete a copy (row %s): %s", pk, _problem(exc))
                failed.add(pk)
        removed += ArchivedFile.objects.filter(pk__in=deleted, state=ArchivedFile.STORED).update(
            state=ArchivedFile.REMOVED, removed_at=now)


def _remove_abandoned_temporaries() -> None:
    try:
        entries = list(os.scandir(settings.ARCHIVE_TMP_DIR))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.name.endswith(".part") and time.time() - entry.stat().st_mtime > _ABANDONED_SECONDS:
                os.unlink(entry.path)
        except FileNotFoundError:
            pass
