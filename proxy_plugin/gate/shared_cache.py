"""The response cache shared by replicas: entries in Redis, a small local LRU in front.

A lookup asks the local LRU first (no network), then Redis (``GET`` and ``PTTL`` in one
pipeline, bounded by ``redis_timeout``); an entry found there is kept locally for what is
left of its time to live. A store writes locally at once and sends ``SET ... PX`` to
Redis as a background task (the answer never waits for it), so an entry filled through
one replica is a hit at any other within a round trip. Redis down: the cache is this
process's own until it answers (``on_redis_down`` does not refuse for the cache).

A stored value is ``<usd>\\n<chat.completion JSON>``, under ``<prefix>cache:<key>``.
``clear`` empties the local LRU and deletes this deployment's keys in Redis (``SCAN``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from proxy_plugin.clock import Clock
from proxy_plugin.gate.store import Entry, MemoryStore
from proxy_plugin.state.redis import RedisDown, RedisStore

logger = logging.getLogger(__name__)


class SharedCache:
    """A :class:`~proxy_plugin.gate.store.Store` on Redis with a local LRU in front; plus ``fetch``."""

    def __init__(self, redis: RedisStore, clock: Clock, max_entries: int = 1000) -> None:
        self.redis = redis
        self.local = MemoryStore(clock, max_entries)
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def max_entries(self) -> int:
        """The local LRU's bound (the gate sets it from the config before each put)."""
        return self.local.max_entries

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        self.local.max_entries = value

    def get(self, key: str) -> Entry | None:
        """The local entry, if any (Redis is asked by :meth:`fetch`)."""
        return self.local.get(key)

    async def fetch(self, key: str) -> Entry | None:
        """The entry in Redis (kept locally for the rest of its time to live), or None (absent, or Redis down)."""
        redis = self.redis
        if not redis.up:
            return None
        name = redis.key("cache", key)

        async def read() -> Any:
            pipe = redis.client.pipeline(transaction=False)
            pipe.get(name)
            pipe.pttl(name)
            return await pipe.execute()

        try:
            raw, ttl_ms = await redis.call(read)
        except RedisDown:
            return None
        if raw is None or ttl_ms is None or ttl_ms <= 0:
            return None
        head, _, body = bytes(raw).partition(b"\n")
        try:
            entry = Entry(body, orjson.loads(body), float(head))
        except (ValueError, orjson.JSONDecodeError):
            return None
        self.local.put(key, entry, ttl_ms / 1000)
        return entry

    def put(self, key: str, entry: Entry, ttl: float) -> None:
        """Store locally now, in Redis in the background."""
        self.local.put(key, entry, ttl)
        redis = self.redis
        if redis.up:
            value = repr(entry.usd).encode() + b"\n" + entry.body
            name = redis.key("cache", key)
            self._spawn(redis.call(lambda: redis.client.set(name, value, px=max(1, int(ttl * 1000)))))

    def clear(self) -> int:
        """Drop the local entries now and this deployment's entries in Redis in the background."""
        count = self.local.clear()
        if self.redis.up:
            self._spawn(self._clear_shared())
        return count

    async def _clear_shared(self) -> None:
        redis = self.redis
        names = [name async for name in redis.client.scan_iter(match=redis.key("cache", "*"), count=500)]
        if names:
            await redis.call(lambda: redis.client.delete(*names))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and isinstance(task.exception(), RedisDown):
            return  # marked down and logged once by the store
        if not task.cancelled() and task.exception() is not None:
            logger.warning("shared cache write failed: %s", task.exception())

    def __len__(self) -> int:
        return len(self.local)
