"""A virtual-time asyncio event loop: when nothing is ready, time jumps to the next timer.

``loop.time()`` reads a :class:`~proxy_plugin.clock.ManualClock`, and where a real loop
would block in ``select(timeout)`` this one advances the clock by ``timeout`` instead. So
``asyncio.sleep``, ``asyncio.timeout`` and every timer of the real code (retry backoff,
slot and queue waits) run in virtual time, in order, as fast as the CPU goes. The loop has
no selector over file descriptors: anything waiting on I/O would wait for ever, and is
reported as a deadlock instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from proxy_plugin.clock import ManualClock

T = TypeVar("T")


class _Jump:
    """Stands where the loop's selector would be: "waiting" ``timeout`` moves the clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("virtual loop deadlock: tasks wait and no timer is set")
        if timeout > 0:
            self.clock.advance(timeout)
        return []

    def close(self) -> None:
        """Nothing to close."""


class VirtualLoop(asyncio.BaseEventLoop):
    """An event loop whose time is ``clock`` and which never blocks."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self._vclock = clock
        self._selector = _Jump(clock)

    def time(self) -> float:
        """The virtual time."""
        return self._vclock.now

    def _process_events(self, event_list: list[Any]) -> None:
        """No I/O events exist here."""

    def _write_to_self(self) -> None:
        """Nothing to wake: the loop never blocks."""


def run(coro: Coroutine[Any, Any, T], clock: ManualClock) -> T:
    """Run ``coro`` to completion on a fresh :class:`VirtualLoop` over ``clock``."""
    loop = VirtualLoop(clock)
    try:
        asyncio.set_event_loop(loop)
        result = loop.run_until_complete(coro)
        loop.run_until_complete(loop.shutdown_asyncgens())
        return result
    finally:
        asyncio.set_event_loop(None)
        loop.close()
