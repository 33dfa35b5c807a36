"""Time, injectable: the one clock object that breakers, provider state and the retry budget read.

Production code uses :data:`SYSTEM` (``time.monotonic``); tests and the simulator pass a
:class:`ManualClock` and move time with :meth:`ManualClock.advance`, so an outage of a
minute runs in milliseconds with the real code. ``monotonic`` is a plain attribute
holding a callable: reading the time costs one attribute lookup and one call, as
``time.monotonic()`` does.

Request deadlines are *not* read from this clock: they bound real I/O waits on the
event loop (``asyncio`` timers), so they stay on real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    """The system's monotonic clock (seconds)."""

    __slots__ = ("monotonic",)

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic: Callable[[], float] = monotonic


class ManualClock(Clock):
    """A clock that moves only when told to (tests, the simulator)."""

    __slots__ = ("now",)

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        super().__init__(self._read)

    def _read(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self.now += seconds


#: the clock of a server that nobody gave another one
SYSTEM = Clock()
