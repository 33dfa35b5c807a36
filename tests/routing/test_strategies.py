"""Each learning strategy and budget pacing on small deterministic cases: a real Pool, a ManualClock, a seeded RNG."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, cast

import pytest

from proxy_plugin.attempts import Outcome
from proxy_plugin.clock import ManualClock
from proxy_plugin.errors import ProxyError
from proxy_plugin.pool import Pool
from proxy_plugin.sim import engine, scenarios

OK = Outcome(ok=True, answer=True)
FAIL = Outcome.of_status(503, b"{}", {})
TIMEOUT = cast(Outcome, Outcome.of_exception(TimeoutError()))


def make_pool(strategy: str, budget: Any = None, seed: int = 7) -> tuple[Pool, ManualClock]:
    """Three providers priced cheap < middling < expensive, no sockets."""
    scenario = scenarios.build("easy", 3600.0)
    clock = ManualClock()
    pool = Pool(engine.sim_config(scenario, strategy), cast(Any, None), cast(Any, engine._NoClient()),
                rng=random.Random(seed), clock=clock, pace=budget)
    return pool, clock


def names(order: Sequence[Any]) -> list[str]:
    return [p.name for p in order]


def test_least_latency_tries_the_better_of_a_random_pair() -> None:
    pool, _clock = make_pool("least_latency")
    cheap, middling, expensive = pool.providers
    for p, seconds in ((cheap, 0.1), (middling, 1.0), (expensive, 5.0)):
        pool.observe(p, engine.MODEL, OK, seconds)
    firsts = [pool.plan(engine.MODEL)[0].name for _ in range(600)]
    assert "expensive" not in firsts  # it loses every pair it is drawn in
    # middling goes first only when the pair is {middling, expensive}: one pair in three
    assert 0.25 < firsts.count("middling") / 600 < 0.42
    # in flight multiplies: with 20 requests in flight, the fastest loses to middling
    for _ in range(20):
        cheap.state.begin()
    assert pool.plan(engine.MODEL)[0].name != "cheap"


def test_least_latency_tries_a_provider_without_samples_and_a_failure_is_heavy() -> None:
    pool, clock = make_pool("least_latency")
    cheap, middling, expensive = pool.providers
    pool.observe(cheap, engine.MODEL, OK, 0.1)
    pool.observe(middling, engine.MODEL, OK, 0.1)
    # expensive has no sample: whenever it is drawn it goes first (load 0)
    firsts = [pool.plan(engine.MODEL)[0].name for _ in range(300)]
    assert 0.55 < firsts.count("expensive") / 300 < 0.8
    pool.observe(expensive, engine.MODEL, FAIL, 0.01)  # a quick 503 still weighs like a slow answer
    assert all(pool.plan(engine.MODEL)[0].name != "expensive" for _ in range(100))
    clock.advance(120)  # idle for 12 time constants, but only 100 requests it could have served: not yet
    pool.observe(cheap, engine.MODEL, OK, 0.1)
    assert all(pool.plan(engine.MODEL)[0].name != "expensive" for _ in range(100))
    # after some 4,000 requests elsewhere its estimate has decayed too: it is worth a probe again
    assert any(pool.plan(engine.MODEL)[0].name == "expensive" for _ in range(5000))


def test_least_latency_probes_a_slow_provider_at_a_pace_bounded_by_traffic() -> None:
    """Idle decay at the slower of time and traffic: few probes at a few requests a second, Finagle's at many."""
    pool, clock = make_pool("least_latency")
    slow = pool.providers[2]
    for p in pool.providers:
        pool.observe(p, engine.MODEL, OK, 5.0 if p is slow else 0.5)

    def serve(rate: float, seconds: float) -> int:
        probes = 0
        for _ in range(int(rate * seconds)):
            clock.advance(1.0 / rate)
            first = pool.plan(engine.MODEL)[0]
            probes += first is slow
            pool.observe(first, engine.MODEL, OK, 5.0 if first is slow else 0.5)
        return probes

    # 3 requests a second for two minutes: time alone (12 time constants) would have probed it every ~25 s
    assert serve(3.0, 120.0) == 0
    # 200 requests a second: time is the slower pace, so it is probed as Finagle would (every few time constants)
    assert 1 <= serve(200.0, 60.0) <= 30


def test_cost_climbs_the_price_ladder_on_sustained_degradation_not_one_failure() -> None:
    pool, clock = make_pool("cost")
    cheap, middling, _ = pool.providers
    assert names(pool.plan(engine.MODEL)) == ["cheap", "middling", "expensive"]
    for k in range(30):
        clock.advance(0.5)
        pool.observe(cheap, engine.MODEL, FAIL if k == 10 else OK, 0.5)
    assert names(pool.plan(engine.MODEL))[0] == "cheap"  # one failure in 30: stays
    for _ in range(15):
        clock.advance(0.5)
        pool.observe(cheap, engine.MODEL, TIMEOUT, 30.0)  # failures that cost time: it leaves
    assert names(pool.plan(engine.MODEL)) == ["middling", "expensive", "cheap"]
    for _ in range(15):
        clock.advance(0.5)
        pool.observe(middling, engine.MODEL, FAIL, 0.2)  # quick, but no answers at all: it leaves too
    assert names(pool.plan(engine.MODEL)) == ["expensive", "cheap", "middling"]
    clock.advance(600)  # the evidence fades: the ladder is tried from the bottom again
    assert names(pool.plan(engine.MODEL)) == ["cheap", "middling", "expensive"]


def test_cost_keeps_a_cheap_provider_whose_failures_are_quick() -> None:
    """Failed attempts cost nothing: half of them failing with quick 503s is still the cheapest start."""
    pool, clock = make_pool("cost")
    cheap = pool.providers[0]
    for k in range(60):
        clock.advance(0.5)
        pool.observe(cheap, engine.MODEL, OK if k % 2 else FAIL, 0.9 if k % 2 else 0.15)
    success = cheap.state.signals(engine.MODEL).success
    assert success.degraded(clock.monotonic(), 0.9)  # well below min_success...
    assert names(pool.plan(engine.MODEL)) == ["cheap", "middling", "expensive"]  # ...and first all the same
    for _ in range(20):  # the same rate with slow failures (7 s each): no longer worth the wait
        clock.advance(0.5)
        pool.observe(cheap, engine.MODEL, OK, 0.9)
        pool.observe(cheap, engine.MODEL, FAIL, 7.0)
    assert names(pool.plan(engine.MODEL)) == ["middling", "expensive", "cheap"]


class Budget:
    """A PaceBudget over a one-hour period starting now."""

    typical_tokens = scenarios.TYPICAL_TOKENS
    worst_tokens = scenarios.WORST_TOKENS
    rate_warmup = 1.0

    def __init__(self, limit: float, clock: ManualClock) -> None:
        self.limit_usd, self.clock, self.end = limit, clock, clock.now + 3600
        self.charged = self.held = 0.0

    def spent(self) -> float:
        return self.charged + self.held

    def left_in_period(self) -> float:
        return self.end - self.clock.now

    def reserve(self, usd: float) -> None:
        self.held += usd

    def release(self, usd: float) -> None:
        self.held -= usd


def test_pacing_prefers_cheaper_then_sheds_and_never_overshoots() -> None:
    clock = ManualClock()
    budget = Budget(10.0, clock)
    pool, _ = make_pool("failover", budget)
    pool.clock = clock
    pool.pacer.clock = clock  # type: ignore[union-attr]
    run = pool.attempts(engine.MODEL)
    assert names(run.plan) == ["cheap", "middling", "expensive"]  # failover order, within pace
    pool.finish(run)
    assert budget.held == 0
    pool.providers[0], pool.providers[2] = pool.providers[2], pool.providers[0]  # failover now puts expensive first
    pool.providers[0].index, pool.providers[2].index = 0, 2
    # at ~3 requests a second for an hour, $10 allows ~$0.001 a request: expensive (0.019) would overrun
    for _ in range(60):
        clock.advance(0.33)
        run = pool.attempts(engine.MODEL)
        pool.finish(run)
    assert names(run.plan)[0] == "cheap"
    # spend most of it: now even the cheapest would overrun the pace, then the budget itself
    budget.charged = 9.9999
    shed = 0
    for _ in range(50):
        clock.advance(0.33)
        try:
            pool.finish(pool.attempts(engine.MODEL))
        except ProxyError as e:
            assert (e.status_code, e.code) == (429, "budget_exceeded")
            shed += 1
    assert shed == 50
    assert budget.spent() <= budget.limit_usd


def test_adaptive_leaves_a_failing_provider_and_notices_its_recovery() -> None:
    pool, clock = make_pool("adaptive")
    cheap, middling, _expensive = pool.providers

    def share_first(name: str, n: int = 400) -> float:
        return sum(pool.plan(engine.MODEL)[0].name == name for _ in range(n)) / n

    pool.plan(engine.MODEL)  # (as in production: a plan comes before any outcome)
    for _ in range(40):  # cheap answers fast and costs least: it leads
        clock.advance(0.5)
        for p in pool.providers:
            pool.observe(p, engine.MODEL, OK, 0.5)
    assert share_first("cheap") > 0.5
    for _ in range(40):  # cheap fails
        clock.advance(0.5)
        pool.observe(cheap, engine.MODEL, FAIL, 0.1)
        pool.observe(middling, engine.MODEL, OK, 0.5)
    left = share_first("cheap")
    assert left < 0.02, left
    clock.advance(120)  # four half-lives without news: cheap is uncertain again, so explored
    explored = share_first("cheap")
    assert explored > 3 * max(left, 0.01), (left, explored)
    for _ in range(40):  # it has recovered: the probes succeed
        clock.advance(0.5)
        pool.observe(cheap, engine.MODEL, OK, 0.5)
        pool.observe(middling, engine.MODEL, OK, 0.5)
    assert share_first("cheap") > 0.5


@pytest.mark.parametrize("strategy", ["cost", "adaptive", "least_latency"])
def test_every_strategy_keeps_the_breaker_rule(strategy: str) -> None:
    pool, _clock = make_pool(strategy)
    cheap = pool.providers[0]
    for _ in range(5):  # five consecutive failures open its circuit
        cheap.state.record_failure(engine.MODEL, "transient", "503", whole_provider=False)
    assert all("cheap" not in names(pool.plan(engine.MODEL)) for _ in range(50))
