"""What operators do to a batch: cancel, refresh, download. Each call is audited."""

from dataclasses import dataclass

from .client import ApiError, BatchApi
from .models import AuditEvent, Batch, Connection, KeyUnreadable, api_host_problem
from .payload import MalformedPayload
from .store import store_batch
from .sync import refresh_batch


@dataclass
class Outcome:
    ok: bool
    message: str
    request_id: str = ""


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
        outcome = Outcome(True, "Already cancelling; nothing sent again.")
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
