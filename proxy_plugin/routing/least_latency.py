"""The ``least_latency`` strategy: lowest recent latency first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy_plugin.provider import Provider


class LeastLatency:
    """Lowest recent latency first; providers without samples first, to learn theirs."""

    name = "least_latency"

    def order(self, providers: Sequence[Provider]) -> list[Provider]:
        """Sort by the latency moving average."""
        return sorted(providers, key=lambda p: (p.ewma is not None, p.ewma or 0.0, p.index))
