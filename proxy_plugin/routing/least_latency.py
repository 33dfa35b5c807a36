"""The ``least_latency`` strategy: power of two choices over peak-EWMA latency times (in-flight + 1).

As Finagle's and Linkerd's balancers do: draw two providers at random, try the one with
the lower *load* first, where load is the peak-EWMA latency of the provider for this model
(:class:`~proxy_plugin.routing.signals.PeakEwma`, time constant ``routing.ewma_decay``)
times its requests in flight plus one. Two random choices rather than the global minimum
keep a burst from herding onto whichever provider was fastest last, and the in-flight
factor moves traffic off a provider as soon as it queues. A provider with no samples has
load 0: it is tried, not avoided. A failure (a 429, a timeout, a 5xx) is a heavy sample
(:data:`~proxy_plugin.routing.signals.FAILURE_PENALTY` seconds at least).

An idle provider's estimate decays toward zero, so it gets traffic again to show whether it
recovered; but at the *slower* of two paces: time (``routing.ewma_decay`` seconds) and
traffic (:data:`PROBE_REQUESTS` requests it was a candidate for since its last sample).
Time alone (Finagle's rule) makes the probe rate a rate per second whatever the traffic:
at a few requests a second a provider that became 10x slower wins a pair again within some
20 s and gets about 3% of the traffic, enough to ruin p99. Bounded by traffic too, a
provider estimated ``r`` times slower than its peers is probed about once every
``PROBE_REQUESTS * ln(r)`` requests (under 1% of them); at high traffic time is the slower
pace and nothing changes. So that a trickle of traffic cannot leave a recovered provider
unprobed for hours, the estimate still decays at least with time constant
:data:`STALE_DECAYS` x ``ewma_decay``. While a probe is out, its age counts as a sample in
progress, so a provider that has become slow gets one probe, not a burst.

After the pair, the rest follow by load, as the failover order. (The earlier "sort by
the plain EWMA" is gone: it never beat this in the simulator, and it herds.)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy_plugin.attempts import Outcome
    from proxy_plugin.clock import Clock
    from proxy_plugin.provider import Provider
    from proxy_plugin.routing.base import Context

#: an idle provider's estimate falls by a factor e per this many requests it could have served (at most)
PROBE_REQUESTS = 1000.0
#: ... and by at least e per this many time constants (``routing.ewma_decay``), whatever the traffic
STALE_DECAYS = 60.0
#: (provider, model) pairs whose request counts are kept; models come from clients, so the table is bounded
MAX_KEYS = 1024


class LeastLatency:
    """Power of two choices over peak-EWMA latency x (in-flight + 1)."""

    name = "least_latency"

    def __init__(self, ctx: Context | None = None) -> None:
        """Draw pairs from the context's random generator, read time from its clock."""
        from proxy_plugin.clock import SYSTEM

        self._rng = ctx.rng if ctx is not None else random.Random()
        self._clock: Clock = ctx.clock if ctx is not None else SYSTEM
        #: (provider, provider's model) -> requests it was a candidate for since its last sample
        self._unsampled: dict[tuple[str, str], int] = {}

    def order(self, providers: Sequence[Provider], model: str = "") -> list[Provider]:
        """The better of a random pair first, the other second, then the rest by load."""
        n = len(providers)
        if n <= 1:
            return list(providers)
        now = self._clock.monotonic()
        loads = {id(p): self._load(p, model, now) for p in providers}
        i, j = self._rng.sample(range(n), 2)
        a, b = providers[i], providers[j]
        if loads[id(b)] < loads[id(a)]:
            a, b = b, a
        rest = sorted((p for k, p in enumerate(providers) if k != i and k != j), key=lambda p: (loads[id(p)], p.index))
        return [a, b, *rest]

    def _load(self, provider: Provider, model: str, now: float) -> float:
        """:func:`load`, counting this request as one more the provider could have served."""
        key = (provider.name, provider.map_model(model))
        unsampled = self._unsampled
        count = unsampled.get(key)
        if count is None and len(unsampled) >= MAX_KEYS:
            del unsampled[next(iter(unsampled))]
        count = unsampled[key] = (count or 0) + 1
        return load(provider, model, now, count)

    def observe(self, provider: Provider, model: str, outcome: Outcome, seconds: float) -> None:
        """A sample came in for (provider, model): its count of requests without one starts again."""
        self._unsampled.pop((provider.name, model), None)


def load(provider: Provider, model: str, now: float, requests: float = math.inf) -> float:
    """Peak-EWMA latency for the model (0 without samples), decayed while idle at the slower of time and
    ``requests`` (requests it could have served since its last sample; inf: time only), at least the age of
    the oldest attempt still in flight there (an answer not in yet is a sample in progress), times in-flight + 1."""
    state = provider.state
    ewma = state.signals(provider.map_model(model)).latency
    value = 0.0
    if ewma.value is not None:
        idle = max(0.0, now - ewma.stamp) / ewma.decay
        value = ewma.value * math.exp(-max(min(idle, requests / PROBE_REQUESTS), idle / STALE_DECAYS))
    if state.in_flight:
        value = max(value, state.oldest_outstanding(now))
    return value * (state.in_flight + 1)
