"""The proxy's request gate: every chat request the server serves passes through it, whatever the approach.

The host asks for it once (``request_gate`` hook) and calls it for every chat request
(``hulumanage/gate.py`` says how). The gate is built once per runtime and reads the
current configuration at each request, so a reload applies at once. The parts:

- who calls and what they may use: client keys, models per key (``clients.py``);
- how much: rate limits and budgets, reserved before upstream and settled after (``limits.py``, ``budgets.py``);
- what it cost: prices and spend (``prices.py``, ``spend.py``);
- the response cache (``cache.py``); metrics (``proxy_plugin/metrics.py``);
- the global budget as budget pacing reads it (``pace.py``: :meth:`RequestGate.pace_budget`).

A :class:`Ticket` is one admitted request. The dispatch loop reports every upstream
attempt to it (``attempted``) and every answer's usage (``record``); the host reports how
the response ended (``finish``). What must not overshoot (tokens per minute, budgets) is
reserved in ``admit`` and settled in ``finish``, once, whatever happened in between.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from proxy_plugin.errors import ProxyError
from proxy_plugin.gate.budgets import snapshot as budget_snapshot
from proxy_plugin.gate.cache import ResponseCache
from proxy_plugin.gate.clients import Client
from proxy_plugin.gate.controls import Controls, Hold
from proxy_plugin.gate.limits import WINDOW, RateLimiter
from proxy_plugin.gate.pace import GlobalPace, TypicalUsage, paces
from proxy_plugin.gate.spend import snapshot as spend_snapshot
from proxy_plugin.state import MemoryStore, StateStore, make_store
from proxy_plugin.state.base import RedisDown

if TYPE_CHECKING:
    from proxy_plugin.attempts import Outcome
    from proxy_plugin.config import ProxyConfig
    from proxy_plugin.gate.shared import Scripts
    from proxy_plugin.metrics import Metrics
    from proxy_plugin.runtime import ProxyRuntime
    from proxy_plugin.state.redis import RedisStore

logger = logging.getLogger(__name__)

__all__ = ["Client", "RequestGate", "Ticket"]


def backend_unavailable() -> ProxyError:
    """The 503 of ``on_redis_down: closed`` while Redis does not answer."""
    return ProxyError(503, "the shared state backend (Redis) is unavailable and on_redis_down is 'closed'; "
                      "retry shortly", "server_error", "state_backend_unavailable", {"Retry-After": "1"})


class RequestGate:
    """The request gate of one proxy runtime (see the module docstring)."""

    def __init__(self, runtime: ProxyRuntime) -> None:
        self.runtime = runtime
        self.cache = ResponseCache(runtime.clock)  # the response cache (cache.py), kept across reloads
        # -- gateway controls (keys, limits, budgets, cost): gate/controls.py --
        self.limiter = RateLimiter()          # rate windows outlive reloads
        self.store: StateStore = MemoryStore()  # spend and budget counters; the configured backend from start()
        self.usage = TypicalUsage()           # what an upstream answer typically uses (budget pacing), across reloads
        self._controls: Controls | None = None
        self._started = False
        self.redis: RedisStore | None = None   # state.backend: redis (limits, budgets, cache shared by replicas)
        self.scripts: Scripts | None = None

    # -- gateway controls ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the state store when controls are configured (SQLite by default: spend survives restarts).

        With ``state.backend: redis`` it is opened whatever is configured: the cache, circuits and
        health verdicts are shared through it too (``gate/shared.py``, ``gate/shared_cache.py``).
        """
        config = self.runtime.config
        if self.controls_for(config).active or config.state.backend == "redis":
            store = make_store(config.state, self.runtime.environ)
            await store.open()
            self.store = store
            self._controls = None  # rebuilt on the opened store
            if config.state.backend == "redis":  # the Redis client is loaded only then
                from proxy_plugin.gate.shared import Scripts
                from proxy_plugin.gate.shared_cache import SharedCache
                from proxy_plugin.state.redis import RedisStore

                assert isinstance(store, RedisStore)
                self.redis = store
                self.scripts = Scripts(store)
                self.cache.store = SharedCache(store, self.runtime.clock)
        self._started = True

    async def close(self) -> None:
        """Write what the store still holds (a stop loses no spend)."""
        await self.store.close()

    def controls_for(self, config: ProxyConfig) -> Controls:
        """The controls of ``config`` (built once per configuration; a reload brings a new one)."""
        controls = self._controls
        if controls is None or controls.config is not config:
            controls = self._controls = Controls(config, self.limiter, self.store, self.runtime.clock,
                                                 self.usage if paces(config) else None)
            if self._started and controls.active and type(self.store) is MemoryStore and config.state.backend != "memory":
                logger.warning("gateway controls turned on by a reload: spend is counted in memory until a restart "
                               "opens the state file")
        return controls

    def pace_budget(self, config: ProxyConfig) -> GlobalPace | None:
        """The global budget of ``config`` for a new pool's pacer (None: not paced, see ``pace.py``)."""
        if not paces(config):
            return None
        return GlobalPace(config, lambda: self.store, self.usage, self.runtime.clock)

    def state_snapshot(self) -> dict[str, Any]:
        """The state backend for ``/health`` (Redis: whether it answers, the policy, what waits to be sent)."""
        if self.redis is not None:
            return self.redis.snapshot()
        return {"backend": "memory" if type(self.store) is MemoryStore else self.runtime.config.state.backend}

    def spend(self) -> dict[str, Any]:
        """``GET /admin/spend``: spend by key, provider and model, each budget's current period, unpriced providers."""
        config = self.runtime.config
        controls = self.controls_for(config)
        body: dict[str, Any] = spend_snapshot(self.store)
        scopes = [s for k in config.clients.keys for s in controls.key_budgets.get(k.id, [])] + controls.global_budget
        body["budgets"] = budget_snapshot(self.store, scopes, self.runtime.clock.wall())
        body["unpriced"] = sorted({p.name for p in config.providers if not p.prices}
                                  | {name for name in body["providers"] if not controls.prices.priced(name)})
        return body

    @property
    def keys_required(self) -> bool:
        """Whether clients must present a gateway key (and their bearer token never goes upstream)."""
        return self.controls_for(self.runtime.config).keys_required

    def authenticate(self, api_key: str | None, client_ip: str) -> Client:
        """Who is calling; raises a 401 for a missing or unknown key when keys are configured."""
        client = Client("anonymous", client_ip)
        try:
            self.controls_for(self.runtime.config).authenticate(client, api_key)
        except ProxyError as exc:
            self._limited_by(exc)
            raise
        return client

    def admit(self, client: Client, request: Any) -> Ticket | Awaitable[Ticket]:
        """Admit one parsed request (model allowed, limits reserved, cache looked up), or raise the refusal.

        Synchronous (no ``await`` on the hot path) unless the state is in Redis: then a coroutine.
        """
        if self.redis is not None:
            return self._admit_shared(client, request)
        ticket = Ticket(self, client, request)
        controls = self.controls_for(self.runtime.config)
        if controls.active:
            try:
                # raises the 403 / 429; reserves nothing then
                ticket.hold = controls.admit(client, request.body, getattr(request, "fanout", 1))
            except ProxyError as exc:
                self._limited_by(exc)
                raise
            ticket.wants_usage = True
        if getattr(request, "route", "chat") == "chat":  # embeddings and legacy completions are never cached
            self.cache.admit(ticket, self.runtime.config.cache)  # a hit sets ticket.answer
        return ticket

    async def _admit_shared(self, client: Client, request: Any) -> Ticket:
        """:meth:`admit` with the state in Redis: one round trip for limits and budgets, then the shared cache.

        Redis down (or slower than ``redis_timeout``): ``on_redis_down: local`` admits on this
        process's own windows and counters; ``closed`` refuses with a 503.
        """
        redis, scripts = self.redis, self.scripts
        assert redis is not None and scripts is not None
        config = self.runtime.config
        ticket = Ticket(self, client, request)
        controls = self.controls_for(config)
        if not redis.up and redis.policy == "closed":
            raise backend_unavailable()
        if controls.active:
            try:
                try:
                    ticket.hold = await scripts.admit_request(controls, client, request.body,
                                                              getattr(request, "fanout", 1))
                except RedisDown:
                    if redis.policy == "closed":
                        raise backend_unavailable() from None
                    # per-process, until Redis answers
                    ticket.hold = controls.admit(client, request.body, getattr(request, "fanout", 1))
            except ProxyError as exc:
                self._limited_by(exc)
                raise
            ticket.wants_usage = True
        if getattr(request, "route", "chat") == "chat":  # embeddings and legacy completions are never cached
            await self.cache.admit_shared(ticket, config.cache)
        return ticket

    # -- metrics (proxy_plugin/metrics.py) ---------------------------------------------

    def metrics(self) -> Metrics | None:
        """The runtime's metrics, None when ``metrics.enabled`` is off."""
        runtime = self.runtime
        return runtime.metrics if runtime.config.metrics.enabled else None

    def limited(self, reason: str) -> None:
        """Count a refusal by a limit (``rpm``, ``tpm``, ``parallel``), a ``budget`` or ``auth`` (call it when raising it)."""
        metrics = self.metrics()
        if metrics is not None:
            metrics.limited(reason)

    def cache_size(self) -> int:
        """Entries in the response cache (the JSON summary of ``/metrics``)."""
        return len(self.cache.store)

    def limiter_summary(self) -> dict[str, float]:
        """The rate limiter at a glance (the JSON summary of ``/metrics``).

        Callers with requests in their window or in flight, the largest ``rpm`` configured
        (keys or anonymous; 0: none), and the window's length in seconds.
        """
        config = self.runtime.config
        now = self.runtime.clock.monotonic()
        active = 0
        for window in self.limiter.windows.values():
            window.prune(now)
            active += bool(window.buckets or window.parallel)
        rpms = [k.rpm for k in config.clients.keys if k.rpm] + [config.clients.anonymous.rpm or 0]
        return {"active_clients": active, "max_requests_per_window": max(rpms), "window_seconds": WINDOW}

    def _limited_by(self, refusal: ProxyError) -> None:
        if refusal.reason is not None:
            self.limited(refusal.reason)

    def refused(self, status: int, chain: tuple[str, ...], model: object, total: float) -> None:
        """A request ended without a ticket (refused, or invalid before admission): counted all the same."""
        metrics = self.metrics()
        if metrics is not None:
            metrics.finished(chain, model, False, status, None, total, 0.0)


class Ticket:
    """One admitted request: what it reserved, who answered it, what it used."""

    __slots__ = ("answer", "attempts", "cache", "client", "completion_tokens", "fill", "gate", "hold", "metrics",
                 "model", "prompt_tokens", "provider", "provider_model", "request", "saved_usd", "tap",
                 "upstream_seconds", "usd", "usd_counted", "wants_usage")

    def __init__(self, gate: RequestGate, client: Client, request: Any) -> None:
        self.gate = gate
        self.client = client
        self.request = request
        self.model: str = request.body.get("model", "")
        self.answer: Any = None          # the gate's own answer (a cache hit)
        self.tap: Any = None             # set when the cache wants the body
        self.wants_usage = False         # ask streams for usage (a token limit, a budget or prices need it)
        self.attempts = 0
        self.provider: str | None = None
        self.provider_model: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.usd = 0.0
        self.hold: Hold | None = None    # what the gateway controls reserved (gate/controls.py)
        # the response cache (cache.py): None when it is off, else "hit", "miss" or "bypass"
        self.cache: str | None = None
        self.saved_usd = 0.0             # a hit: what the answer cost when it was first made
        self.fill: Any = None            # a miss or a refresh: what the cache taps to store the answer
        # metrics (proxy_plugin/metrics.py)
        self.metrics = gate.metrics()
        self.upstream_seconds = 0.0      # time spent in upstream attempts (the rest is the server's overhead)
        self.usd_counted = 0.0           # the part of ``usd`` the cost series has counted

    # -- from the dispatch loop and terminal approaches ----------------------------------

    def attempting(self) -> None:
        """An upstream attempt starts."""
        self.attempts += 1

    def answering(self, provider: str, model: str) -> None:
        """This provider answers the request."""
        self.provider, self.provider_model = provider, model
        if self.fill is not None:
            self.fill.answering()

    def attempted(self, provider: str, model: str, outcome: Outcome, seconds: float) -> None:
        """One upstream attempt ended."""
        self.upstream_seconds += seconds
        if self.metrics is not None:
            self.metrics.attempted(provider, model, outcome, seconds)
        if self.fill is not None:
            self.fill.attempted(outcome.ok)  # answered, then failed: a stream broke, never cached

    def record(self, provider: str, model: str, usage: dict[str, Any]) -> None:
        """An upstream answer's usage (every call of a composed or wrapped request adds up)."""
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        self.prompt_tokens += prompt if isinstance(prompt, int) else 0
        self.completion_tokens += completion if isinstance(completion, int) else 0
        if self.provider is None:
            self.provider, self.provider_model = provider, model
        if self.hold is not None:
            self.usd += self.hold.record(provider, model, prompt if isinstance(prompt, int) else 0,
                                         completion if isinstance(completion, int) else 0)
        if self.metrics is not None:
            self._count_usage(provider, model, prompt, completion)

    def refused(self, reason: str) -> None:
        """The pool refused the request before any attempt: counted as the gate's own refusals are."""
        self.gate.limited(reason)

    # -- from the host -----------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        """Who answered and after how many upstream attempts."""
        headers: dict[str, str] = {}
        if self.provider is not None:
            headers["x-hulumanage-provider"] = self.provider
        if self.attempts:
            headers["x-hulumanage-attempts"] = str(self.attempts)
        if self.cache is not None:
            headers["x-hulumanage-cache"] = self.cache
        if self.hold is not None:
            headers.update(self.hold.rate_headers)
        return headers

    def finish(self, status: int, complete: bool, ttft: float | None, total: float) -> None:
        """The response has ended: settle what was reserved."""
        if self.hold is not None:
            # a cache hit (``answer``) or a failure uses no tokens and no budget
            answered = status < 400 and self.answer is None
            self.usd = self.hold.finish(answered, self.provider)
        if self.fill is not None:  # after settling: the answer's cost (``usd``) is known by now
            self.gate.cache.finish(self, status, complete, self.gate.runtime.config.cache)
        if self.metrics is not None:  # last: what settling set (the cost) is counted
            self._count_request(status, ttft, total)

    def log_fields(self) -> dict[str, Any]:
        """The access log's fields from the gate: client, provider, tokens, cost, cache result."""
        return {
            "client": self.client.id if self.client.key is not None else self.client.ip,
            "provider": self.provider,
            "provider_model": self.provider_model,
            "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.usd,
            "cache": self.cache,
        }

    # -- metrics (proxy_plugin/metrics.py) ---------------------------------------------

    def _count_usage(self, provider: str, model: str, prompt: object, completion: object) -> None:
        """An answer's tokens, and what the request's cost has grown by, to that provider's series."""
        assert self.metrics is not None
        self.metrics.record(provider, model, prompt if isinstance(prompt, int) else 0,
                            completion if isinstance(completion, int) else 0)
        if self.usd > self.usd_counted:
            self.metrics.spent(provider, model, self.usd - self.usd_counted)
            self.usd_counted = self.usd

    def _count_request(self, status: int, ttft: float | None, total: float) -> None:
        """The request's own series, once, when its response has ended."""
        metrics = self.metrics
        assert metrics is not None
        request = self.request
        metrics.finished(request.chain, self.model, request.stream, status, ttft, total, self.upstream_seconds)
        if self.usd > self.usd_counted:  # cost settled at the end: the provider that answered
            metrics.spent(self.provider, self.provider_model, self.usd - self.usd_counted)
            self.usd_counted = self.usd
        if self.cache is not None:
            metrics.cached(self.cache, self.saved_usd)
        if metrics.per_client:
            client = self.client.id if self.client.key is not None else "anonymous"
            metrics.client(client, status, self.prompt_tokens, self.completion_tokens, self.usd)
