import hashlib
import itertools
import json
import logging
import re
import secrets
from datetime import date, timedelta

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from accounts.throttle import client_ip
from usage import baselines

from . import (actions, archive, explorer, files, health, insights, metrics as prometheus, retries, selectors, uploads,
               webhooks)
from .client import ApiError, BatchApi, PermanentError
from .models import FILE_KINDS, KNOWN_STATUSES, ArchivedFile, Batch, BatchRequest, Submission

log = logging.getLogger(__name__)
STATUS_CHOICES = [(s, s.replace("_", " ")) for s in KNOWN_STATUSES] + [
    ("all_failed", "completed, all failed"), ("unknown", "unknown status")]
# The endpoints the Batch API accepts (CONTRACT.md §4), for the endpoint filter.
ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations",
             "/v1/images/generations", "/v1/images/edits", "/v1/videos")
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
    # Batches with a request that failed with this code (the request index of archived batches).
    request_error = forms.CharField(required=False, max_length=100, label="Request error code",
                                    validators=[_decoded_text])
    sort = forms.ChoiceField(choices=list(selectors.SORT_LABELS.items()), required=False)
    page = forms.IntegerField(required=False, min_value=1, max_value=1_000_000)
    # Where the pager's links continue from (selectors.batch_page); one that does not fit is not used.
    after = forms.CharField(required=False, max_length=1000)
    before = forms.CharField(required=False, max_length=1000)

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
    """The batch named in the URL and what this user may do with it (403 without a role; 404 if absent or of
    a connection the user cannot see, so that ids do not leak)."""
    _require(request, "view_batch")
    batch = get_object_or_404(selectors.visible_batches(request.user).select_related("connection"),
                              connection__slug=slug, batch_id=batch_id)
    return batch, selectors.rights(request.user, batch.connection)


def _health_token(connections) -> list:
    now = timezone.now()
    return [(c.slug, c.health(now), c.last_error, c.warning, c.unreadable_batches) for c in connections]


def _token(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


# ----- the list ----------------------------------------------------------------------------------
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
    connections = list(selectors.visible_connections(request.user))
    data_version = [(c.pk, c.data_version) for c in connections]
    version = _token(data_version, _health_token(connections), _query_without(request))
    if request.htmx and request.GET.get("v") == version:
        return HttpResponse(status=204)
    if form.errors and not request.htmx:
        for field, errors in form.errors.items():
            label = (form.fields[field].label or field.replace("_", " ")) if field in form.fields else "Filters"
            messages.warning(request, f"{label}: {' '.join(errors)} This filter was ignored.")

    counts = selectors.batch_counts(request.user)
    batches = selectors.filtered_batches(filters, request.user).select_related("connection")
    count, exact = selectors.list_count(filters, counts, connections, batches)
    page = selectors.batch_page(batches, sort=filters.get("sort") or selectors.DEFAULT_SORT,
                                number=filters.get("page") or 1, size=settings.LIST_PAGE_SIZE, count=count,
                                exact=exact, after=filters.get("after") or "", before=filters.get("before") or "")
    cards = selectors.status_cards(counts)
    card_query = _query_without(request, "status", "page", "after", "before")
    for card in cards:
        card["href"] = f"?{card_query + '&' if card_query else ''}status={card['status']}"
        card["active"] = card["status"] in (filters.get("status") or [])
    sort = filters.get("sort") or selectors.DEFAULT_SORT
    active_filters = sum(1 for k in ("status", "connection", "endpoint", "model", "created_from", "created_to", "q",
                                     "request_error") if filters.get(k))
    now = timezone.now()
    context = {
        "form": form,
        "page": page,
        "cards": cards,
        "connections": connections,
        "in_no_team": selectors.visible_connection_ids(request.user) == [],
        "multi_connection": len(connections) > 1,
        "unhealthy": [c for c in connections if c.health(now) in ("failing", "stale")],
        "version": version,
        "live_query": _query_without(request),
        "page_query": _query_without(request, "page", "after", "before"),
        "sort": sort,
        "sort_label": selectors.SORT_LABELS[sort],
        "sort_columns": _sort_columns(sort, _query_without(request, "sort", "page", "after", "before")),
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
    history = {} if batch.is_terminal else baselines.for_batch(batch, today=now.date())
    eta = baselines.eta(batch, history, now)
    expected_end = (None if eta["late"] else eta["at"]) if eta else (throughput or {}).get("eta")
    cost = insights.estimated_cost(batch)
    return {
        "batch": batch,
        "can": can,
        "connection": connection,
        "notice": notice,
        "timeline": insights.timeline(batch, list(batch.transitions.all())),
        "chart": insights.progress_chart(chart_rows),
        "phases": insights.phases(batch, now),
        "throughput": throughput,
        "eta": eta,
        "eta_after_expiry": bool(expected_end and batch.expires_at and expected_end > batch.expires_at),
        "stuck": baselines.stuck_limit(batch, history) if baselines.is_stuck(batch, history, now) else None,
        "took": insights.took(batch),
        "cost": cost,
        # it used tokens, and its model has no price: say so rather than show nothing
        "unpriced": cost is None and bool(batch.input_tokens or batch.output_tokens),
        "request_errors": files.read_request_errors(batch),
        "audits": list(batch.audit_events.all()[:20]),
        "stale": connection.health(now) in ("failing", "stale"),
        "version": version or _detail_version(batch),
        "now": now,
        "file_kinds": [(kind, batch.file_id(kind)) for kind in FILE_KINDS],
        "parent": selectors.parent_batch(batch),
        "children": selectors.child_batches(batch),
        "retryable": _retryable(batch, can),
        "archived": archive.copies_by_kind(batch) if batch.is_terminal else {},
    }


def _retryable(batch: Batch, can: dict, tally: list | None = None) -> int:
    """How many of a finished batch's requests a retry could send again (0 when the user may not retry), from
    the explorer's tally when there is one."""
    if not (can.get("submit") and can.get("content") and batch.is_terminal):
        return 0
    if tally is not None:
        return sum(n for outcome, _, n in tally if outcome in retries.RETRYABLE.values())
    return selectors.retryable_requests(batch).count()


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
    copies = archive.copies_by_kind(batch)
    for row in context["files"]:
        row["archive"] = copies.get(row["kind"])
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
        if not batch.is_cancellable and not request.htmx:  # a tab opened on a batch that finished meanwhile
            messages.info(request, f"This batch is {batch.status.replace('_', ' ')}: there is nothing to cancel.")
            return redirect("batch-detail", batch.connection.slug, batch.batch_id)
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
    # The archive's copy first: it outlives the API's, and needs neither the key nor a stream slot.
    archived = archive.stored_copy(batch, kind)
    if archived and (download := actions.Download.from_archive(batch=batch, kind=kind, user=request.user,
                                                               archived=archived)):
        return _download_response(download, batch, kind, length=archived.bytes)
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
    length = upstream.headers.get("Content-Length", "")
    return _download_response(download, batch, kind, length=int(length) if length.isdigit() else None)


def _download_response(download: actions.Download, batch: Batch, kind: str, *, length: int | None):
    response = StreamingHttpResponse(download, content_type="application/jsonl")
    response["Content-Disposition"] = f'attachment; filename="{_download_name(batch.batch_id)}_{kind}.jsonl"'
    response["X-Batchboard-Source"] = download.source  # archive or api
    if length is not None:
        response["Content-Length"] = str(length)
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


# ----- retry, lineage, merged results -------------------------------------------------------------
_TOKEN = r"^[0-9a-f]{32}$"


class RetryChoice(forms.Form):
    outcomes = forms.MultipleChoiceField(choices=[("failed", "failed"), ("expired", "expired"),
                                                  ("not_run", "not run")], required=False)
    codes = forms.MultipleChoiceField(choices=[], required=False, label="Only these error codes")
    token = forms.RegexField(_TOKEN, required=False)

    def __init__(self, data, *, codes: list):
        super().__init__(data)
        self.fields["codes"].choices = [(code, code) for code, _ in codes]

    def chosen(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        codes = data.get("codes") or []
        if "codes" in self.errors and hasattr(self.data, "getlist"):
            # a code that is not among the menu's (not retryable here, or past its 50 most common) narrows the
            # retry to the requests that have it, possibly none: never to every request
            codes = [code[:100] for code in self.data.getlist("codes")[:50]]
        return {"outcomes": data.get("outcomes") or list(retries.RETRYABLE), "codes": codes}


def _retry_access(request, slug: str, batch_id: str) -> tuple[Batch, dict]:
    """A retry sends the batch's request lines again: it needs submit_batch and view_request_content."""
    batch, can = _get_batch_for_user(request, slug, batch_id)
    if not (can["submit"] and can["content"]):
        raise PermissionDenied
    return batch, can


def _retry_plan(batch: Batch, data) -> dict:
    choices = selectors.retry_choices(batch)
    form = RetryChoice(data, codes=choices["codes"])
    chosen = form.chosen()
    rows = retries.retry_requests(batch, **chosen)
    summary = selectors.retry_summary(batch, rows)
    metadata, trimmed = retries.retry_metadata(batch)
    return {"batch": batch, "choices": choices, "form": form, "chosen": chosen, "rows": rows, "summary": summary,
            "metadata": retries.batch_metadata(metadata, "(one per batch)"), "metadata_pairs": metadata,
            "trimmed": trimmed, "parts": -(-summary["sendable"] // settings.BATCH_MAX_REQUESTS) if summary["sendable"]
            else 0, "cost": insights.estimated_cost_from_bytes(batch.model, input_bytes=summary["bytes"],
                                                                  output_tokens=summary["output_tokens"])}


@login_required
@require_http_methods(["GET", "POST"])
def batch_retry(request, slug: str, batch_id: str):
    """GET: what a retry would send (the confirmation, with a token minted now); POST: send it, once."""
    batch, can = _retry_access(request, slug, batch_id)
    plan = _retry_plan(batch, request.POST if request.method == "POST" else request.GET)
    if request.method == "GET":
        preview = []
        if plan["choices"]["input_archived"] and plan["summary"]["sendable"]:
            preview = [line.decode("utf-8", "replace")[:400]
                       for line in itertools.islice(retries.retry_lines(batch, plan["rows"]), 5)]
        return render(request, "batches/retry.html", {**plan, "can": can, "preview": preview,
                                                      "token": secrets.token_hex(16),
                                                      "max_requests": settings.BATCH_MAX_REQUESTS})
    token = plan["form"].cleaned_data.get("token") if plan["form"].is_valid() else ""
    existing = Submission.objects.filter(token=token).first() if token else None
    if not token or (existing and (existing.parent_id != batch.pk or existing.kind != Submission.RETRY)):
        messages.error(request, "This confirmation is no longer valid: check the retry again.")
        return redirect("batch-retry", batch.connection.slug, batch.batch_id)
    if existing is None and not (plan["choices"]["input_archived"] and plan["summary"]["sendable"]):
        messages.error(request, "Nothing to send: no chosen request has its input line in the archive.")
        return redirect("batch-retry", batch.connection.slug, batch.batch_id)
    submission, _ = actions.record_submission(
        token=token, user=request.user, kind=Submission.RETRY, connection=batch.connection, parent=batch,
        endpoint=batch.endpoint, model=batch.model, completion_window=batch.completion_window or "24h",
        metadata=plan["metadata_pairs"], selection=plan["chosen"])
    outcome = actions.submit(submission=submission, user=request.user)
    level = messages.info if outcome.info else messages.success if outcome.ok else messages.error
    level(request, outcome.message)
    return redirect("batch-lineage", batch.connection.slug, batch.batch_id)
@login_required
@require_GET
def batch_retry_file(request, slug: str, batch_id: str):
    """The retry's lines as one JSONL file, for submitting elsewhere."""
    batch, can = _retry_access(request, slug, batch_id)
    plan = _retry_plan(batch, request.GET)
    if not plan["choices"]["input_archived"]:
        return _file_problem(request, batch, "retry", "The input file is not in the archive: there are no lines "
                             "to copy.", 409)
    actions.audit(user=request.user, action="download", batch=batch, detail="retry file",
                  outcome=actions.Outcome(True, f"{plan['summary']['sendable']:,} request lines"))
    response = StreamingHttpResponse(retries.retry_lines(batch, plan["rows"]), content_type="application/jsonl")
    response["Content-Disposition"] = f'attachment; filename="{_download_name(batch.batch_id)}_retry.jsonl"'
    return response


@login_required
@require_GET
def batch_lineage(request, slug: str, batch_id: str):
    batch, can = _get_batch_for_user(request, slug, batch_id)
    family = selectors.lineage(batch)
    submissions = list(Submission.objects.filter(parent__in=family["family"]).select_related("parent")
                       .prefetch_related("parts")[:50])
    outcomes = family["outcomes"]
    return render(request, "batches/lineage.html", {
        "batch": batch, "can": can, "lineage": family, "submissions": submissions,
        "by_generation": list(enumerate(outcomes["succeeded_by_generation"])),
        "missing": _merge_problem(family["family"]), "connection": batch.connection})


def _merge_problem(family: list[Batch]) -> str:
    """Why the family's results cannot be merged (a batch not archived and indexed yet), or ""."""
    stored = set(ArchivedFile.objects.filter(batch__in=family, state=ArchivedFile.STORED)
                 .values_list("batch_id", "kind"))
    for batch in family:
        if not BatchRequest.objects.filter(batch=batch).exists():
            if batch.is_terminal:
                return f"{batch.batch_id} is not indexed yet."
            return f"{batch.batch_id} has not finished."
        needed = set(BatchRequest.objects.filter(batch=batch, result_offset__isnull=False)
                     .values_list("result_in_error_file", flat=True).distinct())
        for in_error in needed:
            if (batch.pk, "error" if in_error else "output") not in stored:
                return f"The {'error' if in_error else 'output'} file of {batch.batch_id} is not in the archive."
    return ""


@login_required
@require_GET
def batch_merged_results(request, slug: str, batch_id: str, kind: str):
    """The family's latest success for every custom_id (output), or the latest failure of those that never
    succeeded (error), as one JSONL stream."""
    batch, can = _get_batch_for_user(request, slug, batch_id)
    if not can["content"]:
        raise PermissionDenied
    if kind not in ("output", "error"):
        return _file_problem(request, batch, kind, f"There is no “{kind}” kind of merged results.", 404)
    family = selectors.lineage(batch)["family"]
    if problem := _merge_problem(family):
        return _file_problem(request, batch, kind, f"The results cannot be merged yet: {problem}", 409)
    actions.audit(user=request.user, action="download", batch=batch, detail=f"merged {kind}",
                  outcome=actions.Outcome(True, f"merged over {len(family)} batches"))
    response = StreamingHttpResponse(retries.merged_lines(family, kind), content_type="application/jsonl")
    response["Content-Disposition"] = f'attachment; filename="{_download_name(batch.batch_id)}_merged_{kind}.jsonl"'
    return response


# ----- submit a new batch --------------------------------------------------------------------------
_STAGED_SALT = "batchboard.uploads.staged"
_MAX_METADATA_ROWS = retries.METADATA_PAIRS - 1  # batchboard_intent takes one


class UploadForm(forms.Form):
    connection = forms.ChoiceField()
    file = forms.FileField(label="JSONL file")

    def __init__(self, *args, connections, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["connection"].choices = [(c.slug, c.name) for c in connections]


class SubmitForm(forms.Form):
    staged = forms.CharField(widget=forms.HiddenInput)
    token = forms.RegexField(_TOKEN, widget=forms.HiddenInput)
    completion_window = forms.ChoiceField(choices=[("24h", "24 hours")])
    rows = forms.IntegerField(min_value=1, max_value=_MAX_METADATA_ROWS, required=False, widget=forms.HiddenInput)

    def __init__(self, *args, rows: int = 3, **kwargs):
        super().__init__(*args, **kwargs)
        if self.is_bound and (count := self.data.get("rows", "")).isdigit():
            rows = min(max(int(count), 1), _MAX_METADATA_ROWS)
        self.row_count = rows
        for i in range(rows):
            self.fields[f"key_{i}"] = forms.CharField(required=False, max_length=retries.METADATA_KEY_CHARS,
                                                      label=f"Key {i + 1}", validators=[_decoded_text])
            self.fields[f"value_{i}"] = forms.CharField(required=False, max_length=retries.METADATA_VALUE_CHARS,
                                                        label=f"Value {i + 1}", strip=False)

    def metadata_rows(self):
        return [(self[f"key_{i}"], self[f"value_{i}"]) for i in range(self.row_count)]

    def clean_staged(self):
        try:
            return signing.loads(self.cleaned_data["staged"], salt=_STAGED_SALT, max_age=86400)
        except signing.BadSignature:
            raise ValidationError("This upload has expired: upload the file again.") from None

    def clean(self):
        data = super().clean()
        pairs, seen = [], set()
        for i in range(self.row_count):
            key, value = data.get(f"key_{i}", "").strip(), data.get(f"value_{i}", "")
            if not key and not value:
                continue
            if not key:
                self.add_error(f"key_{i}", "A value needs a key.")
            elif key == retries.INTENT_KEY:
                self.add_error(f"key_{i}", f"“{retries.INTENT_KEY}” is Batchboard's own key.")
            elif key in seen:
                self.add_error(f"key_{i}", "This key is already used above.")
            else:
                seen.add(key)
                pairs.append([key, value])
        data["metadata"] = pairs
        return data


def _submit_connections(user) -> list:
    return [c for c in selectors.visible_connections(user) if selectors.rights(user, c)["submit"]]


@login_required
@require_http_methods(["GET", "POST"])
def batch_new(request):
    """Upload a JSONL file (checked line by line), preview it, then submit it as one batch or several."""
    _require(request, "submit_batch")
    connections = _submit_connections(request.user)
    if not connections:
        raise PermissionDenied
    if request.method == "GET":
        return render(request, "batches/new.html", {"form": UploadForm(connections=connections)})
    if "staged" in request.POST:
        return _submit_staged(request, connections)
    form = UploadForm(request.POST, request.FILES, connections=connections)
    if not form.is_valid():
        return render(request, "batches/new.html", {"form": form}, status=400)
    upload = form.cleaned_data["file"]
    report = uploads.validate(upload.file, size=upload.size)
    if not report.ok:
        return render(request, "batches/new.html", {"form": form, "report": report}, status=400)
    connection = next(c for c in connections if c.slug == form.cleaned_data["connection"])
    staged = {"name": uploads.stage(upload.file), "filename": upload.name[:255], "connection": connection.slug,
              "endpoint": report.endpoint, "model": report.model, "requests": report.requests,
              "bytes": report.bytes, "parts": report.parts}
    submit_form = SubmitForm(initial={"staged": signing.dumps(staged, salt=_STAGED_SALT),
                                      "token": secrets.token_hex(16)})
    return _preview(request, staged, report.preview, submit_form)


def _preview(request, staged: dict, preview: list, form: SubmitForm, status: int = 200):
    cost = insights.estimated_cost_from_bytes(staged["model"], input_bytes=staged["bytes"])
    return render(request, "batches/new.html", {"staged": staged, "preview": preview, "submit_form": form,
                                                "cost": cost, "max_requests": settings.BATCH_MAX_REQUESTS,
                                                "max_bytes": settings.BATCH_MAX_BYTES}, status=status)


def _submit_staged(request, connections):
    form = SubmitForm(request.POST)
    if "more" in request.POST or not form.is_valid():
        staged = form.cleaned_data.get("staged") if hasattr(form, "cleaned_data") else None
        if staged is None:
            try:
                staged = signing.loads(request.POST.get("staged", ""), salt=_STAGED_SALT, max_age=86400)
            except signing.BadSignature:
                messages.error(request, "This upload has expired: upload the file again.")
                return redirect("batch-new")
        if "more" in request.POST and form.row_count < _MAX_METADATA_ROWS:
            data = request.POST.copy()
            data["rows"] = str(form.row_count + 1)
            form = SubmitForm(data)
            form.errors.clear()
        return _preview(request, staged, [], form, status=200 if "more" in request.POST else 400)
    staged = form.cleaned_data["staged"]
    connection = next((c for c in connections if c.slug == staged["connection"]), None)
    if connection is None:
        raise PermissionDenied
    existing = Submission.objects.filter(token=form.cleaned_data["token"]).first()
    if existing and (existing.kind != Submission.UPLOAD or existing.source != staged["name"]):
        messages.error(request, "This confirmation is no longer valid: upload the file again.")
        return redirect("batch-new")
    submission, _ = actions.record_submission(
        token=form.cleaned_data["token"], user=request.user, kind=Submission.UPLOAD, connection=connection,
        endpoint=staged["endpoint"], model=staged["model"], completion_window=form.cleaned_data["completion_window"],
        metadata=form.cleaned_data["metadata"], filename=staged["filename"], source=staged["name"],
        requests=staged["requests"], bytes=staged["bytes"])
    outcome = actions.submit(submission=submission, user=request.user)
    level = messages.info if outcome.info else messages.success if outcome.ok else messages.error
    level(request, outcome.message)
    first = submission.parts.filter(batch__isnull=False).select_related("batch__connection").first()
    if outcome.ok and first is not None:
        return redirect("batch-detail", first.batch.connection.slug, first.batch.batch_id)
    return _preview(request, staged, [], form, status=200)  # the same token: submitting again resumes


# ----- the request explorer ----------------------------------------------------------------------
class RequestFilters(forms.Form):
    outcome = forms.MultipleChoiceField(choices=[(name, value.label) for name, (value, _) in explorer.OUTCOMES.items()],
                                        required=False)
    error = forms.CharField(required=False, max_length=100, label="Error code", validators=[_decoded_text])
    custom_id = forms.CharField(required=False, max_length=200, label="Custom id contains",
                                validators=[_decoded_text])
    q = forms.CharField(required=False, max_length=200, label="Text in preview", validators=[_decoded_text])
    sort = forms.ChoiceField(choices=list(selectors.REQUEST_SORT_LABELS.items()), required=False)
    page = forms.IntegerField(required=False, min_value=1, max_value=1_000_000)
    after = forms.CharField(required=False, max_length=2000)
    before = forms.CharField(required=False, max_length=2000)


def _request_filters(request, can: dict, *, warn: bool) -> tuple[forms.Form, dict]:
    """The explorer's validated filters; the preview search only for users who may see content."""
    form = RequestFilters(request.GET)
    form.is_valid()
    filters = form.cleaned_data
    if warn:
        for name, errors in form.errors.items():
            label = (form.fields[name].label or name) if name in form.fields else "Filters"
            messages.warning(request, f"{label}: {' '.join(errors)} This filter was ignored.")
    if filters.get("q") and not can["content"]:
        filters["q"] = ""
        if warn:
            messages.warning(request, "Searching the previews needs permission to see request content; the search "
                                      "was ignored.")
    return form, filters


def _filter_label(filters: dict) -> str:
    """The filters of an export, for its audit record."""
    parts = [f"{name}={','.join(value) if isinstance(value, list) else value}" for name, value in filters.items()
             if name in ("outcome", "error", "custom_id", "q") and value]
    return ", ".join(parts) or "no filter"


@login_required
@require_GET
@vary_on_headers("HX-Request")
def request_list(request, slug: str, batch_id: str):
    """One batch's requests from the request index: counts per outcome against the API's, filters, a keyset-paged
    table, and while the index is being built a poll that stops when it is done."""
    batch, can = _get_batch_for_user(request, slug, batch_id)
    if not request.htmx and any("" in values for _, values in request.GET.lists()):
        return redirect(_without_empty(request))
    form, filters = _request_filters(request, can, warn=not request.htmx)
    state = explorer.archive_state(batch)
    version = _token(batch.version, state.version, _query_without(request))
    if request.htmx and request.GET.get("v") == version:
        return HttpResponse(status=204)
    tally = selectors.request_tally(batch, index_version=state.final_version)
    rows = selectors.filtered_requests(batch, filters, content=can["content"])
    page = selectors.request_page(batch, filters, tally, rows, size=settings.LIST_PAGE_SIZE,
                                  index_version=state.final_version)
    sort = filters.get("sort") or selectors.DEFAULT_REQUEST_SORT
    cards = explorer.outcome_cards(batch, tally)
    card_query = _query_without(request, "outcome", "page", "after", "before")
    for card in cards:
        card["href"] = f"?{card_query + '&' if card_query else ''}outcome={card['name']}" if card["name"] else (
            f"?{card_query}" if card_query else "?")
        card["active"] = card["name"] in (filters.get("outcome") or []) if card["name"] else not filters.get("outcome")
    codes = explorer.error_codes(tally)
    if filters.get("error") and filters["error"] not in dict(codes):
        codes.append((filters["error"], 0))
    active_filters = sum(1 for k in ("outcome", "error", "custom_id", "q") if filters.get(k))
    context = {
        "batch": batch,
        "connection": batch.connection,
        "can": can,
        "form": form,
        "filters": filters,
        "state": state,
        "cards": cards,
        "notes": explorer.count_notes(batch, state, cards),
        "codes": codes,
        "page": page,
        "sort": sort,
        "sort_label": selectors.REQUEST_SORT_LABELS[sort],
        "sort_columns": _request_sort_columns(sort, _query_without(request, "sort", "page", "after", "before")),
        "version": version,
        "live_query": _query_without(request),
        "page_query": _query_without(request, "page", "after", "before"),
        "export_query": _query_without(request, "page", "after", "before", "sort"),
        "active_filters": active_filters,
        "file_kinds": [(kind, batch.file_id(kind)) for kind in FILE_KINDS],
        "retryable": _retryable(batch, can, tally),
    }
    template = "batches/requests.html#requests-update" if request.htmx else "batches/requests.html"
    return render(request, template, context)


def _request_sort_columns(sort: str, query: str) -> dict:
    """The Tokens header: a link to most tokens first, or to the other direction when sorted by tokens."""
    direction = {"-tokens": "descending", "tokens": "ascending"}.get(sort)
    following = "tokens" if sort == "-tokens" else "-tokens"
    return {"tokens": {"direction": direction, "href": f"?{query + '&' if query else ''}sort={following}"},
            "custom_id": {"direction": "ascending" if sort == "custom_id" else None,
                          "href": f"?{query}" if query else "?"}}


@login_required
@require_GET
def request_detail(request, slug: str, batch_id: str, custom_id: str):
    """One request: its indexed facts for anyone who sees the batch; its request and response bodies, from the
    archived files, for those who may see content."""
    batch, can = _get_batch_for_user(request, slug, batch_id)
    row = selectors.find_request(batch, custom_id)
    if row is None:
        raise Http404("No such request in this batch's index.")
    state = explorer.archive_state(batch)
    tally = selectors.request_tally(batch, index_version=state.final_version)
    previous, following = selectors.failed_neighbours(row, tally)
    context = {"batch": batch, "connection": batch.connection, "can": can, "row": row,
               "outcome_name": explorer.OUTCOME_NAMES.get(row.outcome, ""), "previous": previous,
               "following": following, "body_limit": explorer.BODY_LIMIT,
               "result_title": "Error" if row.result_in_error_file else "Response"}
    if can["content"]:
        context["request_body"], context["result_body"] = explorer.request_bodies(row, state.files)
        context["conversation"] = explorer.conversation(context["request_body"], context["result_body"])
    return render(request, "batches/request.html", context)


@login_required
@require_GET
def request_export(request, slug: str, batch_id: str, kind: str):
    """The explorer's current filter as CSV (the indexed columns; the preview only with content) or JSONL (the
    original output and error lines, from the archive; content only), streamed and audited as a download."""
    batch, can = _get_batch_for_user(request, slug, batch_id)
    if kind not in ("csv", "jsonl"):
        raise Http404("No such export.")
    if kind == "jsonl" and not can["content"]:
        raise PermissionDenied
    _, filters = _request_filters(request, can, warn=False)
    filters["sort"] = selectors.DEFAULT_REQUEST_SORT  # by custom_id, along the primary key, whatever the page shows
    rows = selectors.filtered_requests(batch, filters, content=can["content"])
    description = f"requests export ({_filter_label(filters)})"
    if kind == "csv":
        chunks, content_type = explorer.csv_chunks(rows, content=can["content"]), "text/csv; charset=utf-8"
    else:
        files = explorer.archive_state(batch).files
        if problem := explorer.jsonl_problem(rows, files):
            reason, status = problem
            actions.audit(user=request.user, action="download", batch=batch, detail="requests.jsonl",
                          outcome=actions.Outcome(False, f"{description}: {reason}"))
            return _file_problem(request, batch, "requests.jsonl", reason, status)
        chunks, content_type = explorer.jsonl_chunks(rows, files), "application/jsonl"
    export = explorer.Export(chunks, batch=batch, user=request.user, detail=f"requests.{kind}",
                             description=description)
    response = StreamingHttpResponse(export, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{_download_name(batch.batch_id)}_requests.{kind}"'
    return response


# ----- health ------------------------------------------------------------------------------------
@require_GET
@never_cache
@vary_on_headers("Authorization")
def healthz(request):
    """For load balancers and uptime monitors: public up/down and freshness, details only with HEALTHZ_TOKEN."""
    answer = health.report(detailed=health.token_matches(request.headers.get("Authorization", "")))
    failed = answer["status"] == "down" or (answer["stale"] and settings.HEALTHZ_STALE_IS_ERROR)
    return JsonResponse(answer, status=503 if failed else 200)



# ----- OpenAI webhooks in, and /metrics -----------------------------------------------------------------
@csrf_exempt
@require_POST
def openai_webhook(request, slug: str):
    """Public, but only a message signed with the connection's webhook secret acts. An unknown slug and a bad
    signature get the same 400; an address with too many of those gets 429 for a while."""
    ip = client_ip(request)
    if webhooks.too_many_failures(ip):
        log.warning("webhook refused: too many refused webhooks from %s", ip)
        return HttpResponse("Too many refused webhooks\n", status=429, content_type="text/plain",
                            headers={"Retry-After": str(settings.WEBHOOK_FAILURE_WINDOW)})
    if _content_length(request) > settings.WEBHOOK_MAX_BODY_BYTES:
        webhooks.count_failure(ip)
        return HttpResponse("Body too large\n", status=413, content_type="text/plain")
    outcome = webhooks.receive(slug=slug, body=request.body, headers=request.headers)
    if not outcome.accepted:
        webhooks.count_failure(ip)
        log.warning("webhook for %r from %s refused: %s", slug[:100], ip, outcome.action)  # never the body
        return HttpResponse("Invalid webhook\n", status=400, content_type="text/plain")
    return HttpResponse(outcome.action + "\n", status=200, content_type="text/plain")


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # as Django reads it: no body


@require_GET
@never_cache
def metrics(request):
    """Prometheus' text format, to a METRICS_TOKEN bearer or a METRICS_ALLOWED_IPS address; 404 while neither
    is set, 403 to anyone else (a session counts for nothing here)."""
    if not (settings.METRICS_TOKEN or settings.METRICS_ALLOWED_IPS):
        return HttpResponse("Not found\n", status=404, content_type="text/plain")
    if not prometheus.allowed(request.headers.get("Authorization", ""), client_ip(request)):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    body, content_type = prometheus.exposition()
    return HttpResponse(body, content_type=content_type)
