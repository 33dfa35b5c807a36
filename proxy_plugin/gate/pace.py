"""The global budget as budget pacing reads it (``routing/pacing.py``): the live server's ``PaceBudget``.

Pacing applies when a global ``budget`` has a period (``day``, ``week``, ``month``) and
``routing.pace_budget`` is on (the default). A ``total`` budget has no end, hence no pace
to keep: it is not paced (the gate still refuses what does not fit in it); nor are the
budgets of client keys. The gate's reservations already make overshoot impossible;
pacing adds the *pace*: cheaper providers when spending runs ahead of the period, then
shedding. What it reads, and why nothing is counted twice:

- ``spent()``: the *settled* spend of the current period (the gate's counter
  ``budget|global|<period>`` in the state store: memory, SQLite or the Redis mirror, so
  with Redis it is every replica's spend) plus the pacer's own holds for the upstream
  calls in flight in this pool. Not the gate's reservations: they include the worst
  case of the very request being paced (and of every call a composed request may make),
  and in Redis they are not even visible here. A call's hold is released when it ends;
  the gate settles its real cost a moment later.
- ``worst_of(body)``: the request's own worst case, as the gate estimates it
  (``gate/estimate.py``: the prompt's UTF-8 bytes plus 4 a message, and ``max_tokens``
  or ``budget_reserve_tokens``), per upstream call: a composed request's calls are paced
  one by one. ``worst_tokens`` (a call whose body is unknown): four typical prompts and
  ``budget_reserve_tokens``.
- ``typical_tokens``: a decayed average of the real usage (prompt, completion) of every
  upstream answer of answered requests, seen when the gate settles (:class:`TypicalUsage`,
  kept across reloads); before any answer, :data:`DEFAULT_TYPICAL`.
- ``left_in_period()``: from the runtime clock's ``wall()`` to the period's end
  (``budgets.period_bounds``).
- ``rate_warmup``: :data:`RATE_WARMUP`: right after a start the pacer spreads the
  requests it has seen over at least a minute, so that the first request of a quiet
  server is not taken for a second of heavy traffic (and shed).

A reload builds a new pool and with it a new :class:`GlobalPace` from the new
configuration (a changed budget applies at once); the pacer's rate carries over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from proxy_plugin.clock import Clock
from proxy_plugin.config import ProxyConfig
from proxy_plugin.gate.budgets import counter, period_span
from proxy_plugin.gate.estimate import output_tokens, prompt_tokens
from proxy_plugin.state.base import StateStore

#: (prompt, completion) tokens pacing plans with before any answer was seen: a chat turn of
#: about 750 words in and 225 out
DEFAULT_TYPICAL = (1000.0, 300.0)
#: answers the typical usage mostly remembers (each weighs 1/N, or 1/n while n < N)
TYPICAL_MEMORY = 200
#: seconds the pacer spreads the requests seen over, at least (see the module docstring)
RATE_WARMUP = 60.0


class TypicalUsage:
    """A decayed average of (prompt, completion) tokens per upstream answer (the first answers replace the default)."""

    __slots__ = ("completion", "prompt", "seen")

    def __init__(self) -> None:
        self.prompt, self.completion = DEFAULT_TYPICAL
        self.seen = 0

    def observe(self, prompt: int, completion: int) -> None:
        """One upstream answer's usage."""
        self.seen += 1
        weight = 1.0 / min(self.seen, TYPICAL_MEMORY)
        self.prompt += (prompt - self.prompt) * weight
        self.completion += (completion - self.completion) * weight

    @property
    def tokens(self) -> tuple[float, float]:
        """(prompt, completion) of a typical answer."""
        return self.prompt, self.completion


def paces(config: ProxyConfig) -> bool:
    """Whether ``config`` paces spending: a global budget with a period, and ``routing.pace_budget``."""
    budget = config.budget
    return budget.usd is not None and budget.period != "total" and config.routing.pace_budget


class GlobalPace:
    """The global budget of one configuration, as :class:`~proxy_plugin.routing.pacing.PaceBudget` (see above)."""

    rate_warmup = RATE_WARMUP

    def __init__(self, config: ProxyConfig, store: Callable[[], StateStore], usage: TypicalUsage, clock: Clock) -> None:
        """``store``: the gate's current state store (opened after the first pool is built)."""
        assert config.budget.usd is not None
        self.limit_usd: float = config.budget.usd
        self.period = config.budget.period
        self.reserve_tokens = config.budget_reserve_tokens
        self.store = store
        self.usage = usage
        self.clock = clock
        self.held = 0.0  # the pacer's holds for calls in flight in this pool
        self._span = (0.0, -1.0, "")  # the current period: (start, end, its counter), kept until it ends
        self._last: tuple[Mapping[str, Any] | None, tuple[float, float]] = (None, (0.0, 0.0))  # body -> worst

    def _period(self, wall: float) -> tuple[float, float, str]:
        span = self._span
        if not span[0] <= wall < span[1]:
            start, end, ident = period_span(self.period, wall)
            span = self._span = (start, end, counter("global", ident))
        return span

    @property
    def typical_tokens(self) -> tuple[float, float]:
        """The decayed average of real usage (:class:`TypicalUsage`)."""
        return self.usage.tokens

    @property
    def worst_tokens(self) -> tuple[float, float]:
        """A call whose body is unknown: four typical prompts and ``budget_reserve_tokens``."""
        return 4.0 * self.usage.prompt, float(self.reserve_tokens)

    def worst_of(self, body: Mapping[str, Any]) -> tuple[float, float]:
        """The call's own worst case, estimated as the gate does."""
        last_body, worst = self._last
        if body is not last_body:  # (the same body again: a retry, the next call of a composed request)
            worst = (float(prompt_tokens(body)), float(output_tokens(body, self.reserve_tokens)))
            self._last = (body, worst)
        return worst

    def spent(self) -> float:
        """Settled spend of the current period plus the pacer's holds (never the gate's reservations)."""
        return self.store().get(self._period(self.clock.wall())[2]) + self.held

    def left_in_period(self) -> float:
        """Seconds until the current period ends."""
        wall = self.clock.wall()
        return max(0.0, self._period(wall)[1] - wall)  # (a total budget is not paced: its end is never inf here)

    def reserve(self, usd: float) -> None:
        """Hold ``usd`` for a call in flight."""
        self.held += usd

    def release(self, usd: float) -> None:
        """A call ended: its hold goes (the gate settles its real cost)."""
        self.held = max(0.0, self.held - usd)
