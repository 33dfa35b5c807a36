"""The ``least_busy`` strategy: lowest share of capacity in use first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy_plugin.provider import Provider
    from proxy_plugin.routing.base import Context


class LeastBusy:
    """Lowest share of capacity in use first."""

    name = "least_busy"

    def __init__(self, ctx: Context | None = None) -> None:
        """Stateless."""

    def order(self, providers: Sequence[Provider], model: str = "") -> list[Provider]:
        """Sort by load, then config order."""
        return sorted(providers, key=lambda p: (p.load, p.index))
