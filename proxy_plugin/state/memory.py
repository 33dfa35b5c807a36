"""The in-memory state store: one process, nothing kept at exit (and the base of the SQLite one)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from proxy_plugin.state.base import Claim


class MemoryStore:
    """Counters and reservations in two dicts; every step is synchronous, so atomic on the event loop."""

    def __init__(self) -> None:
        self._counters: dict[str, float] = {}
        self._reserved: dict[str, float] = {}

    def add(self, name: str, amount: float) -> None:
        """Add ``amount`` to counter ``name``."""
        if amount:
            self._counters[name] = self._counters.get(name, 0.0) + amount

    def add_many(self, amounts: Iterable[tuple[str, float]]) -> None:
        """:meth:`add` for each ``(name, amount)``."""
        counters = self._counters
        for name, amount in amounts:
            if amount:
                counters[name] = counters.get(name, 0.0) + amount

    def get(self, name: str) -> float:
        """Counter ``name`` (0 if it never moved)."""
        return self._counters.get(name, 0.0)

    def counters(self, prefix: str) -> Mapping[str, float]:
        """Every counter whose name starts with ``prefix``."""
        return {name: value for name, value in self._counters.items() if name.startswith(prefix)}

    def reserved(self, name: str) -> float:
        """What is reserved against ``name`` and not yet settled."""
        return self._reserved.get(name, 0.0)

    def reserve(self, claims: Sequence[Claim]) -> int | None:
        """Reserve every claim or none (see :class:`~proxy_plugin.state.base.StateStore`)."""
        counters, reserved = self._counters, self._reserved
        for i, (name, amount, limit) in enumerate(claims):
            if counters.get(name, 0.0) + reserved.get(name, 0.0) + amount > limit:
                return i
        for name, amount, _ in claims:
            reserved[name] = reserved.get(name, 0.0) + amount
        return None

    def settle(self, name: str, reserved: float, actual: float) -> None:
        """End a reservation: release ``reserved``, add ``actual`` to the counter."""
        left = self._reserved.get(name, 0.0) - reserved
        if left > 1e-12:
            self._reserved[name] = left
        else:
            self._reserved.pop(name, None)
        self.add(name, actual)

    async def open(self) -> None:
        """Nothing to load."""

    async def flush(self) -> None:
        """Nothing to write."""

    async def close(self) -> None:
        """Nothing to stop."""


class BatchedStore(MemoryStore):
    """A :class:`MemoryStore` that also keeps the counter changes not yet written to a durable backend.

    The SQLite and Redis stores: reads and reservations are served from memory; what
    :meth:`add` changes waits in ``_pending`` until their background task writes it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, float] = {}  # counter deltas not yet written

    def add(self, name: str, amount: float) -> None:
        """Add to the counter now; the backend gets it with the next batch."""
        if amount:
            self._counters[name] = self._counters.get(name, 0.0) + amount
            self._pending[name] = self._pending.get(name, 0.0) + amount

    def add_many(self, amounts: Iterable[tuple[str, float]]) -> None:
        """:meth:`add` for each ``(name, amount)``."""
        counters, pending = self._counters, self._pending
        for name, amount in amounts:
            if amount:
                counters[name] = counters.get(name, 0.0) + amount
                pending[name] = pending.get(name, 0.0) + amount
