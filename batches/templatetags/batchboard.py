import logging
import re
from datetime import timedelta

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils.html import format_html

from batches.redact import SHOWN_LIMIT, shown

logger = logging.getLogger(__name__)
register = template.Library()

STATUS_LABELS = {"all_failed": "completed · all failed", "unknown": "unknown"}
# Unicode's bidirectional controls (embeddings, overrides, isolates, marks): they can make an id read backwards.
_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


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
def seconds(value) -> str:
    """duration() of a number of seconds."""
    return duration(None if value is None else timedelta(seconds=value))


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
        return f"unknown: {bidi_safe(batch.status)}"
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


@register.filter(is_safe=True)
def bidi_safe(value):
    """API text with each bidi control shown as a visible marker, e.g. ⟨U+202E⟩; anything else unchanged."""
    if not isinstance(value, str):
        return value
    return _BIDI_CONTROLS.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", value)


@register.filter(is_safe=True)
def api_text(value, limit: int = SHOWN_LIMIT):
    """An error message or other free text from the API, as shown: at most `limit` characters (redact.shown),
    bidi controls made visible."""
    if value is None or value == "":
        return value
    return bidi_safe(shown(str(value), int(limit)))


@register.filter
def short_endpoint(value) -> str:
    """/v1/chat/completions → chat, /v1/responses → responses; an endpoint we do not know stays as sent."""
    value = str(value or "")
    short = value.removeprefix("/v1/")
    return "chat" if short == "chat/completions" else short


@register.filter
def words(value) -> str:
    return str(value).replace("_", " ")


@register.simple_tag
def time_tag(value, mode: str = "relative"):
    """A <time> the page script renders in the reader's zone (relative, since, countdown or absolute);
    UTC as text and on hover without JavaScript. A tag, not an include: the list renders hundreds."""
    if not value:
        return "—"
    utc = value.strftime("%Y-%m-%d %H:%M:%S")
    return format_html('<time datetime="{}" title="{} UTC" data-{}>{} UTC</time>', value.isoformat(), utc, mode,
                       utc[:16])


@register.simple_tag
def progress_bar(batch):
    p = batch.progress()
    label = (f"{p['completed']}% completed, {p['failed']}% failed, {p['remaining']}% remaining"
             if p["known"] else "not started")
    return format_html(
        '<svg class="bar" viewBox="0 0 100 8" preserveAspectRatio="none" role="img" aria-label="{}">'
        '<rect class="bar-bg" x="0" y="0" width="100" height="8"></rect>'
        '<rect class="bar-ok" x="0" y="0" width="{}" height="8"></rect>'
        '<rect class="bar-failed" x="{}" y="0" width="{}" height="8"></rect></svg>',
        label, f"{p['completed']:.1f}", f"{p['completed']:.1f}", f"{p['failed']:.1f}")


@register.simple_tag
def copy_button(value):
    return format_html(
        '<button type="button" class="copy" data-copy="{}" aria-label="Copy {}" title="Copy"><svg viewBox="0 0 24 24" '
        'aria-hidden="true"><rect x="9" y="9" width="12" height="12" rx="2"></rect>'
        '<path d="M5 15V5a2 2 0 0 1 2-2h10"></path></svg></button>', value, bidi_safe(value))


class _GuardedRowNode(template.Node):
    def __init__(self, nodelist, batch):
        self.nodelist, self.batch = nodelist, batch

    def render(self, context):
        try:
            return self.nodelist.render(context)
        except Exception:  # noqa: BLE001 - one bad row must not take the whole list down
            batch = self.batch.resolve(context)
            logger.exception("The list row of batch %r (pk %s) could not be rendered", batch.batch_id, batch.pk)
            return format_html('<tr id="row-{}" class="row-error"><td colspan="11" class="error">This batch could not be '
                               'shown (<bdi class="mono">{}</bdi>); the error is logged.</td></tr>',
                               batch.pk, bidi_safe(batch.batch_id))


@register.tag
def guarded_row(parser, token):
    """{% guarded_row batch %}<tr>…</tr>{% endguarded_row %}: a row that raises while rendering becomes a row
    saying so, and the error is logged."""
    _, batch = token.split_contents()
    nodelist = parser.parse(("endguarded_row",))
    parser.delete_first_token()
    return _GuardedRowNode(nodelist, parser.compile_filter(batch))
