"""Prices, read in one place: USD per million tokens for a (provider, model).

The per-provider ``prices`` section (``{model: {input, output}, "*": {...}}``) belongs to the
gateway controls (issue 13); this reads it through ``getattr`` so routing works before it
lands (no prices: every provider costs 0, and ``cost`` keeps config order) and after.
A price entry may be a mapping or an object with ``input`` and ``output``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FREE = (0.0, 0.0)


def price_of(provider_config: Any, model: str) -> tuple[float, float]:
    """(input, output) USD per million tokens for ``model`` at the provider (``"*"``: its default)."""
    prices = getattr(provider_config, "prices", None)
    if not prices:
        return FREE
    entry = prices.get(model) if isinstance(prices, Mapping) else None
    if entry is None and isinstance(prices, Mapping):
        entry = prices.get("*")
    if entry is None:
        return FREE
    if isinstance(entry, Mapping):
        return float(entry.get("input", 0.0)), float(entry.get("output", 0.0))
    return float(getattr(entry, "input", 0.0)), float(getattr(entry, "output", 0.0))


def blended(provider_config: Any, model: str) -> float:
    """One figure to rank providers by: input plus output price (a request of as many tokens out as in)."""
    p_in, p_out = price_of(provider_config, model)
    return p_in + p_out


def cost_usd(provider_config: Any, model: str, input_tokens: float, output_tokens: float) -> float:
    """What a request of that usage costs at the provider."""
    p_in, p_out = price_of(provider_config, model)
    return (input_tokens * p_in + output_tokens * p_out) / 1e6
