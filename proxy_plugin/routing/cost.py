"""The ``cost`` strategy: the cheapest provider for the model that is not degraded, up the price ladder.

Providers are ranked by price (:func:`~proxy_plugin.routing.costs.blended`, from the
provider's ``prices``). A provider whose recent success rate for the model is below
``routing.min_success`` (default 0.9), or falling fast below it, is *degraded*
(:meth:`~proxy_plugin.routing.signals.SuccessWindow.degraded`: decayed counts with a
minimum of evidence, so one failure never moves it): it goes to the end of the order,
and the next rung of the ladder serves. Its evidence fades with time, so it is tried
again later and climbs back when it has recovered. Degraded providers stay in the
order (cheapest first) as the last resort; failover, breakers and health still apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy_plugin.routing.costs import blended

if TYPE_CHECKING:
    from proxy_plugin.clock import Clock
    from proxy_plugin.provider import Provider
    from proxy_plugin.routing.base import Context


class Cost:
    """Cheapest healthy-enough provider first; degraded ones last."""

    name = "cost"

    def __init__(self, ctx: Context | None = None) -> None:
        """Read time from the context's clock and ``min_success`` from its routing section."""
        from proxy_plugin.clock import SYSTEM

        self._clock: Clock = ctx.clock if ctx is not None else SYSTEM
        routing = ctx.routing if ctx is not None else None
        self.min_success = routing.min_success if routing is not None else 0.9

    def order(self, providers: Sequence[Provider], model: str = "") -> list[Provider]:
        """Sort by (degraded, price, config order)."""
        now = self._clock.monotonic()
        min_success = self.min_success

        def key(p: Provider) -> tuple[bool, float, int]:
            mapped = p.map_model(model)
            degraded = p.state.signals(mapped).success.degraded(now, min_success)
            return (degraded, blended(p.config, mapped), p.index)

        return sorted(providers, key=key)
