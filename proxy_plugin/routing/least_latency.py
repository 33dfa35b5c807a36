"""The ``least_latency`` strategy: power of two choices over peak-EWMA latency times (in-flight + 1).

As Finagle's and Linkerd's balancers do: draw two providers at random, try the one with
the lower *load* first, where load is the peak-EWMA latency of the provider for this model
(:class:`~proxy_plugin.routing.signals.PeakEwma`, time constant ``routing.ewma_decay``)
times its requests in flight plus one. Two random choices rather than the global minimum
keep a burst from herding onto whichever provider was fastest last, and the in-flight
factor moves traffic off a provider as soon as it queues. A provider with no samples has
load 0: it is tried, not avoided. A failure (a 429, a timeout, a 5xx) is a heavy sample
(:data:`~proxy_plugin.routing.signals.FAILURE_PENALTY` seconds at least), and an idle
provider's estimate decays toward zero, so it gets traffic again to show whether it recovered;
while such a probe is out, its age counts as a sample in progress, so a provider that has
become slow gets one probe, not a burst.

After the pair, the rest follow by load, as the failover order. (The earlier "sort by
the plain EWMA" is gone: it never beat this in the simulator, and it herds.)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy_plugin.clock import Clock
    from proxy_plugin.provider import Provider
    from proxy_plugin.routing.base import Context


class LeastLatency:
    """Power of two choices over peak-EWMA latency x (in-flight + 1)."""

    name = "least_latency"

    def __init__(self, ctx: Context | None = None) -> None:
        """Draw pairs from the context's random generator, read time from its clock."""
        from proxy_plugin.clock import SYSTEM

        self._rng = ctx.rng if ctx is not None else random.Random()
        self._clock: Clock = ctx.clock if ctx is not None else SYSTEM

    def order(self, providers: Sequence[Provider], model: str = "") -> list[Provider]:
        """The better of a random pair first, the other second, then the rest by load."""
        n = len(providers)
        if n <= 1:
            return list(providers)
        now = self._clock.monotonic()
        loads = {id(p): load(p, model, now) for p in providers}
        i, j = self._rng.sample(range(n), 2)
        a, b = providers[i], providers[j]
        if loads[id(b)] < loads[id(a)]:
            a, b = b, a
        rest = sorted((p for k, p in enumerate(providers) if k != i and k != j), key=lambda p: (loads[id(p)], p.index))
        return [a, b, *rest]


def load(provider: Provider, model: str, now: float) -> float:
    """Peak-EWMA latency for the model (0 without samples), at least the age of the oldest attempt still in
    flight there (an answer not in yet is a sample in progress), times in-flight + 1."""
    state = provider.state
    ewma = state.signals(provider.map_model(model)).latency.get(now) or 0.0
    if state.in_flight:
        ewma = max(ewma, state.oldest_outstanding(now))
    return ewma * (state.in_flight + 1)
