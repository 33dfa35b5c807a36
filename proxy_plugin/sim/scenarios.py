"""The scenarios: providers with a price, a latency distribution and a failure process over time.

Time in a scenario runs from 0 to ``duration`` (``requests / RATE`` seconds: the default
10,000 requests are an hour of traffic). Three tiers, priced like real ones (USD per million
tokens in / out): ``cheap`` 0.15 / 0.60, ``middling`` 2.50 / 10, ``expensive`` 10 / 30.
A degraded provider answers 503 quickly (the failure takes ``FAIL_LATENCY``); a flapping one
refuses connections; a rate-limited one answers 429 with ``Retry-After``.

Budgets, where they matter, follow one rule fixed before any run: the typical request's cost
at the middling tier, times the requests (a fleet budgeted to run on the middle tier).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

RATE = 10_000 / 3600.0        # requests per second
SLA = 4.0                     # seconds: an answer later than this misses the SLA
FAIL_LATENCY = 0.15           # seconds a 503 / refusal / 429 takes
REQUEST_TIMEOUT = 30.0
TYPICAL_TOKENS = (1000.0, 300.0)
WORST_TOKENS = (4000.0, 1200.0)
ADAPT_WINDOW = 120.0          # seconds after a change over which adaptation is graded

CHEAP = (0.15, 0.60)
MIDDLING = (2.50, 10.0)
EXPENSIVE = (10.0, 30.0)


@dataclasses.dataclass(frozen=True)
class Condition:
    """A provider's state at one moment."""

    fail: float = 0.005          # probability an attempt fails
    kind: str = "503"            # how: "503", "refused", "429", "timeout"
    slow: float = 1.0            # latency multiplier
    retry_after: float = 0.0     # for 429s


@dataclasses.dataclass(frozen=True)
class ProviderSpec:
    """One simulated provider: price, latency (lognormal: median and sigma), condition over time."""

    name: str
    price: tuple[float, float]
    median: float
    sigma: float
    condition: Callable[[float], Condition]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named world: providers, and where its changes happen (for the adaptation grade)."""

    name: str
    description: str
    providers: tuple[ProviderSpec, ...]
    budget_per_request: float | None
    changes: tuple[float, ...]  # seconds


def _stable(fail: float) -> Callable[[float], Condition]:
    return lambda t: Condition(fail=fail)


def _middle_budget() -> float:
    return (TYPICAL_TOKENS[0] * MIDDLING[0] + TYPICAL_TOKENS[1] * MIDDLING[1]) / 1e6


def _tiers(cheap: Callable[[float], Condition], middling: Callable[[float], Condition],
           expensive: Callable[[float], Condition]) -> tuple[ProviderSpec, ...]:
    return (
        ProviderSpec("cheap", CHEAP, 0.9, 0.5, cheap),
        ProviderSpec("middling", MIDDLING, 0.7, 0.45, middling),
        ProviderSpec("expensive", EXPENSIVE, 0.6, 0.4, expensive),
    )


def build(name: str, duration: float) -> Scenario:
    """The scenario ``name`` for a run of ``duration`` seconds."""
    d = duration
    budget = _middle_budget()
    if name == "easy":
        return Scenario(name, "all three stable", _tiers(_stable(0.01), _stable(0.005), _stable(0.002)), budget, ())
    if name == "medium":
        at = 0.5 * d
        return Scenario(name, "the cheap one degrades mid-run (40% 503s, 1.5x slower)", _tiers(
            lambda t: Condition(fail=0.4, slow=1.5) if t >= at else Condition(fail=0.01),
            _stable(0.005), _stable(0.002)), budget, (at,))
    if name == "hard":
        ramp = 0.1 * d
        return Scenario(name, "the cheap one degrades from the start (503s ramping to 60%)", _tiers(
            lambda t: Condition(fail=0.05 + 0.55 * min(1.0, t / ramp), slow=1.5),
            _stable(0.005), _stable(0.002)), budget, (0.0,))
    if name == "hard_multi":
        a_at, b_at = 0.15 * d, 0.55 * d
        return Scenario(name, "cheap degrades early (50% 503s), middling later (40%); expensive stays reliable", _tiers(
            lambda t: Condition(fail=0.5, slow=1.5) if t >= a_at else Condition(fail=0.01),
            lambda t: Condition(fail=0.4, slow=1.5) if t >= b_at else Condition(fail=0.005),
            _stable(0.002)), budget, (a_at, b_at))
    if name == "slow_provider":
        at = 0.3 * d
        return Scenario(name, "three like providers; one becomes 10x slower", (
            ProviderSpec("p1", MIDDLING, 0.7, 0.45, _stable(0.003)),
            ProviderSpec("p2", MIDDLING, 0.7, 0.45, lambda t: Condition(fail=0.003, slow=10.0 if t >= at else 1.0)),
            ProviderSpec("p3", MIDDLING, 0.7, 0.45, _stable(0.003)),
        ), None, (at,))
    if name == "flap":
        period = 30.0
        return Scenario(name, "one provider alternates down (connections refused) and up every 30 s", (
            ProviderSpec("steady", MIDDLING, 0.7, 0.45, _stable(0.005)),
            ProviderSpec("flapper", MIDDLING, 0.6, 0.45,
                         lambda t: Condition(fail=1.0, kind="refused") if int(t // period) % 2 else Condition(fail=0.005)),
            ProviderSpec("backup", MIDDLING, 0.8, 0.45, _stable(0.005)),
        ), None, tuple(float(k * period) for k in range(1, int(d // period) + 1)))
    if name == "rate_limit_storm":
        start, length = 0.3 * d, 60.0
        end = start + length
        return Scenario(name, "one provider answers 429 with Retry-After for a minute", (
            ProviderSpec("stormy", MIDDLING, 0.6, 0.45,
                         lambda t: Condition(fail=1.0, kind="429", retry_after=max(1.0, end - t))
                         if start <= t < end else Condition(fail=0.005)),
            ProviderSpec("calm", MIDDLING, 0.7, 0.45, _stable(0.005)),
            ProviderSpec("spare", MIDDLING, 0.8, 0.45, _stable(0.005)),
        ), None, (start, end))
    raise KeyError(name)


NAMES = ("easy", "medium", "hard", "hard_multi", "slow_provider", "flap", "rate_limit_storm")
