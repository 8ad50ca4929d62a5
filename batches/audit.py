"""The audit trail: recording events that are not batch actions (see actions.audit for those), the
receivers of Django's log-in signals, and the CSV export."""

import csv
from datetime import datetime

from accounts.throttle import client_ip

from .models import AuditEvent, Connection

# CSV column -> AuditEvent field
CSV_COLUMNS = {"created": "created", "username": "username", "action": "action", "ok": "ok", "target": "target",
               "connection": "connection__slug", "batch": "batch_id_text", "detail": "detail", "result": "result",
               "request_id": "request_id", "ip": "ip"}


def record(action: str, *, actor=None, username: str = "", request=None, ok: bool = True, target: str = "",
           detail: str = "", connection: Connection | None = None) -> AuditEvent:
    """One event. `actor` is the user who acted; without one, `username` says who tried or what ran."""
    if actor is not None and actor.is_authenticated:
        username = actor.get_username()
    else:
        actor = None
    return AuditEvent.objects.create(action=action, user=actor, username=username[:150], ok=ok, target=target[:255],
                                     detail=detail[:255], connection=connection,
                                     ip=client_ip(request) if request is not None else "")


def logged_in(sender, request, user, **kwargs) -> None:
    record("login", actor=user, request=request)


def login_failed(sender, credentials, request=None, **kwargs) -> None:
    """Only the username tried is kept (Django has already masked the password in `credentials`)."""
    record("login_failed", username=str(credentials.get("username", "")), request=request, ok=False)


def logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        record("logout", actor=user, request=request)


def connection_saved(connection: Connection, *, created: bool, changed: list[str], **who) -> None:
    """connection_created, or connection_changed naming the fields (never their values) and key_changed.
    `who`: record()'s actor, username and request."""
    if created:
        record("connection_created", connection=connection, target=connection.slug, **who)
        return
    if fields := [name for name in changed if name != "api_key"]:
        record("connection_changed", connection=connection, target=connection.slug, detail=", ".join(fields), **who)
    if "api_key" in changed:
        record("key_changed", connection=connection, target=connection.slug, **who)


def connection_deleted(connection: Connection, **who) -> None:
    record("connection_deleted", target=connection.slug, detail=connection.name, **who)


class CsvLine:
    """csv.writer writes each row here and gets it back as text: Django's pattern for streaming CSV."""

    def write(self, line: str) -> str:
        return line


def csv_lines(events=None):
    """The trail (`events`, or all of it), newest first, read from the database in chunks: constant memory
    however long it is."""
    writer = csv.writer(CsvLine())
    yield writer.writerow(CSV_COLUMNS)
    events = AuditEvent.objects.all() if events is None else events
    rows = events.order_by("-created", "-pk").values_list(*CSV_COLUMNS.values())
    for row in rows.iterator(chunk_size=1000):
        yield writer.writerow([csv_cell(value) for value in row])


def csv_cell(value) -> str:
    """Text a spreadsheet would run as a formula gets a leading quote: the usernames a failed log-in tried,
    for one, are anyone's."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat()
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
