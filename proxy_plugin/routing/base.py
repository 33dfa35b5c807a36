"""The one interface every routing strategy implements (``Strategy``), and what it is built with (``Context``)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from proxy_plugin.clock import SYSTEM, Clock

if TYPE_CHECKING:  # provider.py imports config, which imports the registry: no runtime import here
    from proxy_plugin.attempts import Outcome
    from proxy_plugin.config import RoutingConfig
    from proxy_plugin.provider import Provider


@dataclasses.dataclass(slots=True)
class Context:
    """What a strategy may read: the pool's random generator, its clock and the routing section."""

    rng: random.Random = dataclasses.field(default_factory=random.Random)
    clock: Clock = SYSTEM
    routing: RoutingConfig | None = None  # None: the section's defaults


class Strategy(Protocol):
    """Orders candidate providers: the first is tried first.

    A strategy that learns also has ``observe(provider, model, outcome, seconds)``, which
    the pool calls for every attempt the dispatch loop makes (``model``: the provider's
    name for it; ``seconds``: until the answer, or the failure, came).
    """

    name: str

    def order(self, providers: Sequence[Provider], model: str = "") -> list[Provider]:
        """Return the providers in the order to try them, for a request for ``model``."""


class Learner(Protocol):
    """The optional half of a strategy that learns from outcomes."""

    def observe(self, provider: Provider, model: str, outcome: Outcome, seconds: float) -> None:
        """One attempt ended."""
