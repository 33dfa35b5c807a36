"""The provider pool of one configuration: providers, routing plan, admission queue, entry points."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from proxy_plugin.attempts import Attempts, RetryBudget
from proxy_plugin.buffered import BufferedExchange, RawResponse
from proxy_plugin.clock import SYSTEM, Clock
from proxy_plugin.config import ProviderConfig, ProxyConfig
from proxy_plugin.dispatch import Observer, dispatch
from proxy_plugin.errors import ProxyError
from proxy_plugin.provider import Provider
from proxy_plugin.provider_state import ProviderState
from proxy_plugin.redact import provider_secrets
from proxy_plugin.routing import make_strategy
from proxy_plugin.streaming import StreamedExchange
from proxy_plugin.upstream import UpstreamClient

logger = logging.getLogger(__name__)

__all__ = ["Pool", "RawResponse"]


class Pool:
    """Everything one configuration needs at run time: providers, strategy, queue, session."""

    def __init__(
        self, config: ProxyConfig, session: aiohttp.ClientSession, client: UpstreamClient,
        rng: random.Random | None = None, states: dict[str, ProviderState] | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        """Build the providers of ``config``; ``states`` gives the run-time state to carry over, by provider name.

        ``clock`` is what circuits, failure times and the retry budget read (a test's
        ``ManualClock``); request deadlines stay on real time (they bound real waits).
        """
        self.config = config
        self.clock = clock
        self.session = session  # health checks and other calls off the hot path
        self.client = client    # chat completions
        states = states or {}
        self.providers: list[Provider] = []
        for i, p in enumerate(config.providers):  # resolved once per configuration, not per request
            state = states.get(p.name) or ProviderState(p, config.circuit_breaker, config.monitoring, clock)
            state.health_checks = config.routing.health_check.enabled
            self.providers.append(Provider(p, i, state, config.timeouts_for(p), client))
        self.redact = provider_secrets(config.providers)  # applied to upstream error bodies only
        # fallbacks get their own instance: a stateful strategy (round_robin) must not
        # advance its primary rotation when it orders the fallbacks
        self.strategy = seeded_strategy(config.routing.strategy, rng)
        self.fallback_strategy = seeded_strategy(config.routing.strategy, rng)
        self.rng = rng or random.Random()  # backoff jitter
        self.budget = RetryBudget(config.retries.budget_ratio, config.retries.budget_min, clock.monotonic)
        self._queue = asyncio.Semaphore(config.queue.max_concurrent)
        self.in_flight = 0
        self.rejected = 0
        self.requests = 0

    # -- entry points --------------------------------------------------------------

    async def complete(self, body: dict[str, Any], observer: Observer | None = None) -> RawResponse:
        """Answer a non-streaming request from the first provider that can (``observer`` hears every attempt)."""
        async with contextlib.aclosing(dispatch(self, BufferedExchange(self, body, observer))) as answers:
            async for answer in answers:
                return answer  # type: ignore[no-any-return]
        raise AssertionError("dispatch ended without an answer or an error")

    def stream(self, body: dict[str, Any], observer: Observer | None = None) -> AsyncGenerator[bytes, None]:
        """Relay one streaming request (an async generator of SSE bytes; ``observer`` hears every attempt)."""
        return dispatch(self, StreamedExchange(self, body, observer))

    # -- admission -----------------------------------------------------------------

    def admission(self) -> _Admission:
        """Hold one of ``queue.max_concurrent`` places, waiting at most ``queue.timeout`` (``async with``)."""
        return _Admission(self)

    # -- planning ------------------------------------------------------------------

    def plan(self, model: str) -> list[Provider]:
        """Providers to try, in order: available primaries, then available fallbacks.

        When none is available, every provider, least recently failed first.
        """
        primaries: list[Provider] = []
        fallbacks: list[Provider] = []
        for p in self.providers:
            if p.state.available(p.map_model(model)):
                (fallbacks if p.config.fallback_only else primaries).append(p)
        order = self.strategy.order(primaries) + self.fallback_strategy.order(fallbacks)
        if not order:
            order = sorted(self.providers, key=lambda p: (p.state.last_failure, p.config.fallback_only, p.index))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("route model=%s strategy=%s plan=%s", model, self.strategy.name, [p.name for p in order])
        return order

    def attempts(self, model: str) -> Attempts:
        """A fresh attempt driver for one request."""
        total = self.config.timeouts.total
        deadline = time.monotonic() + total if total else None
        return Attempts(self.plan(model), model, self.config.retries, self.budget, deadline, self.rng, self.providers)


def seeded_strategy(name: str, rng: random.Random | None) -> Any:
    """A new strategy ``name``; with ``rng`` (a seeded pool), a random one draws from a generator seeded from it."""
    strategy = make_strategy(name)
    if rng is not None and "rng" in inspect.signature(type(strategy)).parameters:
        strategy = type(strategy)(rng=random.Random(rng.getrandbits(64)))  # type: ignore[call-arg]
    return strategy


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
    return (provider, config.timeouts_for(provider), config.circuit_breaker, config.monitoring)


class _Admission:
    """``async with pool.admission():`` a place in the queue for the block (a plain object, not a generator)."""

    __slots__ = ("pool",)

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def __aenter__(self) -> None:
        pool = self.pool
        queue = pool._queue
        if queue.locked():
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
        else:
            await queue.acquire()
        pool.in_flight += 1
        pool.requests += 1
        pool.budget.request()

    async def __aexit__(self, *exc: object) -> None:
        self.pool._queue.release()
        self.pool.in_flight -= 1
