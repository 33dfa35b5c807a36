"""The ``failover`` strategy: the first available provider in config order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy_plugin.provider import Provider
    from proxy_plugin.routing.base import Context


class Failover:
    """The first available provider in config order."""

    name = "failover"

    def __init__(self, ctx: Context | None = None) -> None:
        """Stateless."""

    def order(self, providers: Sequence[Provider], model: str = "") -> list[Provider]:
        """Config order."""
        return sorted(providers, key=lambda p: p.index)
