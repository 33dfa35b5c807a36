"""The proxy's life in one server: config, connection pool, provider pool, health checker, reload."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from proxy_plugin.clock import SYSTEM, Clock
from proxy_plugin.config import ProxyConfig, load_config
from proxy_plugin.gate import RequestGate
from proxy_plugin.health import HealthChecker
from proxy_plugin.metrics import Metrics
from proxy_plugin.pool import Pool, carried_states
from proxy_plugin.state.circuits import SharedCircuits
from proxy_plugin.upstream import UpstreamClient

logger = logging.getLogger(__name__)

#: The environment variable that seeds the proxy's random choices (weighted routing, backoff jitter).
SEED_VAR = "HULUMANAGE_PROXY_SEED"


def plural(count: int, noun: str) -> str:
    """``1 provider``, ``2 providers``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _apply_log_level(level: str) -> None:
    """``monitoring.log_level`` for the plugin's loggers; a more verbose host level (``--log-level DEBUG``) wins."""
    wanted = logging.getLevelName(level)
    root = logging.getLogger().getEffectiveLevel()
    logging.getLogger("proxy_plugin").setLevel(min(wanted, root) if isinstance(wanted, int) else root)


def seed_rng(environ: Mapping[str, str]) -> random.Random | None:
    """``$HULUMANAGE_PROXY_SEED``: seeds routing and backoff jitter for reproducible runs (the demo sets it)."""
    raw = environ.get(SEED_VAR)
    if raw is None or not raw.strip():
        return None
    try:
        return random.Random(int(raw))
    except ValueError:
        raise ValueError(f"${SEED_VAR} must be an integer, got {raw!r}") from None


class ProxyRuntime:
    """Owns the long-lived ClientSession and the current Pool; a reload swaps the pool whole."""

    def __init__(self, path: Path, environ: Mapping[str, str] | None = None, clock: Clock | None = None) -> None:
        """Load ``path``; ``clock`` (default: the system's) is what every pool's circuits and budgets read."""
        self.path = path
        self.clock = SYSTEM if clock is None else clock
        self.environ = os.environ if environ is None else environ
        self.config: ProxyConfig = load_config(path, self.environ)
        self._rng = seed_rng(self.environ)  # None: unseeded
        self.session: aiohttp.ClientSession | None = None
        self.client: UpstreamClient | None = None
        self.pool: Pool | None = None
        self.reloads = 0
        self.wrap_client: Any = None  # the pool-backed SDK client of wrapped approaches (wrap.py), built once
        self._health = HealthChecker(lambda: self.current)
        self.metrics = Metrics(lambda: self.pool, lambda: self.config,  # this runtime's own registry
                               lambda: None if self.gate.redis is None else self.gate.redis.up)
        self.gate = RequestGate(self)  # every chat request's gate (keys, limits, budgets, cost, cache, metrics)

    @property
    def current(self) -> Pool:
        """The pool serving new requests."""
        assert self.pool is not None, "the proxy runtime is not started"
        return self.pool

    async def start(self) -> None:
        """Open the connection pool, build the provider pool, start health checks."""
        _apply_log_level(self.config.monitoring.log_level)
        await self.open()
        try:
            await self.gate.start()  # the state store (spend survives restarts)
        except BaseException:
            await self.close()
            raise
        if self.gate.redis is not None:  # circuits and health verdicts shared by replicas (state/circuits.py)
            shared = SharedCircuits(self.gate.redis, lambda: self.pool)
            self.gate.redis.add_poller(shared.poll)
            self._health.shared = shared
        self._health.start()
        logger.info("proxy ready: %s (%s), strategy %s, config %s", plural(len(self.config.providers), "provider"),
                    ", ".join(p.name for p in self.config.providers), self.config.routing.strategy, self.path)

    async def open(self) -> None:
        """Open the connection pool and build the provider pool, as startup does (no health checks yet).

        ``hulumanage check`` stops here: what fails here fails the server's startup too.
        """
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None), cookie_jar=aiohttp.DummyCookieJar(),
                                             auto_decompress=True)
        self.client = UpstreamClient(environ=self.environ)
        try:
            self.pool = Pool(self.config, self.session, self.client, clock=self.clock, rng=self._pool_rng(),
                             pace=self.gate.pace_budget(self.config))  # ValueError: an unusable egress proxy setting
        except BaseException:
            await self.close()
            raise

    def _pool_rng(self) -> random.Random | None:
        """A new pool's random generator: seeded from ``$HULUMANAGE_PROXY_SEED`` when it is set."""
        return None if self._rng is None else random.Random(self._rng.getrandbits(64))

    async def prepare_reload(self) -> PreparedReload:
        """Load and validate the file again and build the new pool, swapping nothing yet.

        An invalid file raises ConfigError (an unusable egress setting ValueError) and
        nothing changes. The host applies the result once every plugin has prepared its own.
        """
        config = load_config(self.path, self.environ)
        assert self.session is not None and self.client is not None
        # providers whose config is unchanged keep their circuits, latency and health (shared state objects)
        pool = Pool(config, self.session, self.client, rng=self._pool_rng(), states=carried_states(self.pool, config),
                    clock=self.clock, pace=self.gate.pace_budget(config))  # a changed budget applies at once
        if pool.pacer is not None and self.pool is not None and self.pool.pacer is not None:
            pool.pacer.carry(self.pool.pacer)  # the request rate goes on
        return PreparedReload(self, config, pool)

    async def reload(self) -> dict[str, Any]:
        """Load the file again; on success swap in a new pool (prepare, then apply).

        Requests in flight keep the old pool until they finish; both share the one
        connection pool, which stays open.

        An invalid file raises ConfigError and the current configuration keeps serving.
        """
        return (await self.prepare_reload()).apply()

    def _swap(self, config: ProxyConfig, pool: Pool) -> dict[str, Any]:
        """Make ``pool`` (built from ``config``) the one serving new requests."""
        self.config = config
        self.pool = pool
        self.reloads += 1
        _apply_log_level(config.monitoring.log_level)
        self._health.poke()
        logger.info("proxy configuration reloaded from %s: %s", self.path, plural(len(config.providers), "provider"))
        return {"reloaded": True, "providers": [p.name for p in config.providers], "reloads": self.reloads}

    async def close(self) -> None:
        """Stop health checks, write what the gate's state store holds, close every upstream connection."""
        await self._health.stop()
        await self.gate.close()
        if self.wrap_client is not None:
            await self.wrap_client.close()
            self.wrap_client = None
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.client is not None:
            await self.client.close()
            self.client = None

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able, secret-free status for ``/health``."""
        pool = self.current
        return {
            "config": str(self.path),
            "strategy": pool.strategy.name,
            "in_flight": pool.in_flight,
            "queue_limit": pool.config.queue.max_concurrent,
            "queue_rejected": pool.rejected,
            "requests": pool.requests,
            "reloads": self.reloads,
            "upstream_connections": self.client.snapshot() if self.client is not None else None,
            "providers": {p.name: p.snapshot() for p in pool.providers},
            "state": self.gate.state_snapshot(),
        }


class PreparedReload:
    """A validated configuration and its pool, waiting to be swapped in (a host's two-phase reload)."""

    def __init__(self, runtime: ProxyRuntime, config: ProxyConfig, pool: Pool) -> None:
        self.runtime = runtime
        self.config = config
        self.pool = pool

    def apply(self) -> dict[str, Any]:
        """Swap the new pool in; what was reloaded, for ``POST /admin/reload``."""
        return self.runtime._swap(self.config, self.pool)

    def discard(self) -> None:
        """Another plugin rejected the reload: the new pool is dropped unused (it holds no connection)."""
