"""The state store interface: counters that only grow, and all-or-nothing reservations against limits.

Every method but ``open``/``flush``/``close`` is synchronous and never waits on disk or
network, so a caller on the event loop can check and reserve with no ``await`` in
between: that is what makes a reservation atomic in one process. A backend shared by
several processes (Redis) makes :meth:`StateStore.reserve` one atomic server-side step.

Names are plain strings chosen by the caller (``spend.py``, ``budgets.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

#: One claim of :meth:`StateStore.reserve`: (counter name, amount, limit the counter plus reservations must stay within)
Claim = tuple[str, float, float]


class RedisDown(Exception):
    """Redis did not answer within ``redis_timeout`` (or is known down): apply ``on_redis_down``.

    Here, not in ``redis.py``, so that what catches it does not import the Redis client: a
    process without ``state.backend: redis`` never loads it.
    """


class StateStore(Protocol):
    """Counters (kept across restarts by a durable backend) and in-flight reservations (never kept)."""

    def add(self, name: str, amount: float) -> None:
        """Add ``amount`` to counter ``name`` (a new counter starts at 0)."""

    def add_many(self, amounts: Iterable[tuple[str, float]]) -> None:
        """:meth:`add` for each ``(name, amount)`` (one call for the dozen counters a request moves)."""

    def get(self, name: str) -> float:
        """Counter ``name`` (0 if it never moved)."""

    def counters(self, prefix: str) -> Mapping[str, float]:
        """Every counter whose name starts with ``prefix``."""

    def reserved(self, name: str) -> float:
        """What is reserved against counter ``name`` and not yet settled."""

    def reserve(self, claims: Sequence[Claim]) -> int | None:
        """Reserve every claim, or none: returns None when all fit, else the index of the first that does not.

        A claim fits when ``get(name) + reserved(name) + amount <= limit``.
        """

    def settle(self, name: str, reserved: float, actual: float) -> None:
        """End a reservation of ``reserved`` against ``name``: the counter grows by ``actual``."""

    async def open(self) -> None:
        """Load what a durable backend kept and start writing in the background."""

    async def flush(self) -> None:
        """Write every counter change so far (a durable backend; a no-op in memory)."""

    async def close(self) -> None:
        """Flush and stop; the store is not used afterwards."""
