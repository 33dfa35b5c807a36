"""Routing strategies: each orders the available providers for one request.

One module per strategy, ``base.Strategy`` the interface they share, ``registry``
the one list of names (used by the config validator and by ``make_strategy``).
"""

from __future__ import annotations

from proxy_plugin.routing.adaptive import Adaptive
from proxy_plugin.routing.base import Context, Strategy
from proxy_plugin.routing.cost import Cost
from proxy_plugin.routing.failover import Failover
from proxy_plugin.routing.least_busy import LeastBusy
from proxy_plugin.routing.least_latency import LeastLatency
from proxy_plugin.routing.registry import NAMES, STRATEGIES, make_strategy
from proxy_plugin.routing.round_robin import RoundRobin
from proxy_plugin.routing.weighted import Weighted

__all__ = [
    "NAMES",
    "STRATEGIES",
    "Adaptive",
    "Context",
    "Cost",
    "Failover",
    "LeastBusy",
    "LeastLatency",
    "RoundRobin",
    "Strategy",
    "Weighted",
    "make_strategy",
]
