"""The provider pool of one configuration: providers, routing plan, admission queue, entry points."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from proxy_plugin.attempts import Attempts, Outcome, RetryBudget
from proxy_plugin.buffered import BufferedExchange, RawResponse
from proxy_plugin.classify import Failure
from proxy_plugin.clock import SYSTEM, Clock
from proxy_plugin.config import ProviderConfig, ProxyConfig
from proxy_plugin.dispatch import Observer, dispatch
from proxy_plugin.errors import ProxyError
from proxy_plugin.provider import Provider
from proxy_plugin.provider_state import ProviderState
from proxy_plugin.redact import provider_secrets
from proxy_plugin.routing import Context, make_strategy
from proxy_plugin.routing.pacing import PaceBudget, Pacer
from proxy_plugin.streaming import StreamedExchange
from proxy_plugin.upstream import UpstreamClient

logger = logging.getLogger(__name__)

__all__ = ["Pool", "RawResponse"]


class Pool:
    """Everything one configuration needs at run time: providers, strategy, queue, session."""

    def __init__(
        self, config: ProxyConfig, session: aiohttp.ClientSession, client: UpstreamClient,
        rng: random.Random | None = None, states: dict[str, ProviderState] | None = None,
        clock: Clock = SYSTEM, pace: PaceBudget | None = None,
    ) -> None:
        """Build the providers of ``config``; ``states`` gives the run-time state to carry over, by provider name.

        ``clock`` is what circuits, failure times, routing signals and the retry budget read
        (a test's ``ManualClock``); request deadlines stay on real time (they bound real
        waits). ``pace``: the budget to pace spending against (the runtime passes the global
        budget from the request gate; None: no pacing), when ``routing.pace_budget``.
        """
        self.config = config
        self.clock = clock
        self.session = session  # health checks and other calls off the hot path
        self.client = client    # chat completions
        states = states or {}
        self.rng = rng or random.Random()
        self.providers: list[Provider] = []
        for i, p in enumerate(config.providers):  # resolved once per configuration, not per request
            state = states.get(p.name) or ProviderState(p, config.circuit_breaker, config.monitoring, clock)
            state.health_checks = config.routing.health_check.enabled
            state.ewma_decay = config.routing.ewma_decay
            if rng is not None:
                state.rng = rng
            self.providers.append(Provider(p, i, state, config.timeouts_for(p), client))
        self.redact = provider_secrets(config.providers)  # applied to upstream error bodies only
        ctx = Context(self.rng, clock, config.routing)
        self.strategy = make_strategy(config.routing.strategy, ctx)
        # fallbacks get their own instance: a stateful strategy (round_robin) must not
        # advance its primary rotation when it orders the fallbacks
        self.fallback_strategy = make_strategy(config.routing.strategy, ctx)
        self._learners = [s.observe for s in (self.strategy, self.fallback_strategy) if hasattr(s, "observe")]
        self.pacer = Pacer(pace, clock, self.rng) if pace is not None and config.routing.pace_budget else None
        self.unfiltered = all(p.config.models is None for p in self.providers)  # no provider lists its models
        self.served = sorted({m for p in config.providers for m in (*(p.models or ()), *p.model_map)})
        self.budget = RetryBudget(config.retries.budget_ratio, config.retries.budget_min, clock.monotonic)
        self._queue = asyncio.Semaphore(config.queue.max_concurrent)
        self.in_flight = 0
        self.rejected = 0
        self.requests = 0
        self.waiting = 0  # requests waiting for a place in the queue (hulumanage_queue_waiting)

    # -- entry points --------------------------------------------------------------

    async def complete(self, body: dict[str, Any], observer: Observer | None = None,
                       path: str | None = None) -> RawResponse:
        """Answer a non-streaming request from the first provider that can (``observer`` hears every attempt).

        ``path``: None for a chat completion, else a route of :data:`~proxy_plugin.provider.ROUTES`.
        """
        answers = dispatch(self, BufferedExchange(self, body, observer, path))
        try:
            answer = await anext(answers, None)
            # dispatch returns right after its answer: run it to its end, so that its blocks close
            # on a plain return, not on a GeneratorExit thrown through them (about 1 µs a request)
            if answer is None or await anext(answers, None) is not None:
                raise AssertionError("dispatch must yield exactly one answer or raise")
            return answer  # type: ignore[no-any-return]
        finally:
            await answers.aclose()  # (a no-op once it has ended; a cancelled request closes it here)

    def stream(self, body: dict[str, Any], observer: Observer | None = None,
               path: str | None = None) -> AsyncGenerator[bytes, None]:
        """Relay one streaming request (an async generator of SSE bytes; ``observer`` hears every attempt).

        ``path``: None for a chat completion, ``"/completions"`` for a legacy one (never continued elsewhere).
        """
        return dispatch(self, StreamedExchange(self, body, observer, path))

    # -- admission -----------------------------------------------------------------

    def admission(self) -> _Admission:
        """Hold one of ``queue.max_concurrent`` places, waiting at most ``queue.timeout`` (``async with``)."""
        return _Admission(self)

    # -- planning ------------------------------------------------------------------

    def plan(self, model: str) -> list[Provider]:
        """Providers to try, in order: available primaries, then available fallbacks, of those serving ``model``.

        When none is available, every provider serving it, least recently failed first;
        when none serves it, a 404 ``model_not_found`` naming the models served.
        """
        primaries: list[Provider] = []
        fallbacks: list[Provider] = []
        serving = self.providers if self.unfiltered else [p for p in self.providers if p.serves(model)]
        if not serving:
            raise ProxyError(404, f"the model {model!r} is not served here; served models: {', '.join(self.served)}",
                             "invalid_request_error", "model_not_found")
        for p in serving:
            if p.state.available(p.map_model(model)):
                (fallbacks if p.config.fallback_only else primaries).append(p)
        order = self.strategy.order(primaries, model) + self.fallback_strategy.order(fallbacks, model)
        if not order:
            order = sorted(serving, key=lambda p: (p.state.last_failure, p.config.fallback_only, p.index))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("route model=%s strategy=%s plan=%s", model, self.strategy.name, [p.name for p in order])
        return order

    def attempts(self, model: str, body: dict[str, Any] | None = None) -> Attempts:
        """A fresh attempt driver for one request (``body``: as it goes upstream, for the pacer's worst case)."""
        total = self.config.timeouts.total
        deadline = time.monotonic() + total if total else None
        order = self.plan(model)
        hold = 0.0
        if self.pacer is not None:
            order, hold = self.pacer.apply(order, model, body)
        run = Attempts(order, model, self.config.retries, self.budget, deadline, self.rng, self.providers)
        run.hold = hold
        return run

    def observe(self, provider: Provider, mapped: str, outcome: Outcome, seconds: float) -> None:
        """One attempt ended (the dispatch loop's hook): feed the provider's signals and a learning strategy.

        A caller's error says nothing about the provider and is left out; a failure that is
        the provider's fault counts as a heavy latency sample.
        """
        failure = outcome.failure
        if failure is Failure.CALLER:
            return
        penalty = failure is not None and failure.counts_against_provider
        provider.state.observe(mapped, outcome.ok, seconds, penalty)
        for learn in self._learners:
            learn(provider, mapped, outcome, seconds)

    def finish(self, run: Attempts) -> None:
        """A request ended: give back what it held (its budget reservation)."""
        if self.pacer is not None:
            self.pacer.finish(run.hold)


def carried_states(old: Pool | None, config: ProxyConfig) -> dict[str, ProviderState]:
    """The run-time states of ``old``'s providers that ``config`` leaves unchanged, by name.

    Unchanged means the provider's own section, its resolved timeouts, and the circuit
    breaker and monitoring settings are all equal; any difference starts it afresh.
    """
    if old is None:
        return {}
    new = {p.name: _state_key(config, p) for p in config.providers}
    return {p.name: p.state for p in old.providers if new.get(p.name) == _state_key(old.config, p.config)}


def _state_key(config: ProxyConfig, provider: ProviderConfig) -> tuple[object, ...]:
    # prices are the gate's business: a new price list keeps the provider's circuits and latency
    unpriced = dataclasses.replace(provider, prices={}) if provider.prices else provider
    return (unpriced, config.timeouts_for(provider), config.circuit_breaker, config.monitoring)


class _Admission:
    """``async with pool.admission():`` a place in the queue for the block (a plain object, not a generator)."""

    __slots__ = ("pool",)

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def __aenter__(self) -> None:
        pool = self.pool
        queue = pool._queue
        if queue.locked():
            pool.waiting += 1
            try:
                async with asyncio.timeout(pool.config.queue.timeout):
                    await queue.acquire()
            except TimeoutError:
                pool.rejected += 1
                limit = pool.config.queue.max_concurrent
                raise ProxyError(
                    503,
                    f"the proxy is at capacity: {limit} requests in flight and no place freed within "
                    f"{pool.config.queue.timeout:g}s; retry later or raise queue.max_concurrent",
                    "server_error", "queue_full", {"Retry-After": "1"},
                ) from None
            finally:
                pool.waiting -= 1
        else:
            await queue.acquire()
        pool.in_flight += 1
        pool.requests += 1
        pool.budget.request()

    async def __aexit__(self, *exc: object) -> None:
        self.pool._queue.release()
        self.pool.in_flight -= 1
