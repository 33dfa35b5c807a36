"""One keep-alive connection to a provider: the asyncio side of the framing.

:class:`Connection` is the ``asyncio.Protocol`` of a connection and, during an exchange,
the response being read. It feeds the bytes it receives into its framing (a subclass of
``framing.ResponseFraming``, so the parser's callbacks cost no extra call) and does what
needs an event loop: wakes the reader waiting for headers or body, pauses reading while
more than ``PAUSE_AT`` body bytes wait for it (back-pressure), enforces the reader's
deadline with a timer armed only when a read actually waits, and closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy_plugin.upstream.framing import ResponseFraming

PAUSE_AT = 256 * 1024             # unread body bytes at which reading from the socket pauses


class Connection(ResponseFraming, asyncio.Protocol):
    """One keep-alive connection; during an exchange it is also the response being read."""

    def __init__(self, origin: tuple[object, ...]) -> None:
        """A connection to ``origin`` (the pool's key), not connected yet."""
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.on_complete: Callable[[Connection], None] | None = None
        self.busy = False         # an exchange is in progress
        self.paused = False       # reading from the socket is paused until the reader catches up
        super().__init__()

    def reset(self) -> None:
        """Ready for the next exchange (reading resumes if it was paused)."""
        if self.paused and self.transport is not None:
            self.transport.resume_reading()
        super().reset()
        self.answered = False     # any byte of a response arrived in this exchange
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None
        #: loop time by which a read that has to wait must get data, else TimeoutError (None: no limit);
        #: a timer is armed only when a read actually waits, so a busy stream costs none
        self.read_deadline: float | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to write to, pause and close."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Feed the framing, then act on what changed: close, pause, wake the reader, report completion."""
        if not self.busy:  # bytes nobody asked for (a 408 before an idle close): not reusable
            self.close()
            return
        self.answered = True
        had_head = self.headers_done
        self.feed(data)
        transport = self.transport
        if self.error is not None:
            if transport is not None:
                transport.close()
        elif self.buffered >= PAUSE_AT and not self.paused and transport is not None:
            self.paused = True
            transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and (self.chunks or self.complete or self.error is not None
                                   or self.headers_done != had_head):
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self.complete and self.on_complete is not None:
            self._report_complete()

    def eof_received(self) -> bool:
        """Close the transport; :meth:`connection_lost` settles the exchange."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The end of a body delimited by it, a response cut short, or no response at all."""
        self.closed = True
        if not self.complete and self.error is None and (self.headers_done or self.busy):
            self.feed_eof()
        self._wake()
        if self.complete and self.on_complete is not None:
            self._report_complete()

    # -- the exchange ----------------------------------------------------------------

    def _report_complete(self) -> None:
        """Tell ``on_complete`` (once) that the response is complete: a parked stream's connection is free."""
        callback, self.on_complete = self.on_complete, None
        if callback is not None:
            callback(self)

    def _wake(self) -> None:
        """Resume the reader waiting in :meth:`_wait`, if any."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        """Until the framing has news for the reader; TimeoutError past ``read_deadline``."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        deadline = self.read_deadline
        timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def wait_headers(self) -> None:
        """Until the status line and headers are in (or the exchange failed)."""
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def readany(self) -> bytes:
        """The body bytes that arrived since the last call; ``b""`` once the body is complete."""
        while True:
            chunks = self.chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, or its first ``limit`` bytes (the rest is left unread)."""
        parts = []
        size = 0
        while limit is None or size < limit:
            data = await self.readany()
            if not data:
                break
            parts.append(data)
            size += len(data)
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return body if limit is None else body[:limit]

    def close(self) -> None:
        """Drop the connection (an exchange cut short leaves it in an unknown state)."""
        self.closed = True
        self.keep_alive = False
        self.on_complete = None
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    """A waiting read's deadline passed: it raises TimeoutError."""
    if not waiter.done():
        waiter.set_exception(TimeoutError())
