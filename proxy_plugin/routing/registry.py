"""The strategy registry: the one place that maps a strategy name to its class.

``NAMES`` is the only list of strategy names: the config validator checks
``routing.strategy`` against it (and suggests the closest), and ``make_strategy``
builds from it. A new strategy is one module in this package with a class that has a
``name``, a constructor taking a ``base.Context`` (or None) and an ``order(providers,
model)`` method (see ``base.Strategy``; ``observe`` too if it learns), plus one line in
``_CLASSES`` below. Strategy modules import ``Provider`` only for type checking, so
importing this registry (as the config does) never imports ``provider.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from proxy_plugin.routing.adaptive import Adaptive
from proxy_plugin.routing.base import Context, Strategy
from proxy_plugin.routing.cost import Cost
from proxy_plugin.routing.failover import Failover
from proxy_plugin.routing.least_busy import LeastBusy
from proxy_plugin.routing.least_latency import LeastLatency
from proxy_plugin.routing.round_robin import RoundRobin
from proxy_plugin.routing.weighted import Weighted

# In the order error messages list them (the default strategy is the config's to choose).
_CLASSES: tuple[type[Strategy], ...] = (
    Weighted,
    RoundRobin,
    Failover,
    LeastLatency,
    LeastBusy,
    Cost,
    Adaptive,
)

STRATEGIES: Mapping[str, Callable[[Context | None], Strategy]] = MappingProxyType({cls.name: cls for cls in _CLASSES})
NAMES: tuple[str, ...] = tuple(STRATEGIES)


def make_strategy(name: str, ctx: Context | None = None) -> Strategy:
    """A new instance of the strategy registered under ``name`` (KeyError if none is), built with ``ctx``."""
    return STRATEGIES[name](ctx)
