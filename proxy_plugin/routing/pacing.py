"""Budget pacing, on top of any strategy: cheaper first when spending runs ahead, then shed; never overshoot.

A :class:`Pacer` reads a :class:`PaceBudget` (a limit in USD over a period) and, for each
request, takes the strategy's order and:

1. drops every provider whose *worst-case* cost (``worst_tokens`` at its prices) no longer
   fits in what is left, and reserves the worst case of the dearest one kept until the
   request ends (:meth:`Pacer.finish`), so concurrent requests cannot overshoot together;
   nothing left: 429 ``budget_exceeded``;
2. estimates the requests still to come in the period (the arrival rate, decayed counts
   with a ``RATE_HALF_LIFE``, times the time left) and so the affordable cost per request
   ``c* = left / requests to come``; when the strategy's first choice costs more than
   ``c*`` at ``typical_tokens`` (at that rate, spending would run out before the period
   ends), providers that cost at most ``c*`` go first, in the strategy's order, then the
   rest cheapest first;
3. when even the cheapest costs more than ``c*``, it admits a request with probability
   ``c* / cheapest`` (the rest: 429 ``budget_exceeded``), so spending follows the budget
   line instead of stopping dead and starting again.

The live server's budget is the gateway controls' global ``budget: {usd, period}``: the runtime
asks the request gate for it (``RequestGate.pace_budget``, ``proxy_plugin/gate/pace.py``)
and hands it to each pool it builds; the simulator passes its own. The worst case of a
request is its own (:meth:`PaceBudget.worst_of` its body) when the exchange knows it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from proxy_plugin.errors import ProxyError
from proxy_plugin.routing.costs import price_of

if TYPE_CHECKING:
    from proxy_plugin.clock import Clock
    from proxy_plugin.provider import Provider

RATE_HALF_LIFE = 60.0
_TAU = RATE_HALF_LIFE / math.log(2)  # the decay's time constant


class PaceBudget(Protocol):
    """A spending limit over a period, as pacing reads it (USD, seconds)."""

    limit_usd: float

    @property
    def typical_tokens(self) -> tuple[float, float]:
        """(input, output) tokens of a usual request: what pacing plans with."""

    @property
    def worst_tokens(self) -> tuple[float, float]:
        """The most one request can use when its body is not known: what it reserves then."""

    @property
    def rate_warmup(self) -> float:
        """Seconds of traffic the request rate is spread over at least (1: trust the first second's rate)."""

    def worst_of(self, body: Mapping[str, Any]) -> tuple[float, float]:
        """The most the request ``body`` can use: (input, output) tokens."""

    def spent(self) -> float:
        """Spent and reserved in the current period."""

    def left_in_period(self) -> float:
        """Seconds until the current period ends."""

    def reserve(self, usd: float) -> None:
        """Hold ``usd`` until released."""

    def release(self, usd: float) -> None:
        """Give a hold back (what was really spent is charged by whoever reads the usage)."""


def budget_exceeded(message: str, retry_after: float) -> ProxyError:
    """The 429 a paced-out request gets."""
    return ProxyError(429, message, "rate_limit_error", "budget_exceeded",
                      {"Retry-After": str(max(1, math.ceil(retry_after)))}, reason="budget")


class Pacer:
    """Applies a :class:`PaceBudget` to each request's plan (see the module docstring)."""

    def __init__(self, budget: PaceBudget, clock: Clock, rng: random.Random) -> None:
        self.budget = budget
        self.clock = clock
        self.rng = rng
        self._count = 0.0     # requests seen, halving every RATE_HALF_LIFE
        self._stamp: float | None = None
        self._first: float | None = None
        self.warmup = budget.rate_warmup
        self.shed = 0
        self._prices: dict[tuple[str, str], tuple[float, float]] = {}  # (provider, its model) -> USD per token

    def _price(self, provider: Provider, mapped: str) -> tuple[float, float]:
        """(input, output) USD per token of ``provider``'s ``mapped`` model (a pool's prices never change)."""
        key = (provider.name, mapped)
        price = self._prices.get(key)
        if price is None:
            if len(self._prices) >= 1024:  # model names come from clients: bounded
                self._prices.clear()
            p_in, p_out = price_of(provider.config, mapped)
            price = self._prices[key] = (p_in / 1e6, p_out / 1e6)
        return price

    def carry(self, old: Pacer) -> None:
        """Continue ``old``'s request rate (a reload builds a new pool: the traffic did not stop)."""
        self._count, self._stamp, self._first, self.shed = old._count, old._stamp, old._first, old.shed

    def _rate(self, now: float) -> float:
        """Requests per second lately (this one counted)."""
        if self._stamp is None:
            self._stamp = self._first = now
        elapsed = now - self._stamp
        self._count = (self._count * 0.5 ** (elapsed / RATE_HALF_LIFE) if elapsed else self._count) + 1.0
        self._stamp = now
        assert self._first is not None
        age = now - self._first
        # the decayed count's horizon: tau (1 - e^(-age / tau)), tau itself once that is past 1e-9 of it
        window = _TAU if age > 21 * _TAU else _TAU * (1.0 - math.exp(-age / _TAU))
        return self._count / max(window, self.warmup)

    def apply(self, order: Sequence[Provider], model: str,
              body: Mapping[str, Any] | None = None) -> tuple[list[Provider], float]:
        """The paced order and the USD held for it (raises 429 ``budget_exceeded``).

        ``body``: the request as it goes upstream, whose own worst case is reserved (None:
        the budget's ``worst_tokens``).
        """
        budget = self.budget
        now = self.clock.monotonic()
        rate = self._rate(now)
        left = budget.limit_usd - budget.spent()
        time_left = budget.left_in_period()
        worst_in, worst_out = budget.worst_tokens if body is None else budget.worst_of(body)
        typ_in, typ_out = budget.typical_tokens
        fits: list[tuple[Provider, float, float]] = []
        for p in order:
            p_in, p_out = self._price(p, p.map_model(model))
            worst = worst_in * p_in + worst_out * p_out
            if worst <= left:
                fits.append((p, worst, typ_in * p_in + typ_out * p_out))
        if not fits:
            self.shed += 1
            raise budget_exceeded(f"the budget of ${budget.limit_usd:g} for this period is spent "
                                  f"(${max(0.0, left):.4f} left)", time_left)
        to_come = max(1.0, rate * time_left)
        c_star = left / to_come
        cheapest = min(t for _, _, t in fits)
        if cheapest > c_star:
            if self.rng.random() * cheapest > c_star:
                self.shed += 1
                raise budget_exceeded(f"spending is paced to the budget of ${budget.limit_usd:g} per period: "
                                      f"this request would overrun it", min(time_left, 1.0))
            fits.sort(key=lambda t: (t[2], t[0].index))
        elif fits[0][2] > c_star:
            fits.sort(key=lambda t: (t[2] > c_star, t[2] if t[2] > c_star else 0.0))  # stable: strategy order kept
        hold = max(w for _, w, _ in fits)
        budget.reserve(hold)
        return [p for p, _, _ in fits], hold

    def finish(self, hold: float) -> None:
        """The request ended: give its hold back."""
        if hold:
            self.budget.release(hold)
