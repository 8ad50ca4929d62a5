import hashlib
import json
import re
from datetime import date, datetime, time as dt_time, timedelta, timezone as dt_timezone

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Case, Count, F, FloatField, Q, TextField, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, NullIf
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from . import actions, files, health, insights
from .client import ApiError, BatchApi, PermanentError
from .models import ACTIVE_STATUSES, FILE_KINDS, KNOWN_STATUSES, Batch, Connection

STATUS_CHOICES = [(s, s.replace("_", " ")) for s in KNOWN_STATUSES] + [
    ("all_failed", "completed, all failed"), ("unknown", "unknown status")]
# The endpoints the Batch API accepts (CONTRACT.md §4), for the endpoint filter.
ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations",
             "/v1/images/generations", "/v1/images/edits", "/v1/videos")
# Finished (completed + failed) share of the requests, for sorting by progress; NULL when the total is unknown.
_DONE_SHARE = Cast(F("completed_requests") + F("failed_requests"), FloatField()) / NullIf(F("total_requests"), 0)
_ACTIVE_FIRST = Case(When(status__in=ACTIVE_STATUSES, then=Value(0)), default=Value(1))
SORTS = {
    "-created": ("-created_at", "-id"),
    "created": ("created_at", "id"),
    "active": (_ACTIVE_FIRST.asc(), "-created_at", "-id"),
    "status": ("status", "-created_at", "-id"),
    "-status": ("-status", "-created_at", "-id"),
    "-progress": (_DONE_SHARE.desc(nulls_last=True), "-id"),
    "progress": (_DONE_SHARE.asc(nulls_last=True), "id"),
    "-tokens": (F("total_tokens").desc(nulls_last=True), "-id"),
    "tokens": (F("total_tokens").asc(nulls_last=True), "id"),
    "-requests": ("-total_requests", "-id"),
    "requests": ("total_requests", "id"),
}
SORT_LABELS = {"-created": "newest first", "created": "oldest first", "active": "active first",
               "status": "status A–Z", "-status": "status Z–A", "-progress": "most done first",
               "progress": "least done first", "-tokens": "most tokens first", "tokens": "fewest tokens first",
               "-requests": "most requests first", "requests": "fewest requests first"}
# The table's columns after Model: label, and the sort its header link starts with (None: not sortable).
_COLUMNS = (("Status", "status"), ("Progress", "-progress"), ("Success", None), ("Tokens", "-tokens"),
            ("Expires", None), ("Created · in status", "-created"))
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def site_context(request):
    return {"VERSION": settings.VERSION, "LIVE_POLL_SECONDS": settings.LIVE_POLL_SECONDS}


def _decoded_text(value: str) -> None:
    """Django decodes query strings with errors="replace": a U+FFFD means the bytes were not UTF-8."""
    if "\ufffd" in value:
        raise ValidationError("This is not valid UTF-8 text.")


# Dates a filter accepts: the API's timestamps start in 1970, and the day after the last one must exist.
_DATES = [MinValueValidator(date(1970, 1, 1)), MaxValueValidator(date.max - timedelta(days=1))]


class ListFilters(forms.Form):
    status = forms.MultipleChoiceField(choices=STATUS_CHOICES, required=False)
    connection = forms.SlugField(required=False)
    endpoint = forms.CharField(required=False, max_length=255, validators=[_decoded_text])
    model = forms.CharField(required=False, max_length=255, validators=[_decoded_text])
    created_from = forms.DateField(required=False, validators=_DATES, widget=forms.DateInput(attrs={"type": "date"}))
    created_to = forms.DateField(required=False, validators=_DATES, widget=forms.DateInput(attrs={"type": "date"}))
    q = forms.CharField(required=False, max_length=200, label="Search", validators=[_decoded_text])
    sort = forms.ChoiceField(choices=list(SORT_LABELS.items()), required=False)
    page = forms.IntegerField(required=False, min_value=1, max_value=1_000_000)

    def clean(self):
        data = super().clean()
        start, end = data.get("created_from"), data.get("created_to")
        if start and end and start > end:
            self.add_error("created_to", "The end date is before the start date.")
        return data


def _require(request, permission: str) -> None:
    if not request.user.has_perm(f"batches.{permission}"):
        raise PermissionDenied


def _get_batch_for_user(request, slug: str, batch_id: str) -> tuple[Batch, dict]:
    """The batch named in the URL and what this user may do with it (404 if absent, 403 without a role)."""
    _require(request, "view_batch")
    batch = get_object_or_404(Batch.objects.select_related("connection"), connection__slug=slug, batch_id=batch_id)
    user = request.user
    can = {
        "cancel": user.has_perm("batches.cancel_batch"),
        "download": user.has_perm("batches.download_batch_file"),
        "refresh": user.has_perm("batches.refresh_batch"),
    }
    return batch, can


def _health_token(connections) -> list:
    now = timezone.now()
    return [(c.slug, c.health(now), c.last_error, c.warning, c.unreadable_batches) for c in connections]


def _token(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


# ----- the list ----------------------------------------------------------------------------------
def _day_start(day) -> datetime:
    return datetime.combine(day, dt_time.min, dt_timezone.utc)


def _filtered(filters: dict):
    batches = Batch.objects.all()
    statuses = filters.get("status") or []
    if statuses:
        condition = Q(status__in=[s for s in statuses if s in KNOWN_STATUSES])
        if "all_failed" in statuses:
            condition |= Q(status="completed", completed_requests__lte=0, failed_requests__gt=0)
        if "unknown" in statuses:
            condition |= ~Q(status__in=KNOWN_STATUSES)
        batches = batches.filter(condition)
    if filters.get("connection"):
        batches = batches.filter(connection__slug=filters["connection"])
    if filters.get("endpoint"):
        batches = batches.filter(endpoint=filters["endpoint"])
    if filters.get("model"):
        batches = batches.filter(model=filters["model"])
    if filters.get("created_from"):
        batches = batches.filter(created_at__gte=_day_start(filters["created_from"]))
    if filters.get("created_to"):
        batches = batches.filter(created_at__lt=_day_start(filters["created_to"]) + timedelta(days=1))
    if filters.get("q") and filters["q"].strip():
        batches = batches.filter(_search(filters["q"].strip()))
    return batches.order_by(*SORTS.get(filters.get("sort") or "-created", SORTS["-created"]))


def _search(text: str) -> Q:
    """Ids, file ids and metadata values (the search index); a model by name; a validation error code; and
    `key:value` for one metadata field."""
    condition = Q(search_text__contains=text.lower()) | Q(model__iexact=text)
    condition |= Q(pk__in=Batch.objects.alias(errors_text=Cast("errors", TextField())).filter(
        errors_text__icontains=json.dumps({"code": text})[1:-1]).values("pk"))
    key, colon, value = text.partition(":")
    if colon and key.strip() and value.strip():
        condition |= Q(pk__in=Batch.objects.alias(field=KeyTextTransform(key.strip(), "metadata")).filter(
            field__iexact=value.strip()).values("pk"))
    return condition


def _status_counts(data_version: list) -> dict:
    """Batches per status, recounted only when some connection's data changed (one grouped scan then)."""
    key = "status-counts:" + _token(data_version)
    counts = cache.get(key)
    if counts is None:
        counts = dict(Batch.objects.order_by().values_list("status").annotate(n=Count("id")))
        cache.set(key, counts, 3600)
    return counts


def _count_from_status_counts(filters: dict, counts: dict) -> int | None:
    """The row count of a list filtered by known statuses at most, from the grouped counts already read."""
    if any(filters.get(k) for k in ("connection", "endpoint", "model", "created_from", "created_to", "q")):
        return None
    statuses = filters.get("status") or []
    if not statuses:
        return sum(counts.values())
    if all(s in KNOWN_STATUSES for s in statuses):
        return sum(counts.get(s, 0) for s in set(statuses))
    return None


def _query_without(request, *names: str) -> str:
    """The list's query string without the named parameters, nor the poll's own (v, rows)."""
    query = request.GET.copy()
    for name in (*names, "v", "rows"):
        query.pop(name, None)
    return query.urlencode()


@login_required
@require_GET
@vary_on_headers("HX-Request")
def batch_list(request):
    _require(request, "view_batch")
    if not request.htmx and any("" in values for _, values in request.GET.lists()):
        return redirect(_without_empty(request))  # a form sent without script: keep the URL short and shareable
    form = ListFilters(request.GET)
    form.is_valid()
    filters = form.cleaned_data
    connections = list(Connection.objects.all())
    data_version = [(c.pk, c.data_version) for c in connections]
    version = _token(data_version, _health_token(connections), _query_without(request))
    if request.htmx and request.GET.get("v") == version:
        return HttpResponse(status=204)
    if form.errors and not request.htmx:
        for field, errors in form.errors.items():
            label = (form.fields[field].label or field.replace("_", " ")) if field in form.fields else "Filters"
            messages.warning(request, f"{label}: {' '.join(errors)} This filter was ignored.")

    counts = _status_counts(data_version)
    paginator = Paginator(_filtered(filters).select_related("connection"), settings.LIST_PAGE_SIZE)
    known_count = _count_from_status_counts(filters, counts)
    if known_count is not None:
        paginator.__dict__["count"] = known_count  # Paginator.count is a cached_property: skip a COUNT(*)
    page = paginator.get_page(filters.get("page") or 1)
    cards = [{"status": s, "count": counts.get(s, 0)} for s in KNOWN_STATUSES]
    unknown = sum(n for s, n in counts.items() if s not in KNOWN_STATUSES)
    if unknown:
        cards.append({"status": "unknown", "count": unknown})
    card_query = _query_without(request, "status", "page")
    for card in cards:
        card["href"] = f"?{card_query + '&' if card_query else ''}status={card['status']}"
        card["active"] = card["status"] in (filters.get("status") or [])
    sort = filters.get("sort") or "-created"
    active_filters = sum(1 for k in ("status", "connection", "endpoint", "model", "created_from", "created_to", "q")
                         if filters.get(k))
    now = timezone.now()
    context = {
        "form": form,
        "page": page,
        "cards": cards,
        "connections": connections,
        "multi_connection": len(connections) > 1,
        "unhealthy": [c for c in connections if c.health(now) in ("failing", "stale")],
        "version": version,
        "live_query": _query_without(request),
        "page_query": _query_without(request, "page"),
        "sort": sort,
        "sort_label": SORT_LABELS[sort],
        "sort_columns": _sort_columns(sort, _query_without(request, "sort", "page")),
        "changed": set(),
        "active_filters": active_filters,
        "filtered": bool(active_filters),
        "endpoints": ENDPOINTS,
        "now": now,
        "rows_shown": ",".join(f"{b.pk}:{_row_version(b)}" for b in page.object_list),
    }
    if not request.htmx:
        return render(request, "batches/list.html", context)
    # The poll says which rows it shows (pk:version); changed rows go back alone, the whole body only when
    # the rows or their order changed.
    rows = [(batch.pk, _row_version(batch)) for batch in page.object_list]
    shown = _shown_rows(request.GET.get("rows", ""))
    context["changed"] = {pk for pk, row_version in rows if shown.get(pk) != row_version}
    context["rows_moved"] = [pk for pk, _ in rows] != list(shown)
    return render(request, "batches/list.html#batch-update", context)


def _without_empty(request) -> str:
    query = request.GET.copy()
    for key, values in list(query.lists()):
        query.setlist(key, [value for value in values if value != ""])
        if not query.getlist(key):
            del query[key]
    return f"{request.path}?{query.urlencode()}" if query else request.path


def _sort_columns(sort: str, query: str) -> list[dict]:
    """Header cells: a sortable one links to its first direction, or to the other one when already sorted by it."""
    columns = []
    for label, first in _COLUMNS:
        column = {"label": label, "num": label in ("Success", "Tokens"), "href": None, "direction": None}
        if first:
            other = first[1:] if first.startswith("-") else f"-{first}"
            if sort in (first, other):
                column["direction"] = "descending" if sort.startswith("-") else "ascending"
            column["href"] = f"?{query + '&' if query else ''}sort={other if sort == first else first}"
        columns.append(column)
    return columns


def _row_version(batch: Batch) -> str:
    """What a list row shows changes with the batch's version, and when the API stops finding it."""
    return f"{batch.version}{'m' if batch.missing_since else ''}"


def _shown_rows(value: str) -> dict:
    shown = {}
    for pair in value.split(",")[:1000]:
        pk, _, row_version = pair.partition(":")
        if pk.isdigit() and len(pk) < 19:
            shown[int(pk)] = row_version
    return shown


# ----- the detail --------------------------------------------------------------------------------
def _detail_version(batch: Batch) -> str:
    """What the live region shows changes with the batch, its audit trail and its connection's health."""
    latest_audit = batch.audit_events.values_list("pk", flat=True).first()
    return _token(batch.version, latest_audit, _health_token([batch.connection]))


def _detail_context(batch: Batch, can: dict, notice=None, version: str = "") -> dict:
    now = timezone.now()
    connection = batch.connection
    chart_rows = insights.sampled_snapshots(batch)
    throughput = insights.throughput(batch, chart_rows, now)
    return {
        "batch": batch,
        "can": can,
        "connection": connection,
        "notice": notice,
        "timeline": insights.timeline(batch, list(batch.transitions.all())),
        "chart": insights.progress_chart(chart_rows),
        "phases": insights.phases(batch, now),
        "throughput": throughput,
        "took": insights.took(batch),
        "cost": insights.estimated_cost(batch),
        "request_errors": files.read_request_errors(batch),
        "audits": list(batch.audit_events.all()[:20]),
        "stale": connection.health(now) in ("failing", "stale"),
        "version": version or _detail_version(batch),
        "now": now,
        "file_kinds": [(kind, batch.file_id(kind)) for kind in FILE_KINDS],
    }


def _render_update(request, batch: Batch, can: dict, shown_version: int, **extra):
    """The live parts of the detail page as out-of-band swaps: header, cards, timeline and audit; only the history
    rows newer than the version shown; the files panel and the raw JSON only once the batch has finished."""
    context = _detail_context(batch, can, **extra)
    context["history"] = list(batch.snapshots.filter(version__gt=shown_version).order_by("-version")[:50])
    if batch.is_terminal:
        context["raw_json"] = _raw_json(batch)
    return render(request, "batches/detail.html#batch-update", context)


def _raw_json(batch: Batch) -> str:
    return json.dumps(batch.raw, indent=2, sort_keys=True, ensure_ascii=False)


def _shown_version(request) -> int:
    shown = (request.POST if request.method == "POST" else request.GET).get("shown", "")
    return int(shown) if shown.isdigit() and len(shown) < 10 else 0


@login_required
@require_GET
@vary_on_headers("HX-Request")
def batch_detail(request, slug: str, batch_id: str):
    batch, can = _get_batch_for_user(request, slug, batch_id)
    version = _detail_version(batch)
    if request.htmx:
        if request.GET.get("v") == version:
            return HttpResponse(status=204)
        return _render_update(request, batch, can, _shown_version(request), version=version)
    context = _detail_context(batch, can, version=version)
    context["history"] = list(batch.snapshots.order_by("-version")[:50])
    context["raw_json"] = _raw_json(batch)
    return render(request, "batches/detail.html", context)


@login_required
@require_GET
@vary_on_headers("HX-Request")
def batch_files(request, slug: str, batch_id: str):
    """File sizes/expiry and the grouped request errors as far as the files queue has read them (never an API
    call here); the panel polls until they are all there."""
    batch, can = _get_batch_for_user(request, slug, batch_id)
    context = {"batch": batch, "can": can, **files.panel(batch)}
    template = "batches/files.html#batch-files" if request.htmx else "batches/files.html"
    return render(request, template, context)


def _after_action(request, batch: Batch, can: dict, outcome: actions.Outcome):
    if request.htmx:  # the form targets the action panel: an empty answer closes it, the rest is out of band
        batch.refresh_from_db()
        return _render_update(request, batch, can, _shown_version(request), notice=outcome)
    level = messages.info if outcome.info else messages.success if outcome.ok else messages.error
    level(request, outcome.message)
    return redirect("batch-detail", slug=batch.connection.slug, batch_id=batch.batch_id)


@login_required
@require_http_methods(["GET", "POST"])
def batch_cancel(request, slug: str, batch_id: str):
    batch, can = _get_batch_for_user(request, slug, batch_id)
    if not can["cancel"]:
        raise PermissionDenied
    if request.method == "GET":  # the confirmation step
        template = "batches/cancel.html#cancel-confirm" if request.htmx else "batches/cancel.html"
        return render(request, template, {"batch": batch})
    return _after_action(request, batch, can, actions.cancel(batch=batch, user=request.user))


@login_required
@require_POST
def batch_refresh(request, slug: str, batch_id: str):
    batch, can = _get_batch_for_user(request, slug, batch_id)
    if not can["refresh"]:
        raise PermissionDenied
    return _after_action(request, batch, can, actions.refresh(batch=batch, user=request.user))


@login_required
@require_GET
def batch_download(request, slug: str, batch_id: str, kind: str):
    batch, can = _get_batch_for_user(request, slug, batch_id)
    if not can["download"]:
        raise PermissionDenied
    if kind not in FILE_KINDS:
        return _file_problem(request, batch, kind, f"There is no “{kind}” file kind.", 404)
    file_id = batch.file_id(kind)
    if not file_id:
        reason = ("This batch has no output file: none of its requests succeeded." if kind == "output"
                  and batch.is_terminal else f"This batch has no {kind} file (yet).")
        return _file_problem(request, batch, kind, reason, 404)
    if problem := actions.key_problem(batch.connection):
        actions.audit(user=request.user, action="download", batch=batch, detail=kind,
                      outcome=actions.Outcome(False, problem))
        return _file_problem(request, batch, kind, problem, 503)
    slot = files.take_stream_slot(batch.connection_id)
    if slot is None:
        reason = "Too many downloads from this connection at once; try again shortly."
        actions.audit(user=request.user, action="download", batch=batch, detail=kind,
                      outcome=actions.Outcome(False, reason))
        response = _file_problem(request, batch, kind, reason, 503)
        response["Retry-After"] = "10"
        return response
    api = BatchApi.for_connection(batch.connection)
    try:
        upstream = api.file_content(file_id)
    except ApiError as exc:
        api.close()
        files.give_back_stream_slot(slot)
        expired = isinstance(exc, PermanentError) and exc.status == 404
        reason = (f"The {kind} file {file_id} has expired or was deleted by the API (result files are kept "
                  "30 days unless the batch asked otherwise)." if expired
                  else f"The {kind} file could not be fetched: {exc}")
        actions.audit(user=request.user, action="download", batch=batch, detail=kind,
                      outcome=actions.Outcome(False, reason, exc.request_id))
        return _file_problem(request, batch, kind, reason, 404 if expired else 502)
    download = actions.Download(batch=batch, kind=kind, user=request.user, api=api, upstream=upstream, slot=slot)
    response = StreamingHttpResponse(download, content_type="application/jsonl")
    response["Content-Disposition"] = f'attachment; filename="{_download_name(batch.batch_id)}_{kind}.jsonl"'
    if upstream.headers.get("Content-Length", "").isdigit():
        response["Content-Length"] = upstream.headers["Content-Length"]
    return response


def _download_name(batch_id: str) -> str:
    """The id when it is all [A-Za-z0-9_-]; otherwise its first 64 such characters and a hash of the id, so
    that no name is a path, hidden, too long for a file system, or shared by two ids."""
    name = _FILENAME_UNSAFE.sub("_", batch_id)[:64]
    if name != batch_id:
        name += "-" + hashlib.sha256(batch_id.encode()).hexdigest()[:10]
    return name


def _file_problem(request, batch: Batch, kind: str, reason: str, status: int):
    return render(request, "batches/file_problem.html", {"batch": batch, "kind": kind, "reason": reason},
                  status=status)


# ----- health ------------------------------------------------------------------------------------
@require_GET
@never_cache
@vary_on_headers("Authorization")
def healthz(request):
    """For load balancers and uptime monitors: public up/down and freshness, details only with HEALTHZ_TOKEN."""
    answer = health.report(detailed=health.token_matches(request.headers.get("Authorization", "")))
    failed = answer["status"] == "down" or (answer["stale"] and settings.HEALTHZ_STALE_IS_ERROR)
    return JsonResponse(answer, status=503 if failed else 200)

