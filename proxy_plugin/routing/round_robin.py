"""The ``round_robin`` strategy: strict rotation over the available providers."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy_plugin.provider import Provider
    from proxy_plugin.routing.base import Context


class RoundRobin:
    """Strict rotation over the available providers."""

    name = "round_robin"

    def __init__(self, ctx: Context | None = None) -> None:
        """Start the rotation at the first provider."""
        self._counter = itertools.count()

    def order(self, providers: Sequence[Provider], model: str = "") -> list[Provider]:
        """Start one further along the list each request."""
        if not providers:
            return []
        start = next(self._counter) % len(providers)
        return list(providers[start:]) + list(providers[:start])
