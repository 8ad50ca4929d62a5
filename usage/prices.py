"""Pricing: the ModelPrice table, read once per page, and what tokens cost at the price of their day.

A model matches its longest priced prefix; among that prefix's rows, the latest `valid_from` on or before the
day. The batch discount (BATCH_PRICE_DISCOUNT) applies on top: the Batch API bills half the standard rate.
"""

from datetime import date
from decimal import Decimal

from django.conf import settings
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


class PriceTable:
    """Every ModelPrice row in memory (a few dozen): price lookups for a whole page cost one query."""

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
        if model not in self._match:
            matches = [name for name in self._rows if model.startswith(name)]
            self._match[model] = max(matches, key=len) if matches else None
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
