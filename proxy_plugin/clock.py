"""Time, injectable: the one clock object that breakers, provider state, the retry budget, rate limits and budgets read.

Production code uses :data:`SYSTEM` (``time.monotonic``, and ``time.time`` for the
calendar: budget periods); tests and the simulator pass a
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
    """The system's monotonic clock (seconds) and its wall clock (``wall()``: Unix time, for calendar periods)."""

    __slots__ = ("monotonic", "wall")

    def __init__(self, monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.monotonic: Callable[[], float] = monotonic
        self.wall: Callable[[], float] = wall


class ManualClock(Clock):
    """A clock that moves only when told to (tests, the simulator).

    Its wall time is ``now + wall_offset``: :meth:`advance` moves both; a test sets the
    calendar with :meth:`set_wall` (e.g. one second before midnight UTC).
    """

    __slots__ = ("now", "wall_offset")

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall - start
        super().__init__(self._read, self._read_wall)

    def _read(self) -> float:
        return self.now

    def _read_wall(self) -> float:
        return self.now + self.wall_offset

    def set_wall(self, unix_time: float) -> None:
        """Make the wall clock read ``unix_time`` now (the monotonic clock does not move)."""
        self.wall_offset = unix_time - self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self.now += seconds


#: the clock of a server that nobody gave another one
SYSTEM = Clock()
