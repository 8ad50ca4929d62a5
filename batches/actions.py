"""What operators do to a batch: cancel, refresh, download. Each call is audited."""

import logging
import time
from dataclasses import dataclass

import requests
from django.conf import settings

from . import archive, files
from .client import ApiError, BatchApi, TransientError, stream_chunks
from .models import AuditEvent, Batch, Connection, KeyUnreadable, api_host_problem
from .payload import MalformedPayload
from .store import store_batch
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


class Download:
    """A file on its way to a user, from the API (holding one of its connection's stream slots) or from the
    archive (which needs no slot). Iterate for the bytes; the WSGI server calls close() when the response ends,
    however it ends, and that audits the download once with its outcome (completed, or cut and why), the bytes
    sent and where they came from, and gives the slot back."""

    def __init__(self, *, batch: Batch, kind: str, user, api: BatchApi | None = None,
                 upstream: requests.Response | None = None, slot: str | None = None, stored=None, first: bytes = b""):
        self.batch, self.kind, self.user, self.api, self.upstream, self.slot = batch, kind, user, api, upstream, slot
        self.stored = stored  # the archive's stream, its first chunk already read
        self.source = "api" if stored is None else "archive"
        if stored is None:
            self.chunks = stream_chunks(upstream, chunk_size=settings.DOWNLOAD_CHUNK_BYTES)
        else:
            self.chunks = _first_then(first, stored)
        self.sent = self.handed = 0
        self.ending = "the client went away"  # unless the stream ends first
        self.renewed = time.monotonic()
        self.closed = False

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

    def __iter__(self) -> "Download":
        return self

    def __next__(self) -> bytes:
        self.sent += self.handed  # the server asks for more only once it has sent the chunk it had
        self.handed = 0
        if self.slot and time.monotonic() - self.renewed > files.STREAM_SLOT_RENEW_SECONDS:
            files.renew_stream_slot(self.slot)
            self.renewed = time.monotonic()
        try:
            chunk = next(self.chunks)
        except StopIteration:
            self.ending = ""
            raise
        except TransientError as exc:
            self.ending = exc.message
            raise
        except Exception as exc:
            if self.source != "archive":
                raise
            self.ending = f"the archive could not be read ({type(exc).__name__})"
            raise
        self.handed = len(chunk)
        return chunk

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.source == "archive":
            self.stored.close()
        else:
            self.upstream.close()
            self.api.close()
            files.give_back_stream_slot(self.slot)
        file_id = self.batch.file_id(self.kind)
        request_id = self.upstream.headers.get("x-request-id", "") if self.upstream is not None else ""
        source = " from the archive" if self.source == "archive" else ""
        if self.ending:
            outcome = Outcome(False, f"{file_id}: cut after {self.sent:,} bytes sent{source}: {self.ending}",
                              request_id)
        else:
            outcome = Outcome(True, f"{file_id}: completed{source}, {self.sent:,} bytes sent", request_id)
        try:
            audit(user=self.user, action="download", batch=self.batch, detail=self.kind, outcome=outcome)
        except Exception:  # Django swallows errors of close(): say it here
            log.exception("The download of %s could not be audited: %s", file_id, outcome.message)


def _first_then(first: bytes, rest):
    if first:
        yield first
    yield from rest
