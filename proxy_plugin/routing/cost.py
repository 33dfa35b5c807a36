"""The ``cost`` strategy: the cheapest provider for the model first, up the price ladder; off it only when
its failures cost time.

Providers are ranked by price (:func:`~proxy_plugin.routing.costs.blended`, from the
provider's ``prices``). A failed attempt costs nothing and the dispatch loop then tries the
next rung, so starting at a provider with success rate ``p`` and price ``c`` costs, per
request, ``p x c + (1 - p) x (the rest of the ladder)``: that is below the rest of the
ladder whenever ``c`` is, however low ``p`` is. Ordering by price is therefore the cheapest
order in expectation for any success rates (swapping two neighbours ``a`` cheaper than
``b`` changes the expectation by ``p_a x p_b x (c_b - c_a) >= 0``); success rates cannot
improve on it, they only decide what trying a provider costs in *time*.

That is what ``routing.min_success`` (default 0.9) guards: a provider whose recent success
rate for the model is below it, or falling fast below it
(:meth:`~proxy_plugin.routing.signals.SuccessWindow.degraded`: decayed counts with a minimum
of evidence, so one failure never moves it), is *degraded*; a degraded provider keeps its
rung while its failures are quick (the seconds its failures take are at most
:data:`QUICK_FAILURE_SHARE` of the seconds its answers take, over the same window:
:meth:`~proxy_plugin.routing.signals.SuccessWindow.quick_failures`), and goes to the end
of the order when they are not (timeouts, slow errors, or hardly any answers), where the
next rung serves. So half of the attempts failing with quick 503s keeps a cheap provider
first (each failure adds a fraction of a second, and the request fails over), while a
provider timing out one attempt in ten leaves the ladder. Evidence fades with time, so a
provider that left is tried again later and climbs back when it has recovered. Degraded
providers stay in the order (cheapest first) as the last resort; failover, retries and their
budget, breakers and health still apply (a circuit opened by a high failure rate takes the
provider out of the plan for its open time, whatever this order says).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy_plugin.routing.costs import blended

if TYPE_CHECKING:
    from proxy_plugin.clock import Clock
    from proxy_plugin.provider import Provider
    from proxy_plugin.routing.base import Context

#: a degraded provider keeps its rung while the time its failures take is at most this share of its answers' time
QUICK_FAILURE_SHARE = 0.5


class Cost:
    """Cheapest first; degraded providers whose failures cost time last."""

    name = "cost"

    def __init__(self, ctx: Context | None = None) -> None:
        """Read time from the context's clock and ``min_success`` from its routing section."""
        from proxy_plugin.clock import SYSTEM

        self._clock: Clock = ctx.clock if ctx is not None else SYSTEM
        routing = ctx.routing if ctx is not None else None
        self.min_success = routing.min_success if routing is not None else 0.9

    def order(self, providers: Sequence[Provider], model: str = "") -> list[Provider]:
        """Sort by (degraded with slow failures, price, config order)."""
        now = self._clock.monotonic()
        min_success = self.min_success

        def key(p: Provider) -> tuple[bool, float, int]:
            mapped = p.map_model(model)
            success = p.state.signals(mapped).success
            off = success.degraded(now, min_success) and not success.quick_failures(now, QUICK_FAILURE_SHARE)
            return (off, blended(p.config, mapped), p.index)

        return sorted(providers, key=key)
