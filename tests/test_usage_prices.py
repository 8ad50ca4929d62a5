"""Prices: history priced at the price of its day (re-priced when a row is added), the longest prefix wins,
unknown models listed rather than counted as free, the seeded table (starter or MODEL_PRICES_JSON, on the first
migration only), and a bad MODEL_PRICES_JSON refused at start-up."""

import csv
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from usage import prices
from usage.models import ModelPrice

ROOT = Path(__file__).resolve().parent.parent
MARCH = "/usage/?period=custom&start=2026-03-01&end=2026-03-31&stack=model"


def _csv(response) -> list[list[str]]:
    return list(csv.reader(response.content.decode().splitlines()))


def _cost_by_day(client, query: str = MARCH) -> dict[str, str]:
    rows = _csv(client.get(query.replace("/usage/", "/usage/cost.csv")))
    return {row[0]: row[-1] for row in rows[1:] if row[-1] != "0.0000"}


@pytest.fixture
def march(connection, store_usage, set_prices, login):
    """gpt-4o-mini at $2 input per million until 2026-03-09, $4 from 2026-03-10 (batch discount: half); one
    batch of a million input tokens on each side of the change; an Admin logged in."""
    set_prices(("gpt-4o-mini", date(2024, 1, 1), 2, 1, 8), ("gpt-4o-mini", date(2026, 3, 10), 4, 2, 16))
    store_usage(connection, "batch_before", date(2026, 3, 5), input=1_000_000)
    store_usage(connection, "batch_after", date(2026, 3, 12), input=1_000_000)
    login("admin")


def test_each_batch_is_priced_at_the_price_of_its_day_on_the_usage_page_and_csv(client, march):
    assert _cost_by_day(client) == {"2026-03-05": "1.0000", "2026-03-12": "2.0000"}
    page = client.get(MARCH).content.decode()
    assert "<dt>Estimated cost</dt><dd>$3.00</dd>" in page


def test_the_detail_page_prices_each_batch_at_its_day(client, march):
    assert "<strong>$1.0000</strong> estimated" in client.get("/batches/sim/batch_before/").content.decode()
    assert "<strong>$2.0000</strong> estimated" in client.get("/batches/sim/batch_after/").content.decode()


def test_a_price_added_for_an_earlier_day_reprices_that_history_only(client, march):
    response = client.post("/usage/prices/", {"model": "gpt-4o-mini", "valid_from": "2026-03-01", "input": "6",
                                              "cached_input": "3", "output": "24", "source": "invoice"})
    assert response.status_code == 302
    assert _cost_by_day(client) == {"2026-03-05": "3.0000", "2026-03-12": "2.0000"}
    assert "<strong>$3.0000</strong> estimated" in client.get("/batches/sim/batch_before/").content.decode()
    assert "<strong>$2.0000</strong> estimated" in client.get("/batches/sim/batch_after/").content.decode()


def test_the_store_keeps_each_batch_cost_for_ranking(connection, march, store_usage):
    from batches.models import Batch

    assert dict(Batch.objects.values_list("batch_id", "cost_usd")) == {"batch_before": 1.0, "batch_after": 2.0}
    store_usage(connection, "batch_before", date(2026, 3, 5), input=3_000_000)  # the API reports more usage
    assert Batch.objects.get(batch_id="batch_before").cost_usd == 3.0


def test_a_price_change_queues_the_repricing_of_stored_costs_which_reorders_the_top_list(client, march, monkeypatch):
    from batches.models import Batch
    from usage import tasks

    queued = []
    monkeypatch.setattr(tasks.reprice_batches, "delay", queued.append)
    client.post("/usage/prices/", {"model": "gpt-4o-mini", "valid_from": "2026-03-01", "input": "10",
                                   "cached_input": "5", "output": "40"})
    assert queued == ["gpt-4o-mini"]
    assert Batch.objects.get(batch_id="batch_before").cost_usd == 1.0  # until the task runs
    assert prices.reprice(prefix=queued[0]) == 1
    assert dict(Batch.objects.values_list("batch_id", "cost_usd")) == {"batch_before": 5.0, "batch_after": 2.0}
    top = client.get(MARCH).content.decode().split('id="top-cost"')[1]
    assert top.index("batch_before") < top.index("batch_after")


def test_a_price_change_still_saves_when_the_broker_is_down(client, march, monkeypatch):
    from usage import tasks

    def refuse(prefix):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.reprice_batches, "delay", refuse)
    price = ModelPrice.objects.get(valid_from=date(2026, 3, 10))
    response = client.post(f"/usage/prices/{price.pk}/", {"model": "gpt-4o-mini", "valid_from": "2026-03-10",
                                                          "input": "8", "cached_input": "4", "output": "32"},
                           follow=True)
    assert ModelPrice.objects.get(pk=price.pk).input == Decimal(8)
    assert "could not be re-priced now" in response.content.decode()


def test_rebuild_usage_also_reprices_every_batch(march):
    from django.core.management import call_command

    from batches.models import Batch

    Batch.objects.update(cost_usd=None)
    call_command("rebuild_usage", stdout=open(os.devnull, "w"))
    assert dict(Batch.objects.values_list("batch_id", "cost_usd")) == {"batch_before": 1.0, "batch_after": 2.0}


def test_cached_input_is_priced_at_the_cached_rate_and_output_at_its_own(set_prices):
    set_prices(("gpt-4o-mini", date(2024, 1, 1), 2, 1, 8))
    table = prices.PriceTable.load()
    # (600k uncached × $2 + 400k cached × $1 + 100k output × $8) / 1M = $2.40, half with the batch discount
    assert table.cost("gpt-4o-mini", date(2026, 3, 1), input_tokens=1_000_000, cached_tokens=400_000,
                      output_tokens=100_000) == pytest.approx(1.20)


def test_the_longest_prefix_wins(connection, client, login, store_usage, set_prices):
    set_prices(("gpt-4o", date(2024, 1, 1), 10, 5, 40), ("gpt-4o-mini", date(2024, 1, 1), 2, 1, 8))
    table = prices.PriceTable.load()
    assert table.price("gpt-4o-mini-2024-07-18", date(2026, 3, 1)).input == Decimal(2)
    assert table.price("gpt-4o-2024-08-06", date(2026, 3, 1)).input == Decimal(10)
    assert table.price("gpt-4", date(2026, 3, 1)) is None
    store_usage(connection, "batch_mini", date(2026, 3, 2), input=1_000_000, model="gpt-4o-mini-2024-07-18")
    store_usage(connection, "batch_big", date(2026, 3, 2), input=1_000_000, model="gpt-4o-2024-08-06")
    login("viewer")
    rows = _csv(client.get(MARCH.replace("/usage/", "/usage/cost.csv")))
    day = next(row for row in rows if row[0] == "2026-03-02")
    assert dict(zip(rows[0], day)) == {"day": "2026-03-02", "gpt-4o-2024-08-06": "5.0000",
                                       "gpt-4o-mini-2024-07-18": "1.0000", "total": "6.0000"}


def test_an_unknown_model_is_listed_and_not_counted_as_free(connection, client, login, store_usage, set_prices):
    set_prices(("gpt-4o-mini", date(2024, 1, 1), 2, 1, 8))
    today = timezone.now().date()
    store_usage(connection, "batch_known", today, input=1_000_000)
    store_usage(connection, "batch_ft", today, input=1_000_000, model="ft:gpt-4.1:acme::x9")
    store_usage(connection, "batch_no_tokens", today, model="ft:never-ran")
    login("admin")
    page = client.get("/usage/").content.decode()
    assert "no price for <code>ft:gpt-4.1:acme::x9</code> (1 batch)" in page
    assert "ft:never-ran" not in page.split('id="unpriced"')[1].split("</div>")[0]  # no tokens: nothing to price
    assert "<dt>Estimated cost</dt><dd>$1.00</dd>" in page
    prices_page = client.get("/usage/prices/").content.decode()
    assert "No price for <code>ft:gpt-4.1:acme::x9</code> (1 batch in the last 30 days): add one below." in prices_page
    detail = client.get("/batches/sim/batch_ft/").content.decode()
    assert detail.count("estimated") == 0 and "cost unknown: no price for ft:gpt-4.1:acme::x9" in detail
    assert "no price for" not in client.get("/batches/sim/batch_no_tokens/").content.decode()


def test_a_cost_under_a_hundredth_of_a_cent_is_not_shown_as_zero(connection, client, login, store_usage,
                                                                 set_prices):
    set_prices(("gpt-4o-mini", date(2024, 1, 1), 2, 1, 8))
    store_usage(connection, "batch_tiny", date(2026, 3, 2), input=50)  # $0.00005
    login("viewer")
    page = client.get("/batches/sim/batch_tiny/").content.decode()
    assert "&lt; $0.0001 estimated" in page and "$0.0000" not in page


def test_seeding_takes_the_starter_table_or_model_prices_json(db, settings):
    import importlib

    from django.apps import apps

    seed = importlib.import_module("usage.migrations.0002_seed_prices_fill_rollup").seed_prices
    ModelPrice.objects.all().delete()
    settings.MODEL_PRICES = None
    seed(apps, None)
    assert set(ModelPrice.objects.values_list("model", flat=True)) == set(prices.STARTER_PRICES)
    assert set(ModelPrice.objects.values_list("source", flat=True)) == {prices.STARTER_SOURCE}
    assert "estimate" in prices.STARTER_SOURCE and "2025" in prices.STARTER_SOURCE

    ModelPrice.objects.all().delete()
    settings.MODEL_PRICES = {"acme-1": {"input": 1.5, "output": 3}}
    seed(apps, None)
    row = ModelPrice.objects.get()
    assert (row.model, row.input, row.cached_input, row.output, row.source) == (
        "acme-1", Decimal("1.5"), Decimal("1.5"), Decimal(3), "MODEL_PRICES_JSON")


def _manage(database: Path, *args, prices_json: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PRICES_JSON", "DJANGO_SETTINGS_MODULE")}
    env.update({"DJANGO_SETTINGS_MODULE": "dashboard.settings", "DATABASE_URL": f"sqlite:///{database}",
                "SECRET_KEY": "s", "BATCHBOARD_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWtleS10ZXN0LW9ubHkta2V5LTAwMDA="})
    if prices_json is not None:
        env["MODEL_PRICES_JSON"] = prices_json
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result


SHOW = ("from usage.models import ModelPrice; "
        "print(sorted((p.model, str(p.input), p.source[:17]) for p in ModelPrice.objects.all()))")


def test_a_fresh_database_starts_with_the_starter_table(tmp_path):
    _manage(tmp_path / "db.sqlite3", "migrate", "--no-input")
    shown = _manage(tmp_path / "db.sqlite3", "shell", "-c", SHOW).stdout
    assert "('gpt-4o-mini', '0.1500', 'openai.com/api/pr')" in shown and shown.count("openai.com") == len(
        prices.STARTER_PRICES)


def test_model_prices_json_seeds_the_first_migration_only(tmp_path):
    database = tmp_path / "db.sqlite3"
    _manage(database, "migrate", "--no-input", prices_json='{"acme-1": {"input": 1.5, "output": 3}}')
    seeded = "[('acme-1', '1.5000', 'MODEL_PRICES_JSON')]"
    assert _manage(database, "shell", "-c", SHOW).stdout.strip().splitlines()[-1] == seeded
    # Later: the table edited in the app wins, whatever the variable says now.
    _manage(database, "migrate", "--no-input", prices_json='{"acme-2": {"input": 9}}')
    assert _manage(database, "shell", "-c", SHOW,
                   prices_json='{"acme-2": {"input": 9}}').stdout.strip().splitlines()[-1] == seeded


@pytest.mark.parametrize("value", ["not json", '["gpt-4o"]', '{"m": {"input": -1}}', '{"m": {"input": "cheap"}}',
                                   '{"m": 2}'])
def test_a_bad_model_prices_json_is_refused_at_start_up(value):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update({"DJANGO_SETTINGS_MODULE": "dashboard.settings", "SECRET_KEY": "s", "BATCHBOARD_ENCRYPTION_KEYS": "k",
                "MODEL_PRICES_JSON": value})
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ImproperlyConfigured: MODEL_PRICES_JSON" in result.stderr


def test_a_name_prices_its_dated_snapshots_not_other_models_that_start_alike(set_prices):
    set_prices(("o3", date(2024, 1, 1), 2, 0.5, 8), ("gpt-4", date(2024, 1, 1), 30, 30, 60),
               ("ft:gpt-4o-mini*", date(2024, 1, 1), 0.3, 0.15, 1.2))
    table, day = prices.PriceTable.load(), date(2026, 3, 1)
    assert table.price("o3", day).model == table.price("o3-2025-04-16", day).model == "o3"
    assert table.price("gpt-4-0613", day).model == "gpt-4"
    for other in ("o3-pro", "o3-deep-research", "o3-mini", "gpt-4o", "gpt-4-turbo"):
        assert table.price(other, day) is None, other
    assert table.price("ft:gpt-4o-mini-2024-07-18:acme::x9", day).model == "ft:gpt-4o-mini*"


def test_a_hostile_token_count_costs_no_more_than_the_rollup_counts(connection, set_prices, store_usage):
    from batches.models import Batch

    set_prices(("gpt-4o-mini", date(2024, 1, 1), 2, 1, 8))
    store_usage(connection, "batch_huge", date(2026, 3, 2), input=2**62)
    # at most 10^12 tokens a batch: $2 a million, half with the batch discount
    assert Batch.objects.get(batch_id="batch_huge").cost_usd == pytest.approx(10**12 / 1_000_000)


def test_repricing_leaves_a_cost_the_store_changed_meanwhile(connection, march, store_usage, monkeypatch):
    """A store commits new tokens (and their cost) between re-pricing's read and its write: its cost stays."""
    from batches.models import Batch

    real = prices._set_costs

    def store_first(table, updates):
        store_usage(connection, "batch_before", date(2026, 3, 5), input=3_000_000)  # $3.00 at the old price
        return real(table, updates)

    monkeypatch.setattr(prices, "_set_costs", store_first)
    ModelPrice.objects.filter(valid_from=date(2024, 1, 1)).update(input=10)
    assert prices.reprice(prefix="gpt-4o-mini") == 0  # batch_after is priced from 2026-03-10: unchanged
    assert Batch.objects.get(batch_id="batch_before").cost_usd == 15.0  # the store read the new price itself


def test_an_exact_name_wins_over_a_longer_star_name(set_prices):
    set_prices(("gpt-5", date(2024, 1, 1), 1.25, 0.125, 10), ("gpt-5*", date(2024, 1, 1), 1, 1, 1))
    table = prices.PriceTable.load()
    assert table.price("gpt-5", date(2026, 3, 1)).model == "gpt-5"
    assert table.price("gpt-5-2025-08-07", date(2026, 3, 1)).model == "gpt-5"
    assert table.price("gpt-5-codex", date(2026, 3, 1)).model == "gpt-5*"
