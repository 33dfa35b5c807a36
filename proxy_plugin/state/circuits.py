"""Circuits and health verdicts shared by replicas through Redis: a short poll, not pub/sub.

Every :data:`~proxy_plugin.state.redis.MIRROR_INTERVAL` (0.25 s) each replica, in the
store's background task (never on a request's path):

1. publishes its own circuits that opened (``HSET <prefix>circuits <provider>\\x1f<model>
   "<replica> <wall-clock until>"``), and deletes those it published that have closed;
2. reads that hash: a circuit another replica opened is opened here too until its time
   plus :data:`SLACK` (so the replica that opened it sends the one probe; when the probe
   succeeds it deletes the entry, and the others close theirs at their next poll).

So an opening reaches every replica within two polls and a round trip (about 0.5 s;
under 1 s). A poll rather than pub/sub: a poll needs no second connection, and after
Redis comes back it catches up by itself (a missed message would be lost).

Health checks (:func:`lease`): before probing a provider a replica takes the lease
``<prefix>lease:health:<provider>`` (``SET NX PX interval``); the replica that holds it
probes and publishes the verdict (``HSET <prefix>health``), the others take the verdict
from the poll. Redis down: every replica probes for itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy_plugin.breaker import CLOSED, OPEN
from proxy_plugin.state.base import RedisDown

if TYPE_CHECKING:
    from proxy_plugin.pool import Pool
    from proxy_plugin.state.redis import RedisStore

SEP = "\x1f"
#: seconds a replica waits past another's opening before probing itself (the opener probes first)
SLACK = 1.0


class SharedCircuits:
    """The poller (see the module docstring) of one runtime's current pool."""

    def __init__(self, store: RedisStore, pool: Callable[[], Pool | None]) -> None:
        self.store = store
        self.pool = pool
        self.circuits_key = store.key("circuits")
        self.health_key = store.key("health")
        self._published: dict[str, float] = {}   # field -> the until this replica published
        self._applied: set[str] = set()          # fields opened here because another replica opened them

    async def poll(self) -> None:
        """Publish, then read and apply (one pipeline each way)."""
        pool = self.pool()
        if pool is None:
            return
        store, now, wall = self.store, time.monotonic(), time.time()
        breakers = {f"{p.name}{SEP}{'' if model is None else model}": (p, b)
                    for p in pool.providers for model, b in p.state._breakers.items()}
        pipe = store.client.pipeline(transaction=False)
        for field, (_, breaker) in breakers.items():
            mine = field not in self._applied
            if mine and breaker.state == OPEN and not breaker.until_health_check:
                until = wall + max(0.0, breaker.open_until - now)
                if self._published.get(field) != breaker.open_until:
                    pipe.hset(self.circuits_key, field, f"{store.replica} {until}")
                    self._published[field] = breaker.open_until
            elif mine and breaker.state == CLOSED and field in self._published:
                pipe.hdel(self.circuits_key, field)
                del self._published[field]
        pipe.hgetall(self.circuits_key)
        pipe.hgetall(self.health_key)
        replies = await store.call(pipe.execute)
        shared, verdicts = replies[-2], replies[-1]
        opened = {k.decode(): v.decode().split(" ") for k, v in shared.items()}
        providers = {p.name: p for p in pool.providers}
        for field, (who, until) in opened.items():
            name, _, model = field.partition(SEP)
            provider = providers.get(name)
            if provider is None or who == store.replica or float(until) <= wall or field in self._applied:
                continue
            breaker = provider.state.breaker(model or None)
            if breaker.state == CLOSED:
                breaker.force_open(float(until) - wall + SLACK)
                self._applied.add(field)
        for field in [f for f in self._applied if f not in opened or float(opened[f][1]) <= wall]:
            self._applied.discard(field)
            name, _, model = field.partition(SEP)
            if name in providers:
                providers[name].state.breaker(model or None).force_close()  # the opener's probe succeeded
        for provider in pool.providers:
            verdict = verdicts.get(provider.name.encode())
            if verdict is not None:
                provider.state.healthy = verdict == b"1"

    async def lease(self, provider: str, seconds: float) -> bool:
        """Whether this replica probes ``provider`` this round (it holds the lease, or Redis is down)."""
        store = self.store
        try:
            got = await store.call(lambda: store.client.set(store.key("lease", "health", provider), store.replica,
                                                            nx=True, px=max(1, int(seconds * 1000))))
        except RedisDown:
            return True
        return bool(got)

    def verdict(self, provider: str, healthy: bool) -> None:
        """Publish this replica's verdict on ``provider`` (with the next batch of the store)."""
        store = self.store
        store.spawn(store.call(lambda: store.client.hset(self.health_key, provider, "1" if healthy else "0")))
