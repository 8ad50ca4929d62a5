"""Pricing: the ModelPrice table, read once per page, and what tokens cost at the price of their day.

A model is priced by its own row name (or the name of which it is a dated snapshot), else the longest `*` prefix
that matches it; among that name's rows, the latest `valid_from` on or before the day. The batch discount
(BATCH_PRICE_DISCOUNT) applies on top: the Batch API bills half the standard rate.
"""

import re
from datetime import date
from decimal import Decimal

from django.conf import settings
from django.db import connection as db
from django.utils import timezone

# The starter table the first migration loads when MODEL_PRICES_JSON is not set: OpenAI's standard (not batch)
# list prices, USD per million tokens, as published on openai.com/api/pricing. An estimate: check it there.
STARTER_SOURCE = "openai.com/api/pricing, standard tier, as of 2025-08 (an estimate: check before relying on it)"
STARTER_VALID_FROM = date(2024, 1, 1)
STARTER_PRICES = {
    "gpt-4o": {"input": 2.50, "cached_input": 1.25, "output": 10.00},
    "gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.60},
    "gpt-4.1": {"input": 2.00, "cached_input": 0.50, "output": 8.00},
    "gpt-4.1-mini": {"input": 0.40, "cached_input": 0.10, "output": 1.60},
    "gpt-4.1-nano": {"input": 0.10, "cached_input": 0.025, "output": 0.40},
    "gpt-5": {"input": 1.25, "cached_input": 0.125, "output": 10.00},
    "gpt-5-mini": {"input": 0.25, "cached_input": 0.025, "output": 2.00},
    "gpt-5-nano": {"input": 0.05, "cached_input": 0.005, "output": 0.40},
    "o3": {"input": 2.00, "cached_input": 0.50, "output": 8.00},
    "o3-mini": {"input": 1.10, "cached_input": 0.55, "output": 4.40},
    "o4-mini": {"input": 1.10, "cached_input": 0.275, "output": 4.40},
    "text-embedding-3-small": {"input": 0.02, "cached_input": 0.02, "output": 0.0},
    "text-embedding-3-large": {"input": 0.13, "cached_input": 0.13, "output": 0.0},
}


# A dated snapshot of a model: gpt-4o-2024-08-06, gpt-4-0613.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})")


def prices_model(name: str, model: str) -> bool:
    """Whether a price row named `name` prices `model`: the same name, one of its dated snapshots, or, for a name
    ending in `*`, any model starting with the rest (`ft:gpt-4o-mini*`). So `o3` prices `o3-2025-04-16` but not
    `o3-pro`, which is listed as unpriced until it has a row of its own."""
    if name.endswith("*"):
        return model.startswith(name[:-1])
    return model == name or (model.startswith(name) and bool(_SNAPSHOT.fullmatch(model[len(name):])))


class PriceTable:
    """Every ModelPrice row in memory (a few dozen): price lookups for a whole page cost one query. Of the rows
    that price a model (prices_model), its own name (or its snapshot's) wins over a `*` name, then the longest."""

    def __init__(self, rows):
        self._rows: dict[str, list] = {}
        for row in sorted(rows, key=lambda r: r.valid_from, reverse=True):
            self._rows.setdefault(row.model, []).append(row)
        self._match: dict[str, str | None] = {}

    @classmethod
    def load(cls) -> "PriceTable":
        from .models import ModelPrice

        return cls(ModelPrice.objects.all())

    def _prefix(self, model: str) -> str | None:
        """The row name pricing `model`: its own or its snapshot's before any `*` name, the longest of either."""
        if model not in self._match:
            matches = [name for name in self._rows if prices_model(name, model)]
            self._match[model] = max(matches, key=lambda name: (not name.endswith("*"), len(name)), default=None)
        return self._match[model]

    def price(self, model: str, day: date | None = None):
        """The ModelPrice row pricing `model` on `day` (today when None); None when there is none."""
        prefix = self._prefix(model) if model else None
        if prefix is None:
            return None
        day = day or timezone.now().date()
        return next((row for row in self._rows[prefix] if row.valid_from <= day), None)

    def cost(self, model: str, day: date | None = None, *, input_tokens, cached_tokens, output_tokens) -> float | None:
        """Estimated USD for these tokens (one batch's, or a day's sum for one model), batch discount applied;
        None for an unpriced model."""
        price = self.price(model, day)
        if price is None:
            return None
        cached = max(cached_tokens or 0, 0)
        uncached = max((input_tokens or 0) - cached, 0)
        return priced(price, uncached=uncached, cached=cached, output=max(output_tokens or 0, 0))


def batch_cost(value: dict, prices: PriceTable) -> float | None:
    """A batch's estimated cost (a dict of its fields, as usage/rollup.py reads them), priced at its day; None
    before it has usage, or for an unpriced model."""
    if value.get("input_tokens") is None:
        return None
    from .rollup import capped, day_of

    return prices.cost(value["model"], day_of(value), **{name: capped(value[name]) for name in (
        "input_tokens", "cached_tokens", "output_tokens")})


def reprice(*, prefix: str = "", batch_model=None, price_model=None, chunk: int = 2000) -> int:
    """Recompute the stored cost (Batch.cost_usd) of the batches whose model starts with `prefix` (all when
    empty), after a price changed; migrations pass their historical models. Returns how many changed."""
    if batch_model is None:
        from batches.models import Batch as batch_model
    if price_model is None:
        from .models import ModelPrice as price_model
    prices, last, changed = PriceTable(price_model.objects.all()), 0, 0
    names = ("pk", "model", "created_at", "first_seen_at", "input_tokens", "cached_tokens", "output_tokens", "cost_usd")
    while True:
        rows = list(batch_model.objects.filter(pk__gt=last, model__startswith=prefix.removesuffix("*"))
                    .order_by("pk").values(*names)[:chunk])
        if not rows:
            return changed
        last = rows[-1]["pk"]
        updates = [(row["pk"], cost, row["model"], row["input_tokens"], row["cached_tokens"], row["output_tokens"])
                   for row in rows if (cost := batch_cost(row, prices)) != row["cost_usd"]]
        if updates:
            changed += _set_costs(batch_model._meta.db_table, updates)


def _set_costs(table: str, updates: list[tuple]) -> int:
    """One UPDATE … FROM a VALUES list for a chunk of costs, the same on PostgreSQL and SQLite (3.33+): the ORM's
    bulk_update writes a CASE with a branch per row, which PostgreSQL walks for every row (minutes at 1,000,000).
    A row is written only if its model and tokens are still those read: a store that changed them meanwhile also
    stored their cost, which must not be overwritten. Returns how many rows were written."""
    same = "IS NOT DISTINCT FROM" if db.vendor == "postgresql" else "IS"  # NULL-safe equality
    with db.cursor() as cursor:
        # A VALUES list's columns are column1, column2, … on both databases: pk, cost, model, then the tokens.
        cursor.execute(
            f"UPDATE {table} SET cost_usd = CAST(v.column2 AS DOUBLE PRECISION) FROM (VALUES "
            + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(updates)) + f") AS v "
            f"WHERE {table}.id = v.column1 AND {table}.model = v.column3 "
            + " ".join(f"AND {table}.{column} {same} CAST(v.column{n} AS BIGINT)" for n, column in (
                (4, "input_tokens"), (5, "cached_tokens"), (6, "output_tokens"))),
            [value for row in updates for value in row])
        return cursor.rowcount


def priced(price, *, uncached: int, cached: int, output: int) -> float:
    full = (uncached * Decimal(price.input) + cached * Decimal(price.cached_input)
            + output * Decimal(price.output)) / 1_000_000
    return round(float(full) * settings.BATCH_PRICE_DISCOUNT, 6)


def seed_rows(model_price, prices: dict, *, source: str, valid_from: date) -> list:
    """ModelPrice rows (of `model_price`, the migration's historical model) for a {model: {input, cached_input,
    output}} table."""
    return [model_price(model=model, valid_from=valid_from, input=Decimal(str(p.get("input", 0))),
                        cached_input=Decimal(str(p.get("cached_input", p.get("input", 0)))),
                        output=Decimal(str(p.get("output", 0))), source=source)
            for model, p in prices.items()]
