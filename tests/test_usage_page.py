"""The usage page: totals, SVG charts with their tables and CSV, stacks and week grouping, the period form, top
batches, timing, scoping to the user's connections; and the price and budget pages (audited, 400 on errors)."""

import csv
import re
from datetime import date, timedelta

import pytest

from batches.models import AuditEvent
from usage.models import Budget, ModelPrice

MARCH = "period=custom&start=2026-03-02&end=2026-03-08"  # Monday to Sunday


def _csv(client, kind: str, query: str) -> list[list[str]]:
    return list(csv.reader(client.get(f"/usage/{kind}.csv?{query}").content.decode().splitlines()))


def _table(page: str, kind: str) -> list[list[str]]:
    """A chart's table on the page as CSV-like rows (header first)."""
    table = re.search(rf'<table class="usage-table" id="table-{kind}">(.*?)</table>', page, re.S).group(1)
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]


def _section(page: str, element_id: str) -> str:
    return page.split(f'id="{element_id}"')[1].split("</section>")[0]


@pytest.fixture
def week(connection, other_connection, store_usage, set_prices):
    """A week of March 2026 on two connections: gpt-4o-mini ($1 per million input tokens, discount applied) and
    gpt-4o ($5); teams growth and search; one batch with many failures."""
    set_prices(("gpt-4o-mini", date(2024, 1, 1), 2, 1, 8), ("gpt-4o", date(2024, 1, 1), 10, 5, 40))
    store_usage(connection, "batch_mini_mon", date(2026, 3, 2), input=1_000_000, output=0, team="growth")
    store_usage(connection, "batch_big_tue", date(2026, 3, 3), input=2_000_000, cached=1_000_000, output=100_000,
                reasoning=5_000, team="search", project="alpha", model="gpt-4o")
    store_usage(other_connection, "batch_other_tue", date(2026, 3, 3), input=3_000_000, team="growth")
    store_usage(connection, "batch_failing_fri", date(2026, 3, 6), input=10, total=40, failed=30,
                endpoint="/v1/embeddings")
    store_usage(connection, "batch_outside", date(2026, 3, 20), input=9_000_000)


def test_the_page_shows_totals_charts_tables_top_batches_and_timing(client, login, week):
    login("viewer")
    page = client.get(f"/usage/?{MARCH}").content.decode()
    totals = _section(page, "usage-totals").split("</dl>")[0]
    # $1 + (1M × $10 + 1M × $5 + 0.1M × $40) / 2 = $1 + $9.50 + other's $3 = $13.50
    for label, value in (("Estimated cost", "$13.50"), ("Batches", "4"), ("Requests succeeded", "310"),
                         ("Requests failed", "30"), ("Input tokens", "6,000,010"),
                         ("Cached input tokens", "1,000,000"), ("Output tokens", "100,000"),
                         ("Reasoning tokens", "5,000")):
        assert f"<dt>{label}</dt><dd>{value}</dd>" in totals, label
    for kind in ("cost", "tokens", "requests"):
        chart = _section(page, f"chart-{kind}")
        assert '<svg class="bars"' in chart and chart.count('<g class="bar"') == 7  # a bar per day
        assert 'class="series-0"' in chart and '<ul class="legend small">' in chart
    cost = _table(page, "cost")
    # The stacks in one order (most requests first), so that a model has one colour in every chart.
    assert cost[0] == ["Day", "gpt-4o-mini", "gpt-4o", "Total"]
    assert _table(page, "tokens")[0] == _table(page, "requests")[0] == cost[0]
    assert cost[2] == ["2026-03-03", "3.0000", "9.5000", "12.5000"]
    assert 'aria-label="2026-03-03: $12.50 (gpt-4o-mini: $3.00; gpt-4o: $9.50)"' in page
    top = _section(page, "top-cost")
    assert top.index("batch_big_tue") < top.index("batch_other_tue") < top.index("batch_mini_mon")
    assert "$9.5000" in top and "batch_outside" not in top
    failing = _section(page, "top-failed")
    assert "batch_failing_fri" in failing and "30 of 40" in failing and "batch_mini_mon" not in failing
    timing = _section(page, "timing")
    row = re.search(r"<tr><td>gpt-4o-mini</td>.*?</tr>", timing, re.S).group(0)
    assert "2 batches" in row  # two gpt-4o-mini chat batches (one per connection), each with every phase


@pytest.mark.parametrize("stack,labels", [
    ("connection", ["Simulator", "Other"]),
    ("model", ["gpt-4o", "gpt-4o-mini"]),
    ("endpoint", ["/v1/chat/completions", "/v1/embeddings"]),
    ("meta:team", ["growth", "search", "(none)"]),
])
def test_the_charts_stack_by_connection_model_endpoint_or_a_metadata_key(client, login, week, stack, labels):
    login("viewer")
    header = _csv(client, "requests", f"{MARCH}&stack={stack}")[0]
    assert sorted(header[1:-1]) == sorted(labels)
    page = client.get(f"/usage/?{MARCH}&stack={stack}").content.decode()
    assert _table(page, "requests")[0][1:-1] == header[1:-1]


def test_a_team_value_stack_counts_each_team(client, login, week):
    login("viewer")
    rows = _csv(client, "cost", f"{MARCH}&stack=meta:team")
    tuesday = dict(zip(rows[0], next(row for row in rows if row[0] == "2026-03-03")))
    assert tuesday == {"day": "2026-03-03", "search": "9.5000", "growth": "3.0000", "(none)": "0.0000",
                       "total": "12.5000"}


def test_week_grouping_sums_each_monday_to_sunday(client, login, week):
    login("viewer")
    rows = _csv(client, "cost", "period=custom&start=2026-03-01&end=2026-03-22&group=week&stack=model")
    assert rows[0][0] == "week"
    assert [(row[0], row[-1]) for row in rows[1:]] == [
        ("2026-02-23", "0.0000"), ("2026-03-02", "13.5000"), ("2026-03-09", "0.0000"), ("2026-03-16", "9.0000")]


@pytest.mark.parametrize("query,message", [
    ("period=custom&start=2026-03-08&end=2026-03-02", "The first day must not be after the last."),
    ("period=custom&start=2026-03-08", "A custom period needs a first and a last day."),
    ("period=custom&start=2026-03-99&end=2026-04-01", "Enter a valid date."),
    ("period=custom&start=2024-01-01&end=2026-03-01", "A period spans at most 366 days."),
    ("period=custom&start=9999-12-01&end=9999-12-31", "A period lies between 2000-01-01 and a year from today."),
    ("period=custom&start=0001-01-03&end=0001-01-09&group=week",
     "A period lies between 2000-01-01 and a year from today."),
])
def test_a_bad_custom_period_says_why_and_shows_the_last_30_days(client, login, week, query, message):
    from django.utils import timezone

    login("viewer")
    response = client.get(f"/usage/?{query}")
    page = response.content.decode()
    assert response.status_code == 200
    today = timezone.now().date()
    assert message in page and f"Shown instead: {today - timedelta(days=29)} to {today}" in page
    assert len(_table(page, "cost")) == (31 if "group=week" not in query else len(_table(page, "cost")))


def test_a_bad_stack_falls_back_alone_and_keeps_a_good_period(client, login, week):
    login("viewer")
    page = client.get(f"/usage/?{MARCH}&stack=meta:gone").content.decode()
    assert "Select a valid choice." in page and "Shown instead: 2026-03-02 to 2026-03-08, stacked by model" in page
    assert _table(page, "cost")[0] == ["Day", "gpt-4o-mini", "gpt-4o", "Total"]


def test_each_csv_equals_the_table_on_the_page(client, login, week):
    login("viewer")
    for stack in ("model", "meta:team", "connection"):
        page = client.get(f"/usage/?{MARCH}&stack={stack}").content.decode()
        for kind in ("cost", "tokens", "requests"):
            shown, downloaded = _table(page, kind), _csv(client, kind, f"{MARCH}&stack={stack}")
            assert shown[1:] == downloaded[1:] and shown[0][1:-1] == downloaded[0][1:-1], (stack, kind)


def test_the_csv_download_is_an_attachment_named_after_its_period(client, login, week):
    login("viewer")
    response = client.get(f"/usage/tokens.csv?{MARCH}&group=week")
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="batchboard-tokens-20260302-20260308-by-week.csv"'
    assert client.get(f"/usage/nonsense.csv?{MARCH}").status_code == 404


def test_a_metadata_value_that_looks_like_a_formula_is_not_one_in_the_csv(client, login, connection, store_usage,
                                                                         set_prices):
    set_prices(("gpt-4o-mini", date(2024, 1, 1), 2, 1, 8))
    for i, team in enumerate(["=HYPERLINK(\"http://evil.example\")", "+1", "-2", "@SUM(A1)", "plain"]):
        store_usage(connection, f"batch_{i}", date(2026, 3, 3), input=1000 * (i + 1), team=team)
    login("viewer")
    header = _csv(client, "tokens", f"{MARCH}&stack=meta:team")[0]
    assert sorted(header[1:-1]) == sorted(["'=HYPERLINK(\"http://evil.example\")", "'+1", "'-2", "'@SUM(A1)",
                                           "plain"])


def test_a_team_member_sees_only_their_connections_usage(client, login, two_teams, week):
    login("viewer", team="Red")
    page = client.get(f"/usage/?{MARCH}&stack=connection").content.decode()
    assert "<dt>Estimated cost</dt><dd>$10.50</dd>" in page  # without other's $3
    assert "batch_other_tue" not in page and "Other" not in _section(page, "chart-cost")
    assert _csv(client, "cost", f"{MARCH}&stack=connection")[0] == ["day", "Simulator", "total"]


def test_a_user_without_a_role_is_refused_and_not_shown_the_link(client, login, week):
    login("norole")
    assert client.get("/usage/").status_code == 403
    assert client.get(f"/usage/cost.csv?{MARCH}").status_code == 403
    assert 'href="/usage/"' not in client.get("/account/").content.decode()
    login("viewer")
    assert 'href="/usage/"' in client.get("/account/").content.decode()


# ----- prices -------------------------------------------------------------------------------------------
def _audited(action: str) -> list[str]:
    return list(AuditEvent.objects.filter(action=action).values_list("target", flat=True))


def test_an_admin_adds_edits_and_deletes_a_price_each_audited(client, login, set_prices):
    set_prices()
    login("admin")
    fields = {"model": "acme-1", "valid_from": "2026-01-01", "input": "1.5", "cached_input": "0.5", "output": "6",
              "source": "contract"}
    assert client.post("/usage/prices/", fields)["Location"] == "/usage/prices/"
    price = ModelPrice.objects.get(model="acme-1")
    assert (price.input, price.updated_by.username) == (pytest.approx(1.5), "admin")
    assert _audited("price_add") == ["acme-1"]
    assert "acme-1" in client.get("/usage/prices/").content.decode()

    assert client.post(f"/usage/prices/{price.pk}/", {**fields, "output": "7"}).status_code == 302
    price.refresh_from_db()
    assert price.output == 7 and _audited("price_change") == ["acme-1"]

    assert client.post(f"/usage/prices/{price.pk}/delete/").status_code == 302
    assert not ModelPrice.objects.exists() and _audited("price_delete") == ["acme-1"]
    assert client.post(f"/usage/prices/{price.pk}/delete/").status_code == 404


@pytest.mark.parametrize("change", [{"input": "-1"}, {"model": ""}, {"valid_from": "yesterday"},
                                    {"output": "lots"}])
def test_a_bad_price_is_a_400_with_the_form_again(client, login, set_prices, change):
    set_prices(("acme-1", date(2026, 1, 1), 1, 1, 1))
    login("admin")
    fields = {"model": "acme-2", "valid_from": "2026-01-01", "input": "1", "cached_input": "1", "output": "1",
              **change}
    response = client.post("/usage/prices/", fields)
    assert response.status_code == 400 and 'id="price-form"' in response.content.decode()
    assert ModelPrice.objects.count() == 1 and not _audited("price_add")
    response = client.post(f"/usage/prices/{ModelPrice.objects.get().pk}/", fields)
    assert response.status_code == 400 and ModelPrice.objects.get().model == "acme-1"


def test_the_same_model_and_day_twice_is_a_400(client, login, set_prices):
    set_prices(("acme-1", date(2026, 1, 1), 1, 1, 1))
    login("admin")
    response = client.post("/usage/prices/", {"model": "acme-1", "valid_from": "2026-01-01", "input": "2",
                                              "cached_input": "2", "output": "2"})
    assert response.status_code == 400 and ModelPrice.objects.count() == 1


# ----- budgets ------------------------------------------------------------------------------------------
def test_an_admin_adds_edits_and_deletes_a_budget_each_audited(client, login, connection):
    login("admin")
    fields = {"name": "growth", "amount_usd": "250", "period": "week", "connection": connection.pk,
              "meta_key": "team", "meta_value": "growth"}
    assert client.post("/usage/budgets/", fields)["Location"] == "/usage/budgets/"
    budget = Budget.objects.get()
    assert (budget.amount_usd, budget.period, budget.meta_value, budget.created_by.username) == (
        250, "week", "growth", "admin")
    assert _audited("budget_add") == ["growth"]
    assert "connection Simulator, team=growth" in client.get("/usage/budgets/").content.decode()
    assert "growth" in _section(client.get("/usage/").content.decode(), "budgets")

    assert client.post(f"/usage/budgets/{budget.pk}/", {**fields, "amount_usd": "300"}).status_code == 302
    budget.refresh_from_db()
    assert budget.amount_usd == 300 and _audited("budget_change") == ["growth"]

    assert client.post(f"/usage/budgets/{budget.pk}/delete/").status_code == 302
    assert not Budget.objects.exists() and _audited("budget_delete") == ["growth"]


@pytest.mark.parametrize("change", [{"amount_usd": "0"}, {"amount_usd": "-5"}, {"meta_value": ""},
                                    {"meta_key": "colour"}, {"period": "year"}, {"name": ""}])
def test_a_bad_budget_is_a_400(client, login, connection, change):
    login("admin")
    fields = {"name": "growth", "amount_usd": "250", "period": "month", "meta_key": "team", "meta_value": "growth",
              **change}
    response = client.post("/usage/budgets/", fields)
    assert response.status_code == 400 and 'id="budget-form"' in response.content.decode()
    assert not Budget.objects.exists() and not _audited("budget_add")


def test_a_metadata_value_without_its_key_is_refused_not_widened_to_every_batch(client, login):
    login("admin")
    response = client.post("/usage/budgets/", {"name": "all", "amount_usd": "5", "period": "month",
                                               "meta_value": "growth"})
    assert response.status_code == 400 and not Budget.objects.exists()
    assert "Choose the metadata key this value is for" in response.content.decode()


def test_a_cached_price_above_the_input_price_is_refused(client, login):
    login("admin")
    response = client.post("/usage/prices/", {"model": "acme-1", "valid_from": "2026-03-01", "input": "1",
                                              "cached_input": "5", "output": "2"})
    assert response.status_code == 400 and not ModelPrice.objects.filter(model="acme-1").exists()
    assert "Cached input costs at most what input costs" in response.content.decode()
