from datetime import timedelta

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma

register = template.Library()

STATUS_LABELS = {"all_failed": "completed · all failed", "unknown": "unknown"}


@register.filter
def duration(value: timedelta | None) -> str:
    """1d 4h, 3h 05m, 4m 09s, 12s."""
    if value is None:
        return "—"
    seconds = int(max(value.total_seconds(), 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


@register.filter
def tokens(value) -> str:
    return "—" if value is None else intcomma(value)


@register.filter
def short_id(value: str, keep: int = 14) -> str:
    value = str(value or "")
    return value if len(value) <= keep + 3 else f"{value[:keep]}…"


@register.filter
def status_label(batch) -> str:
    outcome = batch.outcome
    if outcome == "unknown":
        return f"unknown: {batch.status}"
    return STATUS_LABELS.get(outcome, outcome.replace("_", " "))


@register.filter
def filesize(value) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


@register.filter
def words(value) -> str:
    return str(value).replace("_", " ")
