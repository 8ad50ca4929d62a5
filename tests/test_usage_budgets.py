"""Budgets: their period, the spend with batches in flight at their expected cost and a forecast, an alert event
per threshold per period (none while a connection is still importing), and who sees which budget."""

from datetime import UTC, date, datetime

import pytest

from notifications.models import Event
from usage.budgets import check_budgets, consumption, period_of
from usage.models import Budget
from usage.prices import PriceTable

NOW = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)  # a Wednesday, 10.5 days into March


@pytest.mark.parametrize("period,today,expected", [
    ("month", date(2026, 3, 11), (date(2026, 3, 1), date(2026, 4, 1))),
    ("month", date(2026, 2, 28), (date(2026, 2, 1), date(2026, 3, 1))),
    ("month", date(2026, 12, 31), (date(2026, 12, 1), date(2027, 1, 1))),
    ("week", date(2026, 3, 11), (date(2026, 3, 9), date(2026, 3, 16))),
    ("week", date(2026, 3, 9), (date(2026, 3, 9), date(2026, 3, 16))),
    ("week", date(2026, 3, 15), (date(2026, 3, 9), date(2026, 3, 16))),
])
def test_a_period_is_the_calendar_month_or_the_monday_to_sunday_week(period, today, expected):
    assert period_of(Budget(period=period), today) == expected


@pytest.fixture
def spend(connection, store_usage, set_prices):
    """gpt-4o-mini at $2 per million input tokens ($1 with the batch discount). A finished batch of 100 requests
    costing $1.00 on March 5, and one running since March 10: 50 requests, 10 done, $0.10 so far. So a request
    costs $0.01 on average, and the running one should add 50 × $0.01 − $0.10 = $0.40."""
    set_prices(("gpt-4o-mini", date(2024, 1, 1), 2, 1, 8))
    store_usage(connection, "batch_done", date(2026, 3, 5), input=1_000_000, team="growth")
    store_usage(connection, "batch_running", date(2026, 3, 10), status="in_progress", finalizing_at=None,
                completed_at=None, total=50, completed=10, input=100_000, team="growth")


def test_consumption_counts_batches_in_flight_at_their_expected_cost_and_forecasts_the_month(connection, spend):
    budget = Budget.objects.create(name="growth", amount_usd=10, meta_key="team", meta_value="growth")
    state = consumption(budget, prices=PriceTable.load(), now=NOW)
    assert state["spent"] == pytest.approx(1.10)
    assert state["in_flight"] == pytest.approx(0.40)
    assert state["total"] == pytest.approx(1.50) and state["percent"] == 15.0
    # the finished spend's daily rate (1.10 over 10.5 days) for the 20.5 days left, on top of the total
    assert state["forecast"] == pytest.approx(1.50 + 1.10 / 10.5 * 20.5)
    assert (state["start"], state["end"]) == (date(2026, 3, 1), date(2026, 3, 31))


def test_a_budget_counts_only_its_scope(connection, other_connection, spend, store_usage):
    store_usage(other_connection, "batch_elsewhere", date(2026, 3, 6), input=5_000_000, team="growth")
    store_usage(connection, "batch_search", date(2026, 3, 6), input=5_000_000, team="search")
    store_usage(connection, "batch_february", date(2026, 2, 27), input=5_000_000, team="growth")
    budget = Budget.objects.create(name="growth on sim", amount_usd=10, connection=connection, meta_key="team",
                                   meta_value="growth")
    assert consumption(budget, prices=PriceTable.load(), now=NOW)["spent"] == pytest.approx(1.10)
    everything = Budget.objects.create(name="all", amount_usd=100)
    assert consumption(everything, prices=PriceTable.load(), now=NOW)["spent"] == pytest.approx(11.10)


def _events() -> list[tuple[str, str]]:
    return sorted(Event.objects.filter(kind__startswith="budget.").values_list("kind", "dedupe_key"))


def test_each_threshold_raises_one_event_per_period(imported, spend, store_usage):
    budget = Budget.objects.create(name="growth", amount_usd="1.80", meta_key="team", meta_value="growth")
    check_budgets(now=NOW)  # $1.50 of $1.80: 83%
    check_budgets(now=NOW)
    key = f"budget:{budget.pk}:2026-03-01"
    assert _events() == [("budget.nearly_spent", f"{key}:80")]
    store_usage(imported, "batch_more", date(2026, 3, 11), input=1_000_000, team="growth")
    check_budgets(now=NOW)
    check_budgets(now=NOW)
    assert _events() == [("budget.nearly_spent", f"{key}:80"), ("budget.spent", f"{key}:100")]
    event = Event.objects.get(kind="budget.spent")
    assert event.data["budget"] == "growth" and "still in flight" in event.data["reason"]

    store_usage(imported, "batch_april", date(2026, 4, 2), input=2_000_000, team="growth")
    check_budgets(now=datetime(2026, 4, 3, tzinfo=UTC))  # a new month: its own events
    assert [kind for kind, dedupe in _events() if "2026-04-01" in dedupe] == ["budget.nearly_spent", "budget.spent"]


def test_a_channel_for_one_team_gets_that_teams_budget_alerts_and_budgets_without_a_team(imported, spend,
                                                                                          make_channel, client, login):
    from notifications.models import Delivery
    from notifications.outbox import run_outbox

    kinds = ["budget.nearly_spent", "budget.spent"]
    growth = make_channel("email", "growth@example.com", name="growth only", events=kinds,
                          metadata_match="team=growth")
    make_channel("email", "search@example.com", name="search only", events=kinds, metadata_match="team=search")
    Budget.objects.create(name="growth", amount_usd="1.80", meta_key="team", meta_value="growth")
    Budget.objects.create(name="everything", amount_usd="1.80")
    check_budgets(now=NOW)
    run_outbox()
    assert sorted(Delivery.objects.values_list("event__data__budget", "channel__name")) == [
        ("everything", "growth only"), ("everything", "search only"), ("growth", "growth only")]
    login("admin")
    log = client.get(f"/alerts/{growth.pk}/").content.decode().split('id="delivery-log"')[1]
    assert "growth <span class=\"muted\">(every connection, team=growth)</span>" in log  # which budget it was


def test_a_budget_under_its_first_threshold_raises_nothing(imported, spend):
    Budget.objects.create(name="growth", amount_usd=2, meta_key="team", meta_value="growth")  # 75%
    check_budgets(now=NOW)
    assert _events() == []


def test_a_budget_on_a_connection_still_importing_raises_nothing(connection, spend):
    assert connection.imported_at is None
    Budget.objects.create(name="sim", amount_usd="0.50", connection=connection)
    Budget.objects.create(name="everything", amount_usd="0.50")
    check_budgets(now=NOW)
    assert _events() == []


@pytest.fixture
def budgets(connection, other_connection):
    return {name: Budget.objects.create(name=name, amount_usd=100, connection=conn) for name, conn in (
        ("Budget of sim", connection), ("Budget of other", other_connection), ("Budget of all", None))}


def _budget_names(client) -> set[str]:
    section = client.get("/usage/").content.decode().split('id="budgets"')[1]
    return {name for name in ("Budget of sim", "Budget of other", "Budget of all") if name in section}


def test_a_team_member_sees_only_the_budgets_of_their_connections(client, login, two_teams, budgets):
    login("viewer", team="Red")
    assert _budget_names(client) == {"Budget of sim"}


def test_whoever_sees_every_connection_sees_every_budget(client, login, budgets):
    login("viewer")
    assert _budget_names(client) == {"Budget of sim", "Budget of other", "Budget of all"}


def test_a_team_admin_cannot_open_or_delete_another_teams_budget(client, login, two_teams, budgets):
    login("admin", team="Red")
    other = budgets["Budget of other"].pk
    assert client.get(f"/usage/budgets/{other}/").status_code == 404
    assert client.post(f"/usage/budgets/{other}/delete/").status_code == 404
    assert client.get(f"/usage/budgets/{budgets['Budget of all'].pk}/").status_code == 404
    page = client.get("/usage/budgets/").content.decode()
    assert "Budget of sim" in page and "Budget of other" not in page and "Budget of all" not in page
    # and cannot make one over every connection: the form requires one of theirs
    response = client.post("/usage/budgets/", {"name": "sneaky", "amount_usd": "5", "period": "month"})
    assert response.status_code == 400 and not Budget.objects.filter(name="sneaky").exists()
    response = client.post("/usage/budgets/", {"name": "sneaky", "amount_usd": "5", "period": "month",
                                               "connection": budgets["Budget of other"].connection_id})
    assert response.status_code == 400 and not Budget.objects.filter(name="sneaky").exists()
