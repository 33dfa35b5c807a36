"""One scenario x strategy: the real pool and dispatch loop over pre-drawn providers, on virtual time.

:class:`SimExchange` is the dispatch loop's :class:`~proxy_plugin.dispatch.Exchange` for a
simulated request: an attempt sleeps (virtually) for the drawn latency and returns the drawn
:class:`~proxy_plugin.attempts.Outcome`, built the way the real exchanges build them (a 503 or
a 429 through ``Outcome.of_status``, a refused connection through ``Outcome.of_exception``).
Everything else (plan, strategy, pacing, circuits, retries, backoff, failover, the final
error) is the production code. :func:`oracle` is the clairvoyant baseline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import types
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any, cast

from proxy_plugin.attempts import Attempts, Outcome
from proxy_plugin.clock import ManualClock
from proxy_plugin.config import (
    HealthCheckConfig,
    ProviderConfig,
    ProxyConfig,
    QueueConfig,
    RetryConfig,
    RoutingConfig,
    TimeoutConfig,
)
from proxy_plugin.dispatch import dispatch
from proxy_plugin.errors import ProxyError
from proxy_plugin.pool import Pool
from proxy_plugin.provider import Provider
from proxy_plugin.routing.costs import cost_usd
from proxy_plugin.sim import vloop
from proxy_plugin.sim.draws import ATTEMPTS, Request
from proxy_plugin.sim.scenarios import REQUEST_TIMEOUT, SLA, TYPICAL_TOKENS, WORST_TOKENS, Scenario

if TYPE_CHECKING:
    from proxy_plugin.dispatch import Observer

MODEL = "sim-model"
START = 1000.0  # the virtual clock's reading at t = 0


@dataclasses.dataclass(frozen=True, slots=True)
class SimProviderConfig(ProviderConfig):
    """A provider config with ``prices`` (the gateway controls add the field to ProviderConfig itself)."""

    prices: Mapping[str, Any] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))

    def __hash__(self) -> int:
        """Hash by name (unique within a simulated pool)."""
        return hash(self.name)


@dataclasses.dataclass(slots=True)
class Result:
    """What happened to each request of one run (index-aligned with the draws)."""

    ok: list[bool]
    latency: list[float]
    provider: list[int]      # index of the provider that answered, -1 when none
    cost: list[float]
    shed: list[bool]
    budget: float | None
    spent: float = 0.0


class SimBudget:
    """The scenario's budget over the whole run, as pacing reads it (:class:`~proxy_plugin.routing.pacing.PaceBudget`)."""

    typical_tokens = TYPICAL_TOKENS
    worst_tokens = WORST_TOKENS
    rate_warmup = 1.0  # the run starts at full traffic

    def __init__(self, limit: float, clock: ManualClock, end: float) -> None:
        self.limit_usd = limit
        self.clock = clock
        self.end = end
        self.charged = 0.0
        self.held = 0.0

    def worst_of(self, body: Mapping[str, Any]) -> tuple[float, float]:
        return WORST_TOKENS

    def spent(self) -> float:
        return self.charged + self.held

    def left_in_period(self) -> float:
        return max(0.0, self.end - self.clock.now)

    def reserve(self, usd: float) -> None:
        self.held += usd

    def release(self, usd: float) -> None:
        self.held -= usd


class _NoClient:
    """The pool's upstream client, never used: the simulated exchange makes no connections."""

    def endpoint(self, url: str, headers: Mapping[str, str]) -> None:
        return None


class SimExchange:
    """A simulated non-streaming request (see the module docstring)."""

    observer: Observer | None = None
    broke: Outcome | None = None
    body: dict[str, Any] | None = None  # no request body: pacing reserves the budget's worst_tokens

    def __init__(self, request: Request, result: Result, index: int, budget: SimBudget | None) -> None:
        self.model = MODEL
        self.request = request
        self.result = result
        self.index = index
        self.budget = budget
        self.tries: dict[int, int] = {}

    def start(self, provider: Provider) -> None:
        """Nothing to prepare."""

    def may_try(self) -> bool:
        return True

    async def attempt(self, provider: Provider, mapped: str, run: Attempts) -> Outcome:
        """Wait the drawn latency; return the drawn outcome."""
        k = self.tries.get(provider.index, 0)
        self.tries[provider.index] = k + 1
        drawn = self.request.attempts[provider.index][min(k, ATTEMPTS - 1)]
        await asyncio.sleep(drawn.seconds)
        if drawn.ok:
            provider.state.record_success(mapped, drawn.seconds)
            cost = cost_usd(provider.config, mapped, *self.request.tokens)
            if self.budget is not None:
                self.budget.charged += cost
            self.result.cost[self.index] += cost
            self.result.provider[self.index] = provider.index
            return Outcome(ok=True, answer=True)
        if drawn.kind == "refused":
            outcome = Outcome.of_exception(ConnectionRefusedError("refused"))
            assert outcome is not None
            return outcome
        if drawn.kind == "timeout":
            outcome = Outcome.of_exception(TimeoutError())
            assert outcome is not None
            return outcome
        if drawn.kind == "429":
            return Outcome.of_status(429, b'{"error":{"code":"rate_limit_exceeded"}}',
                                     {"Retry-After": str(max(1, round(drawn.retry_after)))})
        return Outcome.of_status(503, b'{"error":{"message":"overloaded"}}', {})

    def relay(self, provider: Provider, mapped: str) -> AsyncGenerator[Any, None]:
        raise NotImplementedError

    def refused(self, outcome: Outcome, provider: Provider) -> Any:
        raise AssertionError("simulated providers never blame the caller")

    def failed(self, outcome: Outcome) -> None:
        """Nothing to remember."""

    def exhausted(self, run: Attempts) -> Exception:
        return run.exhausted()

    def close(self) -> None:
        """Nothing open."""


def sim_config(scenario: Scenario, strategy: str) -> ProxyConfig:
    """The proxy configuration a scenario runs under (defaults but for what the simulation needs)."""
    providers = tuple(
        SimProviderConfig(name=s.name, base_url=f"http://{s.name}.sim.invalid/v1",
                          prices=types.MappingProxyType({"*": types.MappingProxyType(
                              {"input": s.price[0], "output": s.price[1]})}))
        for s in scenario.providers
    )
    return ProxyConfig(
        providers=providers,
        routing=RoutingConfig(strategy=strategy, health_check=HealthCheckConfig(enabled=False)),
        timeouts=TimeoutConfig(request=REQUEST_TIMEOUT, total=None),
        queue=QueueConfig(max_concurrent=10_000, timeout=30.0),
        retries=RetryConfig(),
        source=f"<scenario {scenario.name}>",
    )


def run_strategy(scenario: Scenario, draws: list[Request], strategy: str, seed: int) -> Result:
    """Serve every drawn request with ``strategy`` through the real pool."""
    n = len(draws)
    duration = draws[-1].arrival if draws else 0.0
    clock = ManualClock(START)
    limit = scenario.budget_per_request * n if scenario.budget_per_request is not None else None
    budget = SimBudget(limit, clock, START + duration) if limit is not None else None
    result = Result([False] * n, [0.0] * n, [-1] * n, [0.0] * n, [False] * n, limit)

    async def serve(i: int, pool: Pool) -> None:
        exchange = SimExchange(draws[i], result, i, budget)
        try:
            async for _ in dispatch(pool, exchange):
                pass
        except ProxyError as e:
            result.shed[i] = e.code == "budget_exceeded"
            return
        result.ok[i] = True
        result.latency[i] = clock.now - START - draws[i].arrival

    async def main() -> None:
        pool = Pool(sim_config(scenario, strategy), cast(Any, None), cast(Any, _NoClient()),
                    rng=random.Random(seed), clock=clock, pace=budget)
        tasks = []
        for i, request in enumerate(draws):
            wait = START + request.arrival - clock.now
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.ensure_future(serve(i, pool)))
        await asyncio.gather(*tasks)

    vloop.run(main(), clock)
    result.spent = sum(result.cost)
    return result


def oracle(scenario: Scenario, draws: list[Request]) -> Result:
    """Clairvoyant: the cheapest provider whose drawn outcome is a success within the SLA, else the fastest
    success, else shed (equal prices go to config order: it is clairvoyant about outcomes, it does not race
    latencies). A provider succeeds for a request when one of its attempts does (the latency: that
    attempt's plus the failed ones before it); failures cost nothing."""
    n = len(draws)
    limit = scenario.budget_per_request * n if scenario.budget_per_request is not None else None
    result = Result([False] * n, [0.0] * n, [-1] * n, [0.0] * n, [False] * n, limit)
    for i, request in enumerate(draws):
        options = []
        for p, spec in enumerate(scenario.providers):
            waited = 0.0
            for a in request.attempts[p]:
                waited += a.seconds
                if a.ok:
                    cost = (request.tokens[0] * spec.price[0] + request.tokens[1] * spec.price[1]) / 1e6
                    options.append((waited > SLA, cost if waited <= SLA else waited, waited, cost, p))
                    break
        if not options:
            result.shed[i] = True
            continue
        _, _, waited, cost, p = min(options, key=lambda o: o[:2] + (o[4],))  # equal prices: config order
        result.ok[i], result.latency[i], result.cost[i], result.provider[i] = True, waited, cost, p
    result.spent = sum(result.cost)
    return result
