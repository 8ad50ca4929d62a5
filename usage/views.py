"""The usage page (every role, scoped to the connections each user sees), its CSV tables, and the price and
budget pages (Admins: `usage.change_modelprice`, `usage.change_budget`)."""

import csv
import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from batches import audit, selectors as batch_selectors

from . import charts, selectors
from .forms import BudgetForm, PriceForm, UsageFilterForm, stack_choices
from .models import PHASE_LABELS, Budget, ModelPrice
from .prices import PriceTable


log = logging.getLogger(__name__)

def _filters(request) -> tuple[UsageFilterForm, selectors.Period, str]:
    """The query string over the defaults (the last 30 days, by day, stacked by model)."""
    form = UsageFilterForm({**UsageFilterForm.DEFAULTS, **request.GET.dict()})
    return form, form.period_value(), form.stack_value()


@login_required
@require_GET
def usage_page(request):
    _require(request, "batches.view_batch")
    form, period, stack = _filters(request)
    prices = PriceTable.load()
    report = selectors.report(user=request.user, period=period, stack=stack, prices=prices)
    drawn = [{"kind": kind, "title": title, "series": report["charts"][kind], "table": _table(kind, report),
              "chart": charts.stacked_bars(report["charts"][kind], money_values=kind == "cost")}
             for kind, title in selectors.CHARTS.items()]
    return render(request, "usage/usage.html", {
        "form": form, "period": period, "stack": stack, "report": report, "charts": drawn,
        "top": selectors.top_batches(user=request.user, period=period),
        "timing": selectors.timing(user=request.user, period=period), "phase_labels": PHASE_LABELS,
        "budgets": selectors.budget_states(request.user, prices=prices),
        "query": request.GET.urlencode(), "baseline_days": settings.USAGE_BASELINE_DAYS,
        "can_edit_prices": may_edit_prices(request.user), "stack_label": dict(stack_choices())[stack],
    })


@login_required
@require_GET
def usage_export(request, kind: str):
    """One chart's table as CSV: a row per day or week, a column per stack, and the total."""
    _require(request, "batches.view_batch")
    if kind not in selectors.CHARTS:
        raise Http404("No such table")
    _, period, stack = _filters(request)
    series = selectors.report(user=request.user, period=period, stack=stack, prices=PriceTable.load())["charts"][kind]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (f'attachment; filename="batchboard-{kind}-{period.start:%Y%m%d}-'
                                       f'{period.end:%Y%m%d}-by-{period.group}.csv"')
    writer = csv.writer(response)
    writer.writerow([period.group, *(_safe_cell(label) for label in series["labels"]), "total"])
    for row in _table(kind, {"charts": {kind: series}}):
        writer.writerow([row["bucket"], *row["cells"], row["total"]])
    return response


def _table(kind: str, report: dict) -> list[dict]:
    """A chart's table as the page shows it and the CSV writes it: the same strings, so they cannot differ."""
    return [{"bucket": f"{row['bucket']:%Y-%m-%d}", "cells": [_number(kind, v) for v in row["values"]],
             "total": _number(kind, row["total"])} for row in report["charts"][kind]["rows"]]


def _number(kind: str, value) -> str:
    return f"{value:.4f}" if kind == "cost" else str(int(value))


def _safe_cell(text: str) -> str:
    """A label as a CSV cell that a spreadsheet will not run as a formula (metadata values come from anyone)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _posted(request):
    """The form's data on a POST, even an empty one (so that it is refused with its errors, a 400)."""
    return request.POST if request.method == "POST" else None


# ----- prices and budgets (Admins) ----------------------------------------------------------------------
def _require(request, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


def may_edit_prices(user, permission: str = "usage.change_modelprice") -> bool:
    """Prices are everyone's: they change every team's costs, budgets and alerts, so only an Admin who sees every
    connection edits them."""
    return user.has_perm(permission) and batch_selectors.visible_connection_ids(user) is None


def _require_prices(request, permission: str) -> None:
    if not may_edit_prices(request.user, permission):
        raise PermissionDenied


def _save(request, form, action: str, *, stamp: str = ""):
    """Save a valid price or budget form (`stamp`: the field that records who), and audit it. A price's
    batches, under its old name and its new one, are re-priced in the background."""
    before = form.initial.get("model", "")
    thing = form.save(commit=False)
    if stamp:
        setattr(thing, stamp, request.user)
    thing.save()
    _audit(request, action, thing)
    if isinstance(thing, ModelPrice):
        _reprice(request, before, thing.model)
    return thing


def _reprice(request, *prefixes: str) -> None:
    """Queue the re-pricing of the stored costs (the most expensive batches list) of these models; the price is
    saved already (no ATOMIC_REQUESTS). The page's charts and totals are priced when read: new prices show at once."""
    from .tasks import reprice_batches

    try:
        for prefix in sorted({p for p in prefixes if p}):
            reprice_batches.delay(prefix)
    except Exception:  # the broker is down: say so, the change itself stands
        log.exception("re-pricing could not be queued")
        messages.warning(request, "The most expensive batches list could not be re-priced now; it catches up "
                                  "when `manage.py rebuild_usage` runs.")


def _audit(request, action: str, thing) -> None:
    target, detail = thing.described()
    audit.record(action, actor=request.user, request=request, target=target, detail=detail,
                 connection=getattr(thing, "connection", None))


@login_required
@require_http_methods(["GET", "POST"])
def price_list(request):
    """Every price row, and a form to add one; Admins only."""
    _require_prices(request, "usage.change_modelprice")
    form = PriceForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        price = _save(request, form, "price_add", stamp="updated_by")
        messages.success(request, f"Price for {price.model} from {price.valid_from} added.")
        return redirect("usage-prices")
    last_30_days = UsageFilterForm(UsageFilterForm.DEFAULTS).period_value()
    unknown = selectors.report(user=request.user, period=last_30_days, stack="model",
                               prices=PriceTable.load())["unpriced"]
    return render(request, "usage/prices.html", {"form": form, "prices": ModelPrice.objects.all(), "unknown": unknown,
                                                 "discount": settings.BATCH_PRICE_DISCOUNT},
                  status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def price_edit(request, pk: int):
    _require_prices(request, "usage.change_modelprice")
    price = ModelPrice.objects.filter(pk=pk).first()
    if price is None:
        raise Http404("No such price")
    form = PriceForm(_posted(request), instance=price)
    if request.method == "POST" and form.is_valid():
        _save(request, form, "price_change", stamp="updated_by")
        messages.success(request, "Saved.")
        return redirect("usage-prices")
    return render(request, "usage/price.html", {"form": form, "price": price}, status=400 if form.errors else 200)


@login_required
@require_POST
def price_delete(request, pk: int):
    _require_prices(request, "usage.delete_modelprice")
    price = ModelPrice.objects.filter(pk=pk).first()
    if price is None:
        raise Http404("No such price")
    price.delete()
    _audit(request, "price_delete", price)
    _reprice(request, price.model)
    messages.success(request, f"Price for {price.model} from {price.valid_from} removed.")
    return redirect("usage-prices")


# ----- budgets ------------------------------------------------------------------------------------------
def _budget_form(request, instance=None) -> BudgetForm:
    visible_ids = batch_selectors.visible_connection_ids(request.user)
    return BudgetForm(_posted(request), instance=instance, sees_all=visible_ids is None,
                      connections=batch_selectors.visible_connections(request.user))


@login_required
@require_http_methods(["GET", "POST"])
def budget_list(request):
    """The budgets this Admin sees (selectors.visible_budgets), and a form to add one."""
    _require(request, "usage.change_budget")
    form = _budget_form(request)
    if request.method == "POST" and form.is_valid():
        budget = _save(request, form, "budget_add", stamp="created_by")
        messages.success(request, f"Budget {budget.name} added.")
        return redirect("usage-budgets")
    return render(request, "usage/budgets.html", {"form": form, "budgets": selectors.visible_budgets(request.user)},
                  status=400 if form.errors else 200)


def _get_budget_for_user(request, pk: int) -> Budget:
    found = [budget for budget in selectors.visible_budgets(request.user) if budget.pk == pk]
    if not found:
        raise Http404("No such budget")
    return found[0]


@login_required
@require_http_methods(["GET", "POST"])
def budget_edit(request, pk: int):
    _require(request, "usage.change_budget")
    budget = _get_budget_for_user(request, pk)
    form = _budget_form(request, instance=budget)
    if request.method == "POST" and form.is_valid():
        _save(request, form, "budget_change")
        messages.success(request, "Saved.")
        return redirect("usage-budgets")
    return render(request, "usage/budget.html", {"form": form, "budget": budget}, status=400 if form.errors else 200)


@login_required
@require_POST
def budget_delete(request, pk: int):
    _require(request, "usage.delete_budget")
    budget = _get_budget_for_user(request, pk)
    budget.delete()
    _audit(request, "budget_delete", budget)
    messages.success(request, f"Budget {budget.name} removed.")
    return redirect("usage-budgets")
