"""What operators do to a batch: cancel, refresh, download, retry; and submitting new batches. Each call is
audited."""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from . import archive, files, retries, uploads
from .client import ApiError, BatchApi, PermanentError, TransientError, stream_chunks
from .models import AuditEvent, Batch, Connection, KeyUnreadable, Submission, SubmissionPart, api_host_problem
from .payload import MalformedPayload
from .store import link_submission, store_batch
from .sync import refresh_batch

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    ok: bool
    message: str
    request_id: str = ""
    info: bool = False  # nothing was done, and nothing went wrong either


def audit(*, user, action: str, batch: Batch, outcome: Outcome, detail: str = "") -> AuditEvent:
    return AuditEvent.objects.create(
        user=user if getattr(user, "is_authenticated", False) else None,
        username=getattr(user, "username", "")[:150],
        action=action,
        connection=batch.connection,
        batch=batch,
        batch_id_text=batch.batch_id,
        detail=detail[:255],
        ok=outcome.ok,
        result=outcome.message[:2000],
        request_id=outcome.request_id[:255],
    )


def key_problem(connection: Connection) -> str:
    """What to tell the user when the stored API key cannot be used: it cannot be decrypted (it was encrypted
    with a key no longer in BATCHBOARD_ENCRYPTION_KEYS) or may not be sent to the connection's host
    (ALLOWED_API_HOSTS); "" when it can. Checked before any call is attempted."""
    if problem := api_host_problem(connection.base_url):
        return f"{problem}. Change the connection's base URL in the admin ({connection.name})."
    try:
        connection.api_key
    except KeyUnreadable as exc:
        return f"{exc}, on the connection's page in the admin ({connection.name})."
    return ""


def cancel(*, batch: Batch, user) -> Outcome:
    """Ask the API to cancel, store what it answers, audit. A batch already cancelling is not re-sent."""
    batch.refresh_from_db()
    if batch.status == "cancelling":
        outcome = Outcome(True, "Already cancelling; nothing sent again.", info=True)
    elif not batch.is_cancellable:
        outcome = Outcome(False, f"A {batch.status} batch cannot be cancelled.")
    elif problem := key_problem(batch.connection):
        outcome = Outcome(False, problem)
    else:
        api = BatchApi.for_connection(batch.connection)
        try:
            payload, request_id = api.cancel_batch(batch.batch_id)
            store_batch(batch.connection, payload)
            outcome = Outcome(True, "Cancel requested. Cancelling can take up to 10 minutes; "
                              "finished results are kept.", request_id)
        except ApiError as exc:
            outcome = Outcome(False, f"The API refused the cancel: {exc}", exc.request_id)
        except MalformedPayload as exc:
            outcome = Outcome(True, f"Cancel sent, but the answer was unreadable ({exc}); the next sync shows it.")
        finally:
            api.close()
    audit(user=user, action="cancel", batch=batch, outcome=outcome)
    return outcome


def refresh(*, batch: Batch, user) -> Outcome:
    if problem := key_problem(batch.connection):
        outcome = Outcome(False, problem)
    else:
        try:
            _, what = refresh_batch(connection=batch.connection, batch_id=batch.batch_id)
            outcome = Outcome(True, "Refreshed: no change." if what == "unchanged" else "Refreshed: updated.")
        except (ApiError, MalformedPayload) as exc:
            outcome = Outcome(False, f"Refresh failed: {exc}", getattr(exc, "request_id", ""))
    audit(user=user, action="refresh", batch=batch, outcome=outcome)
    return outcome


class AuditedStream:
    """Bytes on their way to a user. Iterate for them; the WSGI server calls close() when the response ends,
    however it ends, and that audits it once, as a download of `detail`, with its outcome (completed, or cut and
    why) and the bytes the server really sent. Subclasses say what it is (`label`, `note`), why a read failed,
    and what to give back."""

    note = ""  # after "completed" / "bytes sent": where the bytes came from

    def __init__(self, chunks, *, batch: Batch, user, detail: str, label: str):
        self.chunks, self.batch, self.user, self.detail, self.label = iter(chunks), batch, user, detail, label
        self.sent = self.handed = 0
        self.ending = "the client went away"  # unless the stream ends first
        self.closed = False

    def __iter__(self) -> "AuditedStream":
        return self

    def __next__(self) -> bytes:
        self.sent += self.handed  # the server asks for more only once it has sent the chunk it had
        self.handed = 0
        self.before_chunk()
        try:
            chunk = next(self.chunks)
        except StopIteration:
            self.ending = ""
            raise
        except Exception as exc:
            self.ending = self.why_cut(exc)
            raise
        self.handed = len(chunk)
        return chunk

    def before_chunk(self) -> None:
        pass

    def why_cut(self, exc: Exception) -> str:
        return f"it could not be read ({type(exc).__name__})"

    def release(self) -> None:
        pass

    def request_id(self) -> str:
        return ""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.release()
        if self.ending:
            outcome = Outcome(False, f"{self.label}: cut after {self.sent:,} bytes sent{self.note}: {self.ending}",
                              self.request_id())
        else:
            outcome = Outcome(True, f"{self.label}: completed{self.note}, {self.sent:,} bytes sent", self.request_id())
        try:
            audit(user=self.user, action="download", batch=self.batch, detail=self.detail, outcome=outcome)
        except Exception:  # Django swallows errors of close(): say it here
            log.exception("The download %s could not be audited: %s", self.label, outcome.message)


class Download(AuditedStream):
    """A batch file from the API (holding one of its connection's stream slots, given back at the end) or from
    the archive (which needs no slot)."""

    def __init__(self, *, batch: Batch, kind: str, user, api: BatchApi | None = None,
                 upstream: requests.Response | None = None, slot: str | None = None, stored=None, first: bytes = b""):
        self.kind, self.api, self.upstream, self.slot = kind, api, upstream, slot
        self.stored = stored  # the archive's stream, its first chunk already read
        self.source = "api" if stored is None else "archive"
        self.note = " from the archive" if stored is not None else ""
        chunks = (stream_chunks(upstream, chunk_size=settings.DOWNLOAD_CHUNK_BYTES) if stored is None
                  else _first_then(first, stored))
        super().__init__(chunks, batch=batch, user=user, detail=kind, label=batch.file_id(kind))
        self.renewed = time.monotonic()

    @classmethod
    def from_archive(cls, *, batch: Batch, kind: str, user, archived) -> "Download | None":
        """The archived copy as a download, or None when it cannot be read (logged): the API serves it then,
        if it still has it. Its first chunk is read here, so that an unreadable copy is known before a
        response starts."""
        chunks = archive.stream(archived, chunk_size=settings.DOWNLOAD_CHUNK_BYTES)
        try:
            first = next(chunks, b"")
        except Exception:  # noqa: BLE001 - a missing object, a storage outage
            log.warning("The archived %s file of %s could not be read; asking the API", kind, batch.batch_id,
                        exc_info=True)
            chunks.close()
            return None
        return cls(batch=batch, kind=kind, user=user, stored=chunks, first=first)

    def before_chunk(self) -> None:
        if self.slot and time.monotonic() - self.renewed > files.STREAM_SLOT_RENEW_SECONDS:
            files.renew_stream_slot(self.slot)
            self.renewed = time.monotonic()

    def why_cut(self, exc: Exception) -> str:
        if isinstance(exc, TransientError):
            return exc.message
        if self.source == "archive":
            return f"the archive could not be read ({type(exc).__name__})"
        return self.ending

    def release(self) -> None:
        if self.source == "archive":
            self.stored.close()
        else:
            self.upstream.close()
            self.api.close()
            files.give_back_stream_slot(self.slot)

    def request_id(self) -> str:
        return self.upstream.headers.get("x-request-id", "") if self.upstream is not None else ""


def _first_then(first: bytes, rest):
    if first:
        yield first
    yield from rest


# ----- submitting batches (retries and uploads) ------------------------------------------------------------
# How far before a call was sent a lost answer's file or batch is looked for: the API's clock may differ.
_CLOCK_SLACK = timedelta(minutes=10)
# Pages of GET /files or GET /batches read when looking for one (newest first).
_SEARCH_PAGES = 20


class _HourlyLimit(Exception):
    pass


def record_submission(*, token: str, user, **fields) -> tuple[Submission, bool]:
    """The submission of this token: recorded now (before any API call), or the one already recorded with it
    (a double click, a repeated POST). Returns it and whether it is new."""
    try:
        with transaction.atomic():
            submission = Submission.objects.create(
                token=token, user=user if getattr(user, "is_authenticated", False) else None,
                username=getattr(user, "username", "")[:150], **fields)
        return submission, True
    except IntegrityError:
        return Submission.objects.get(token=token), False


def submit(*, submission: Submission, user) -> Outcome:
    """Send a recorded submission's parts to the API, each as one upload and one batch, and never twice:

    1. Claim it (a lease): a second request with the same token meanwhile does nothing.
    2. Build its part files once, before the first call (a retry's lines from the archive, an upload's from
       the staged file), within the API's per-batch limits.
    3. For each part without a batch: the file. If an upload was sent and not answered, look for a file of the
       part's filename (which carries the token) before uploading again.
    4. The batch. If a create was sent and not answered, walk the head of the batch list for one whose
       `batchboard_intent` names the part; a sync that sees it first links it just the same (store.py). Only
       when none exists, and within BATCH_CREATIONS_PER_HOUR, create it.
    Whatever stops it (a lost answer, a crash, the hourly limit) leaves it resumable: the same token again
    picks it up where it stopped."""
    submission.refresh_from_db()
    if submission.state == Submission.DONE:
        return Outcome(True, _created_message(submission, "Already submitted"), info=True)
    now = timezone.now()
    lease = _Lease(submission, now + timedelta(seconds=settings.SUBMIT_LEASE_SECONDS))
    claimed = Submission.objects.filter(pk=submission.pk).filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now)).exclude(state=Submission.DONE).update(
        lease_until=lease.until, state=Submission.SUBMITTING)
    if not claimed:
        return Outcome(True, "This submission is being sent by another request right now; nothing was sent "
                       "again.", info=True)
    state, error = Submission.INTERRUPTED, ""
    try:
        if problem := key_problem(submission.connection):
            raise PermanentError(problem, error_type="configuration")
        parts = _build_parts(submission)
        with BatchApi.for_connection(submission.connection) as api:
            for part in parts:
                _send_part(api, submission, part, user, lease)
        state = Submission.DONE
        outcome = Outcome(True, _created_message(submission, "Submitted"))
    except _LeaseLost:
        return Outcome(True, "Another request took this submission over (ours ran past SUBMIT_LEASE_SECONDS); it "
                       "carries on, and nothing was sent twice.", info=True)
    except _HourlyLimit as exc:
        error = str(exc)
    except PermanentError as exc:
        state = Submission.REFUSED if exc.error_type != "configuration" else Submission.INTERRUPTED
        error = f"The API refused it: {exc}" if exc.error_type != "configuration" else str(exc)
    except (ApiError, MalformedPayload) as exc:
        error = f"Interrupted: {exc}. Nothing is sent twice: resume to finish."
    except (OSError, retries.ArchiveIncomplete) as exc:
        error = f"Interrupted: the file could not be read or written ({type(exc).__name__}: {exc})."
    finally:
        Submission.objects.filter(pk=submission.pk, lease_until=lease.until).update(  # unless taken over
            state=state, lease_until=None, last_error=error[:2000],
            finished_at=timezone.now() if state == Submission.DONE else None)
        submission.refresh_from_db()
    if state != Submission.DONE:
        outcome = Outcome(False, error)
        _audit_submission(submission, user, outcome)
    return outcome


def _created_message(submission: Submission, verb: str) -> str:
    ids = [part.batch_id_text for part in submission.parts.all() if part.batch_id_text]
    return f"{verb}: {len(ids)} batch{'es' if len(ids) != 1 else ''} ({', '.join(ids)})."


def _build_parts(submission: Submission) -> list[SubmissionPart]:
    parts = list(submission.parts.all())
    if parts:
        return parts
    if submission.kind == Submission.RETRY:
        rows = retries.retry_requests(submission.parent, outcomes=submission.selection.get("outcomes", []),
                                      codes=submission.selection.get("codes", []))
        lines = retries.retry_lines(submission.parent, rows)
    else:
        lines = uploads.staged_lines(submission.source)
    built = retries.write_parts(lines, prefix=f"submissions/{submission.token}")
    with transaction.atomic():
        parts = [SubmissionPart.objects.create(submission=submission, number=number, **spec)
                 for number, spec in enumerate(built, 1)]
        Submission.objects.filter(pk=submission.pk).update(requests=sum(p.requests for p in parts),
                                                           bytes=sum(p.bytes for p in parts))
    return parts


class _LeaseLost(Exception):
    """Our lease on a submission ran out and another request holds it now: stop before sending anything."""


class _Lease:
    """A request's hold on a submission (Submission.lease_until), renewed before each call that sends something,
    and only while it is still ours, so that a request which outlived its lease never sends after another took
    over."""

    def __init__(self, submission: Submission, until):
        self.submission, self.until = submission, until

    def renew(self) -> None:
        until = timezone.now() + timedelta(seconds=settings.SUBMIT_LEASE_SECONDS)
        if not Submission.objects.filter(pk=self.submission.pk, lease_until=self.until).update(lease_until=until):
            raise _LeaseLost
        self.until = until


def _send_part(api: BatchApi, submission: Submission, part: SubmissionPart, user, lease: _Lease) -> None:
    part.refresh_from_db()
    if part.batch_id:
        return
    request_ids = []
    if not part.file_id and part.upload_sent_at:
        part.file_id = _find_uploaded(api, part)
    if not part.file_id:
        lease.renew()
        part.upload_sent_at = timezone.now()
        part.save(update_fields=["upload_sent_at"])
        with archive.storage().open(part.name, "rb") as content:
            uploaded, request_id = api.upload_file(filename=part.upload_filename, content=content, size=part.bytes)
        part.file_id, request_ids = uploaded["id"], [request_id]
    part.save(update_fields=["file_id"])
    if part.create_sent_at and _find_created(api, part):
        part.refresh_from_db()
        _audit_submission(submission, user, Outcome(True, f"Found {part.batch_id_text} after its create's answer was "
                                                    f"lost; none was created again (submission {submission.token})"),
                          batch=part.batch, part=part)
        return
    _check_hourly_limit(submission.connection)
    lease.renew()
    part.create_sent_at = timezone.now()
    part.save(update_fields=["create_sent_at"])
    metadata = retries.batch_metadata(submission.metadata, part.intent)
    payload, request_id = api.create_batch(input_file_id=part.file_id, endpoint=submission.endpoint,
                                           completion_window=submission.completion_window, metadata=metadata)
    request_ids.append(request_id)
    batch, _ = store_batch(submission.connection, payload)  # links the part (store.link_submission)
    SubmissionPart.objects.filter(pk=part.pk, batch__isnull=True).update(
        batch=batch, batch_id_text=batch.batch_id, created_batch_at=timezone.now())
    SubmissionPart.objects.filter(pk=part.pk).update(request_ids=", ".join(filter(None, request_ids))[:255])
    _audit_submission(submission, user, Outcome(True, f"Created from file {part.file_id} ({part.upload_filename}); "
                                                f"submission {submission.token}", request_id), batch=batch, part=part)


def _audit_submission(submission: Submission, user, outcome: Outcome, *, batch: Batch | None = None,
                      part: SubmissionPart | None = None) -> AuditEvent:
    """Who submitted what: the file (a retry's parent, or the uploaded file's name), the part, the batch
    made and the API's request ids."""
    what = (f"retry of {submission.parent.batch_id}" if submission.kind == Submission.RETRY and submission.parent
            else f"upload {submission.filename}")
    if part is not None:
        what += f", part {part.number}, {part.requests:,} requests"
    batch = batch or submission.parent
    return AuditEvent.objects.create(
        user=user if getattr(user, "is_authenticated", False) else None, username=getattr(user, "username", "")[:150],
        action="submit", connection=submission.connection, batch=batch,
        batch_id_text=batch.batch_id if batch else "", detail=what[:255], ok=outcome.ok,
        result=outcome.message[:2000], request_id=outcome.request_id[:255])


def _find_uploaded(api: BatchApi, part: SubmissionPart) -> str:
    """The id of a file the API holds under the part's filename (an upload whose answer was lost), or ""."""
    since, after = (part.upload_sent_at - _CLOCK_SLACK).timestamp(), None
    for _ in range(_SEARCH_PAGES):
        page = api.list_files(purpose="batch", after=after)
        for item in page["data"]:
            if isinstance(item, dict) and item.get("filename") == part.upload_filename and item.get("id"):
                return str(item["id"])
        data = page["data"]
        if not page.get("has_more") or not data or _older(data[-1], since):
            return ""
        after = data[-1].get("id")
    return ""


def _find_created(api: BatchApi, part: SubmissionPart) -> bool:
    """Walk the head of the batch list (newest first) back to a little before the create was sent, for the
    batch naming this part's intent; store it (which links it). Whether it was found."""
    since, after = (part.create_sent_at - _CLOCK_SLACK).timestamp(), None
    for _ in range(_SEARCH_PAGES):
        page = api.list_batches(after=after)
        for item in page["data"]:
            metadata = item.get("metadata") if isinstance(item, dict) else None
            if isinstance(metadata, dict) and metadata.get(retries.INTENT_KEY) == part.intent:
                batch, _ = store_batch(part.submission.connection, item)
                link_submission(batch)
                return SubmissionPart.objects.filter(pk=part.pk, batch__isnull=False).exists()
        data = page["data"]
        if not page.get("has_more") or not data or _older(data[-1], since):
            return False
        after = data[-1].get("id")
    return False


def _older(item, since: float) -> bool:
    created = item.get("created_at") if isinstance(item, dict) else None
    return isinstance(created, (int, float)) and created < since


def _check_hourly_limit(connection: Connection) -> None:
    """The API allows BATCH_CREATIONS_PER_HOUR creations an hour (2,000); count Batchboard's own."""
    hour_ago = timezone.now() - timedelta(hours=1)
    made = SubmissionPart.objects.filter(submission__connection=connection, created_batch_at__gte=hour_ago)
    if made.count() >= settings.BATCH_CREATIONS_PER_HOUR:
        first = made.order_by("created_batch_at").values_list("created_batch_at", flat=True).first()
        raise _HourlyLimit(f"The API allows {settings.BATCH_CREATIONS_PER_HOUR:,} batch creations an hour, and "
                           f"this connection has made that many: resume after {first + timedelta(hours=1):%H:%M} "
                           "UTC.")
