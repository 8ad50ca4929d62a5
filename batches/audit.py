"""The audit trail: the CSV export of every AuditEvent."""

import csv
from datetime import datetime

from .models import AuditEvent

CSV_COLUMNS = ["created", "username", "action", "ok", "target", "connection", "batch", "detail", "result",
               "request_id", "ip"]
_FIELDS = ["created", "username", "action", "ok", "target", "connection__slug", "batch_id_text", "detail", "result",
           "request_id", "ip"]


class _Line:
    """csv.writer writes each row here and gets it back as text: Django's pattern for streaming CSV."""

    def write(self, line: str) -> str:
        return line


def csv_lines():
    """The whole trail, newest first, read from the database in chunks: constant memory however long it is."""
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_COLUMNS)
    for row in AuditEvent.objects.order_by("-created", "-pk").values_list(*_FIELDS).iterator(chunk_size=1000):
        yield writer.writerow([_cell(value) for value in row])


def _cell(value) -> str:
    """Text a spreadsheet would run as a formula gets a leading quote: the usernames a failed log-in tried,
    for one, are anyone's."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat()
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
