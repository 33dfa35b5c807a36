"""The ``adaptive`` strategy: discounted Thompson sampling over providers, per model.

Each (provider, model) is an arm with a Beta(a, b) belief about its reward. For every
request each candidate's reward is *sampled* from its belief and the providers are tried
in that order; each attempt's reward then updates its arm: 0 for a failure, and for a
success ``1 - latency_weight * min(1, seconds / latency_target) - cost_weight * price /
top price`` (``routing.adaptive``), so the reward weighs success, latency and cost.

Why discounted Thompson sampling rather than sliding-window UCB: the proxy has many
requests in flight at once, and UCB is deterministic between updates (every concurrent
request goes to the same arm: a herd), while Thompson draws per request and so spreads
a burst by the uncertainty; it takes fractional rewards as they come; and discounting by
*time* (evidence halves every ``half_life`` seconds back toward the uniform prior) makes
an arm nobody has tried lately uncertain again, so it is explored and a recovered
provider is noticed without a separate exploration rate. SW-UCB would need a window in
requests, which means something different at 1 and at 1000 requests a second.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy_plugin.routing.costs import blended

if TYPE_CHECKING:
    from proxy_plugin.attempts import Outcome
    from proxy_plugin.clock import Clock
    from proxy_plugin.provider import Provider
    from proxy_plugin.routing.base import Context

MAX_ARMS = 1024


class _Arm:
    __slots__ = ("a", "b", "stamp")

    def __init__(self, now: float) -> None:
        self.a = 1.0
        self.b = 1.0
        self.stamp = now

    def decay(self, now: float, half_life: float) -> None:
        dt = now - self.stamp
        if dt > 0:
            k = 0.5 ** (dt / half_life)
            self.a = 1.0 + (self.a - 1.0) * k
            self.b = 1.0 + (self.b - 1.0) * k
            self.stamp = now


class Adaptive:
    """Discounted Thompson sampling; reward = success less weighted latency and cost."""

    name = "adaptive"

    def __init__(self, ctx: Context | None = None) -> None:
        """Sample from the context's random generator; weights and half-life from ``routing.adaptive``."""
        from proxy_plugin.clock import SYSTEM
        from proxy_plugin.config import AdaptiveConfig

        self._rng = ctx.rng if ctx is not None else random.Random()
        self._clock: Clock = ctx.clock if ctx is not None else SYSTEM
        routing = ctx.routing if ctx is not None else None
        self.settings = routing.adaptive if routing is not None else AdaptiveConfig()
        self._arms: dict[tuple[str, str], _Arm] = {}
        self._top_price = 0.0

    def _arm(self, provider: Provider, model: str, now: float) -> _Arm:
        key = (provider.name, model)
        arm = self._arms.get(key)
        if arm is None:
            if len(self._arms) >= MAX_ARMS:  # models come from clients: bound the table
                del self._arms[next(iter(self._arms))]
            arm = self._arms[key] = _Arm(now)
        arm.decay(now, self.settings.half_life)
        return arm

    def order(self, providers: Sequence[Provider], model: str = "") -> list[Provider]:
        """Sort by a reward drawn from each provider's belief, highest first."""
        if len(providers) <= 1:
            return list(providers)
        now = self._clock.monotonic()
        beta = self._rng.betavariate
        drawn = []
        for p in providers:
            mapped = p.map_model(model)
            self._top_price = max(self._top_price, blended(p.config, mapped))
            arm = self._arm(p, mapped, now)
            drawn.append((-beta(arm.a, arm.b), p.index, p))
        drawn.sort(key=lambda t: (t[0], t[1]))
        return [p for _, _, p in drawn]

    def reward(self, provider: Provider, model: str, outcome: Outcome, seconds: float) -> float:
        """The reward of one attempt, in [0, 1]."""
        if not outcome.ok:
            return 0.0
        s = self.settings
        latency = min(1.0, seconds / s.latency_target)
        top = self._top_price
        price = blended(provider.config, model) / top if top > 0 else 0.0
        return max(0.0, 1.0 - s.latency_weight * latency - s.cost_weight * price)

    def observe(self, provider: Provider, model: str, outcome: Outcome, seconds: float) -> None:
        """Fold one attempt into its arm (a caller's error says nothing about the provider)."""
        if outcome.failure is not None and outcome.failure.value == "caller":  # (no classify import: see registry)
            return
        r = self.reward(provider, model, outcome, seconds)
        arm = self._arm(provider, model, self._clock.monotonic())
        arm.a += r
        arm.b += 1.0 - r
