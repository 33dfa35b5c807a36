"""The Redis state store: what several replicas share (counters, reservations, the cache, circuits, health).

Counters (spend, budget periods) live in one Redis hash, ``<prefix>counters``. The
synchronous reads of :class:`~proxy_plugin.state.base.StateStore` are served from a
local mirror that a background task refreshes every :data:`MIRROR_INTERVAL` seconds;
writes go into a batch (counter deltas, and the settle scripts of the gate's shared
holds) that the same task sends every :data:`FLUSH_INTERVAL` seconds in one pipeline. So
settling never delays an answer, and what one replica settles is in Redis within
:data:`FLUSH_INTERVAL` and in the others' mirrors within ``FLUSH_INTERVAL + MIRROR_INTERVAL``.

Every Redis call is bounded by ``redis_timeout`` (``asyncio.timeout`` around the call, and
the client's socket timeouts; no client retries). A call that fails or times out marks
the backend down: it logs once, :attr:`RedisStore.up` turns False (``/health``,
``hulumanage_state_backend_up``), the gate applies ``on_redis_down`` without asking Redis
again, and the background task pings Redis every :data:`PROBE_INTERVAL` seconds; when it
answers, the backend is up again and the batch kept meanwhile (deltas settled locally,
settles of holds made in Redis) is sent. The in-process reservations of requests admitted
locally while Redis was down settle locally only (they were never in Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from proxy_plugin.config.schema import StateConfig
from proxy_plugin.state.base import RedisDown
from proxy_plugin.state.lane import Lane, lane_for
from proxy_plugin.state.memory import BatchedStore

__all__ = ["RedisDown", "RedisStore"]

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.1     # seconds between two batches sent
MIRROR_INTERVAL = 0.25   # seconds between two reads of the shared counters (and of the pollers)
PROBE_INTERVAL = 0.5     # seconds between two pings while Redis is down
POOL_SIZE = 32           # connections per process (a request waits for one within its timeout)


#: A periodic reader run by the store's background task while Redis is up (circuits, health verdicts).
Poller = Callable[[], Awaitable[None]]


class RedisStore(BatchedStore):
    """A :class:`MemoryStore` mirroring counters kept in Redis, plus the bounded client the other shared parts use."""

    def __init__(self, config: StateConfig) -> None:
        super().__init__()
        self.prefix = config.redis_prefix
        self.timeout = config.redis_timeout
        self.policy = config.on_redis_down
        self.replica = uuid.uuid4().hex[:12]   # this process, in lease values and hold ids
        pool = BlockingConnectionPool.from_url(
            config.redis_url, max_connections=POOL_SIZE, timeout=config.redis_timeout,
            socket_timeout=config.redis_timeout, socket_connect_timeout=config.redis_timeout,
            retry=Retry(NoBackoff(), 0))
        self.client = Redis(connection_pool=pool)
        self.lane: Lane | None = lane_for(config.redis_url)  # the admission's round trip (lane.py), or None
        self.up = False
        self.counters_key = self.prefix + "counters"
        self._ops: list[tuple[Any, list[str], list[Any]]] = []  # (script, keys, args) not yet run
        self._pollers: list[Poller] = []
        self._scripts: list[Any] = []
        self._spawned: set[asyncio.Future[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    # -- the bounded call and the up/down state --------------------------------------------

    async def call(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis call within ``redis_timeout``; :class:`RedisDown` (and the backend marked down) if it fails."""
        if not self.up:
            raise RedisDown("the state backend (Redis) is down")
        try:
            async with asyncio.timeout(self.timeout):
                return await make()
        except (TimeoutError, RedisError, OSError) as exc:
            self.went_down(exc)
            raise RedisDown(f"the state backend (Redis) did not answer: {type(exc).__name__}") from exc

    def went_down(self, exc: BaseException) -> None:
        """Mark the backend down and say so once (until it is up again)."""
        if self.lane is not None:
            self.lane.close()  # a call past the timeout: its connection is not trusted again
        if self.up:
            self.up = False
            what = "refusing requests with 503" if self.policy == "closed" else "using per-process state"
            logger.warning("state backend Redis unreachable (%s): %s until it answers again",
                           type(exc).__name__, what)

    def key(self, *parts: str) -> str:
        """A namespaced key: the prefix, then ``parts`` joined by ``:``."""
        return self.prefix + ":".join(parts)

    def register_script(self, lua: str) -> Any:
        """A server-side script, loaded once (``EVALSHA``, reloaded by the client if Redis forgot it)."""
        script = self.client.register_script(lua)
        self._scripts.append(script)
        return script

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` (a bounded call) in the background: a request never waits for it; a failure marks down."""
        task = asyncio.ensure_future(work)
        self._spawned.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Future[Any]) -> None:
        self._spawned.discard(task)
        if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), RedisDown):
            logger.warning("background Redis write failed: %r", task.exception())

    def add_poller(self, poller: Poller) -> None:
        """Run ``poller`` every :data:`MIRROR_INTERVAL` while Redis is up."""
        self._pollers.append(poller)

    # -- StateStore ---------------------------------------------------------------------------

    def queue(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Run ``script`` with the next batch (a shared hold's settle: never awaited by a request)."""
        self._ops.append((script, list(keys), list(args)))

    async def open(self) -> None:
        """Connect (a Redis down at startup is not fatal: ``on_redis_down`` applies until it answers)."""
        self.up = True
        try:
            await self.call(self.client.ping)
            await self._refresh()
        except RedisDown:
            logger.warning("state backend Redis unreachable at startup: %s until it answers",
                           "refusing requests with 503" if self.policy == "closed" else "using per-process state")
        self._task = asyncio.create_task(self._run(), name="hulumanage-redis-state")

    async def _run(self) -> None:
        ticks = 0
        while not self._stop.is_set():
            interval = FLUSH_INTERVAL if self.up else PROBE_INTERVAL
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stop.wait()
            ticks += 1
            try:
                if not self.up:
                    await self._probe()
                    continue
                await self.flush()
                if ticks * FLUSH_INTERVAL >= MIRROR_INTERVAL:
                    ticks = 0
                    await self._refresh()
                    for poller in self._pollers:
                        await poller()
            except RedisDown:
                pass  # marked down and logged once; the probe brings it back
            except Exception:  # a bug in a poller must not stop the batches
                logger.exception("shared state task failed (continuing)")

    async def _probe(self) -> None:
        """Redis is down: ping it (bounded); when it answers, send what was kept and read the shared counters."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.connection_pool.disconnect()  # drop the dead connections: fresh ones only
                await self.client.ping()
        except (TimeoutError, RedisError, OSError):
            return
        self.up = True
        logger.warning("state backend Redis answers again: shared state resumed")
        for script in self._scripts:  # a restarted Redis forgot them: load now, not on a request's budget
            await self.call(partial(self.client.script_load, script.script))
        await self.flush()
        await self._refresh()

    async def _refresh(self) -> None:
        """The mirror := Redis's counters plus what is not sent yet."""
        raw = await self.call(lambda: self.client.hgetall(self.counters_key))
        mirror = {k.decode(): float(v) for k, v in raw.items()}
        for name, delta in self._pending.items():
            mirror[name] = mirror.get(name, 0.0) + delta
        self._counters = mirror

    async def flush(self) -> None:
        """Send the batch (counter deltas and queued settles) in one pipeline; kept for the next try if it fails."""
        if not (self._pending or self._ops) or not self.up:
            return
        pending, self._pending = self._pending, {}
        ops, self._ops = self._ops, []
        pipe = self.client.pipeline(transaction=False)
        for name, delta in pending.items():
            pipe.hincrbyfloat(self.counters_key, name, delta)
        for script, keys, args in ops:
            pipe.scripts.add(script)  # loaded (once) when the pipeline runs
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            await self.call(pipe.execute)
        except RedisDown:
            for name, delta in pending.items():  # not sent: back in the next batch (a pipeline may have half-run;
                self._pending[name] = self._pending.get(name, 0.0) + delta  # see the README: at most one batch)
            self._ops[:0] = ops
            raise

    async def close(self) -> None:
        """Send what is left (bounded), stop the task, close the connections."""
        if self.lane is not None:
            self.lane.close()
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        with contextlib.suppress(RedisDown):
            await self.flush()
        # the client was given its pool, so its own aclose would leave the pool's connections open
        await self.client.aclose(close_connection_pool=True)

    def snapshot(self) -> dict[str, Any]:
        """The state backend for ``/health``."""
        return {"backend": "redis", "up": self.up, "on_redis_down": self.policy,
                "pending_counters": len(self._pending), "pending_settles": len(self._ops)}
