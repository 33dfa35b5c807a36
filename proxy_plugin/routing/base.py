"""The one interface every routing strategy implements (``Strategy``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # provider.py imports config, which imports the registry: no runtime import here
    from proxy_plugin.provider import Provider


class Strategy(Protocol):
    """Orders candidate providers: the first is tried first."""

    name: str

    def order(self, providers: Sequence[Provider]) -> list[Provider]:
        """Return the providers in the order to try them."""
