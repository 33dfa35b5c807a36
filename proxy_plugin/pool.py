"""The provider pool: admission queue, routing plan, upstream calls (non-streaming)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from typing import Any

import aiohttp
import orjson

from proxy_plugin.attempts import Attempts, Outcome, RetryBudget
from proxy_plugin.classify import Failure
from proxy_plugin.config import ProxyConfig
from proxy_plugin.errors import ProxyError
from proxy_plugin.provider import Provider
from proxy_plugin.routing import make_strategy
from proxy_plugin.upstream import Connection, UpstreamClient

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RawResponse:
    """Upstream bytes for the host to relay untouched."""

    status: int
    body: bytes
    headers: dict[str, str]


class Pool:
    """Everything one configuration needs at run time: providers, strategy, queue, session."""

    def __init__(
        self, config: ProxyConfig, session: aiohttp.ClientSession, client: UpstreamClient,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.session = session  # health checks and other calls off the hot path
        self.client = client    # chat completions
        self.providers = [
            Provider(p, config.circuit_breaker, i, config.monitoring) for i, p in enumerate(config.providers)
        ]
        for provider in self.providers:  # resolved once per configuration, not per request
            provider.timeouts = config.timeouts_for(provider.config)
            provider.endpoint = client.endpoint(provider.chat_url, provider.headers)
        self.strategy = make_strategy(config.routing.strategy)
        # fallbacks get their own instance: a stateful strategy (round_robin) must not
        # advance its primary rotation when it orders the fallbacks
        self.fallback_strategy = make_strategy(config.routing.strategy)
        self.rng = rng or random.Random()
        self.budget = RetryBudget(config.retries.budget_ratio, config.retries.budget_min)
        self._queue = asyncio.Semaphore(config.queue.max_concurrent)
        self.in_flight = 0
        self.rejected = 0
        self.requests = 0

    # -- admission -----------------------------------------------------------------

    def admission(self) -> _Admission:
        """Hold one of ``queue.max_concurrent`` places, waiting at most ``queue.timeout`` (``async with``)."""
        return _Admission(self)

    # -- planning ------------------------------------------------------------------

    def plan(self, model: str) -> list[Provider]:
        """Providers to try, in order: available primaries, then available fallbacks.

        When none is available, every provider, least recently failed first.
        """
        primaries, fallbacks = [], []
        for p in self.providers:
            if p.available(p.map_model(model)):
                (fallbacks if p.config.fallback_only else primaries).append(p)
        order = self.strategy.order(primaries) + self.fallback_strategy.order(fallbacks)
        if not order:
            order = sorted(self.providers, key=lambda p: (p.last_failure, p.config.fallback_only, p.index))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("route model=%s strategy=%s plan=%s", model, self.strategy.name, [p.name for p in order])
        return order

    def attempts(self, model: str) -> Attempts:
        """A fresh attempt driver for one request."""
        total = self.config.timeouts.total
        deadline = time.monotonic() + total if total else None
        return Attempts(self.plan(model), model, self.config.retries, self.budget, deadline, self.rng)

    # -- non-streaming -------------------------------------------------------------

    async def complete(self, body: dict[str, Any]) -> RawResponse:
        """Answer a non-streaming request from the first provider that can."""
        model = body["model"]
        async with self.admission():
            run = self.attempts(model)
            # closed here, not by the garbage collector: the provider's slot is back before the answer leaves
            async with contextlib.aclosing(run.candidates()) as candidates:
                async for provider, mapped in candidates:
                    payload = orjson.dumps(body if mapped == model else {**body, "model": mapped})
                    for attempt in range(self.config.retries.attempts_per_provider):
                        outcome, response = await self._post_once(provider, mapped, payload, run)
                        if response is not None:
                            return response
                        assert outcome is not None
                        if outcome.failure is Failure.CALLER:
                            return RawResponse(outcome.status or 400, outcome.body, {"Content-Type": "application/json"})
                        run.record(provider, mapped, outcome)
                        if not await run.retry_same(outcome, attempt, provider, mapped):
                            break
            raise run.exhausted()

    async def _post_once(
        self, provider: Provider, mapped: str, payload: bytes, run: Attempts
    ) -> tuple[Outcome | None, RawResponse | None]:
        """One upstream POST; either a response to return or the failure's outcome."""
        timeouts = provider.timeouts
        limit = timeouts.request
        left = run.remaining()
        if left is not None:
            limit = min(limit, left)
        started = time.monotonic()
        conn: Connection | None = None
        try:
            deadline = asyncio.get_running_loop().time() + limit
            conn = await self.client.send(provider.endpoint, payload, timeouts.connect, deadline)
            body = await conn.read()
            status = conn.status
            headers = conn.headers
        except Exception as exc:  # classified, re-raised when not a transport failure
            outcome = Outcome.of_exception(exc)
            if outcome is None:
                raise
            return outcome, None
        finally:
            if conn is not None:
                self.client.release(conn)
        if status == 200:
            if _is_completion(body):
                provider.record_success(mapped, time.monotonic() - started)
                return None, RawResponse(200, body, {"Content-Type": "application/json"})
            return Outcome(Failure.BAD_RESPONSE, 200, "200 with a body that is not a JSON completion"), None
        return Outcome.of_status(status, body, headers), None


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


def _is_completion(body: bytes) -> bool:
    """Whether a 200 body is a JSON object with ``choices`` (checked, then relayed as the same bytes)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and isinstance(data.get("choices"), list)
