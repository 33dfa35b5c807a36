"""Routing strategies: each orders the available providers for one request."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Protocol

from proxy_plugin.provider import Provider


class Strategy(Protocol):
    """Orders candidate providers: the first is tried first."""

    name: str

    def order(self, providers: Sequence[Provider]) -> list[Provider]:
        """Return the providers in the order to try them."""


class Weighted:
    """Random in proportion to weight (weighted sampling without replacement)."""

    name = "weighted"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def order(self, providers: Sequence[Provider]) -> list[Provider]:
        """Draw providers one by one, each with probability weight / remaining weight."""
        if len(providers) <= 1:
            return list(providers)
        rng = self._rng
        # Efraimidis-Spirakis: key = u ** (1 / w), highest first; weight 0 goes last.
        keyed = []
        for p in providers:
            w = p.config.weight
            # (key, -index): highest key first, then config order; indexes differ, so providers are never compared
            keyed.append((rng.random() ** (1.0 / w) if w > 0 else -rng.random(), -p.index, p))
        keyed.sort(reverse=True)
        return [p for _, _, p in keyed]


class RoundRobin:
    """Strict rotation over the available providers."""

    name = "round_robin"

    def __init__(self) -> None:
        self._counter = itertools.count()

    def order(self, providers: Sequence[Provider]) -> list[Provider]:
        """Start one further along the list each request."""
        if not providers:
            return []
        start = next(self._counter) % len(providers)
        return list(providers[start:]) + list(providers[:start])


class Failover:
    """The first available provider in config order."""

    name = "failover"

    def order(self, providers: Sequence[Provider]) -> list[Provider]:
        """Config order."""
        return sorted(providers, key=lambda p: p.index)


class LeastLatency:
    """Lowest recent latency first; providers without samples first, to learn theirs."""

    name = "least_latency"

    def order(self, providers: Sequence[Provider]) -> list[Provider]:
        """Sort by the latency moving average."""
        return sorted(providers, key=lambda p: (p.ewma is not None, p.ewma or 0.0, p.index))


class LeastBusy:
    """Lowest share of capacity in use first."""

    name = "least_busy"

    def order(self, providers: Sequence[Provider]) -> list[Provider]:
        """Sort by load, then config order."""
        return sorted(providers, key=lambda p: (p.load, p.index))


STRATEGIES = {cls.name: cls for cls in (Weighted, RoundRobin, Failover, LeastLatency, LeastBusy)}


def make_strategy(name: str) -> Strategy:
    """The strategy registered under ``name``."""
    return STRATEGIES[name]()
