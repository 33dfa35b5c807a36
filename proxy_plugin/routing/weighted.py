"""The ``weighted`` strategy: random order in proportion to each provider's weight."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy_plugin.provider import Provider
    from proxy_plugin.routing.base import Context


class Weighted:
    """Random in proportion to weight (weighted sampling without replacement)."""

    name = "weighted"

    def __init__(self, ctx: Context | None = None) -> None:
        """Draw from the context's random generator (a fresh one without a context)."""
        self._rng = ctx.rng if ctx is not None else random.Random()

    def order(self, providers: Sequence[Provider], model: str = "") -> list[Provider]:
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
