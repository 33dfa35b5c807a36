"""What an answer costs: each provider's prices in USD per million tokens, by its model name (after ``model_map``).

A provider's ``"*"`` entry prices its other models; a provider without ``prices`` costs 0
(and ``/admin/spend`` lists it under ``unpriced``). Built once per configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy_plugin.config.schema import PriceConfig, ProviderConfig

PER_TOKEN = 1e-6  # prices are per million tokens
_WORST_CACHE = 1024  # model names whose worst price is remembered (client-sent names: bounded)


class PriceBook:
    """Prices by provider and model, and the worst price any provider could charge for a requested model."""

    __slots__ = ("_maps", "_prices", "_worst")

    def __init__(self, providers: Sequence[ProviderConfig]) -> None:
        self._prices = {p.name: p.prices for p in providers if p.prices}
        self._maps = [(p.model_map, p.prices) for p in providers]
        self._worst: dict[str, tuple[float, float]] = {}

    @property
    def any(self) -> bool:
        """Whether any provider has prices."""
        return bool(self._prices)

    def priced(self, provider: str) -> bool:
        """Whether ``provider`` has prices."""
        return provider in self._prices

    def price(self, provider: str, model: str) -> PriceConfig | None:
        """``provider``'s price of ``model`` (its own model name), its ``"*"`` price, or None."""
        prices = self._prices.get(provider)
        if prices is None:
            return None
        return prices.get(model) or prices.get("*")

    def cost(self, provider: str, model: str, prompt: int, completion: int) -> float:
        """USD of an answer of ``prompt`` + ``completion`` tokens from ``provider``'s ``model``."""
        price = self.price(provider, model)
        if price is None:
            return 0.0
        return (prompt * price.input + completion * price.output) * PER_TOKEN

    def worst(self, model: str) -> tuple[float, float]:
        """The highest input and output prices (USD per token) any provider could charge for ``model`` as requested."""
        found = self._worst.get(model)
        if found is not None:
            return found
        high_in = high_out = 0.0
        for model_map, prices in self._maps:
            if not prices:
                continue
            price = prices.get(model_map.get(model, model)) or prices.get("*")
            if price is not None:
                high_in, high_out = max(high_in, price.input), max(high_out, price.output)
        found = (high_in * PER_TOKEN, high_out * PER_TOKEN)
        if len(self._worst) < _WORST_CACHE:
            self._worst[model] = found
        return found
