"""Read deadlines for the connections aiohttp serves, which its ``RequestHandler`` does not have.

aiohttp serves what the fast path hands over (other routes, HTTP/1.0, query strings) and,
with ``--no-fast-path``, everything. ``Guarded`` sits between the transport and aiohttp's
protocol: it forwards every byte and event unchanged, and follows the requests' framing with
an ``httptools`` parser of its own (no header is looked at) so that the fast path's bounds
hold here too: a request's head must be in within ``REQUEST_READ`` seconds of its first
byte, and its body must not pause longer than that. Past it, the client gets the fast path's
OpenAI-shaped 408 with ``Connection: close`` and the connection closes, unless an answer of
aiohttp's is already going out on it (an earlier pipelined request's, or a handler that
answered without reading the body): then it waits for that, as the fast path does.

It also keeps aiohttp's answers in order when a valid request is followed, in the same read,
by bytes that are no request: aiohttp's parser would drop the valid one with the error, so
the valid part is given to aiohttp first, then the rest (answered 400, then a close).

It is per connection work (one more parser over the bytes), never on the fast path's route.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httptools
import orjson

from hulumanage import aiohttp_compat as compat
from hulumanage.errors import ApiError, error_payload
from hulumanage.fastwire import json_head

if TYPE_CHECKING:
    from hulumanage.fastsite import FastSite

logger = logging.getLogger("hulumanage.fastpath")

REQUEST_READ = 60.0   # seconds for a request's head from its first byte, and between reads of its body
RECHECK = 1.0         # seconds between looks while an earlier answer is going out


def error_response(status: int, message: str, code: str) -> bytes:
    """A whole OpenAI-shaped JSON error response that closes the connection."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    _status, payload, _headers = error_payload(ApiError(status, message, kind, code))
    body = orjson.dumps(payload)
    return json_head(status, {"Content-Type": "application/json"}, len(body), b"Connection: close\r\n") + body


def read_timeout_response() -> bytes:
    """The 408 of a request that did not arrive in time (the fast path's words)."""
    return error_response(408, f"the request did not arrive within {REQUEST_READ:g}s; send it again, whole",
                          "request_timeout")


class _Counter:
    """httptools callbacks that count complete messages (to split bytes before a parse error)."""

    def __init__(self) -> None:
        self.complete = 0

    def on_message_complete(self) -> None:
        self.complete += 1


def complete_prefix(data: bytes, messages: int) -> int:
    """The length of the start of ``data`` holding its first ``messages`` whole requests."""
    def count(size: int) -> int:
        counter = _Counter()
        try:
            httptools.HttpRequestParser(counter).feed_data(data[:size])
        except httptools.HttpParserError:
            pass  # the complete ones before the error were counted
        return counter.complete

    low, high = 0, len(data)  # the smallest prefix that holds ``messages`` requests (a binary search)
    while low < high:
        middle = (low + high) // 2
        if count(middle) >= messages:
            high = middle
        else:
            low = middle + 1
    return low


class Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with read deadlines (see the module docstring).

    ``counted``: the connection already holds a slot of the site's connection cap (handed over
    by the fast path); otherwise it asks for one when it starts and is closed at once without one.
    """

    def __init__(self, site: FastSite, inner: Any, counted: bool = False) -> None:
        self.site = site
        self.inner = inner  # aiohttp's RequestHandler
        self.admitted = counted
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.started: float | None = None  # loop time of a partly read request's first byte
        self.head_done = False
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.completed = 0  # requests completed in the current read

    # -- asyncio.Protocol, forwarded -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.admitted:
            if not self.site.admit():
                transport.close()
                return
            self.admitted = True
        self.transport = transport  # type: ignore[assignment]
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return  # refused: aiohttp never saw it
        self.site.release()
        self.transport = None
        self._disarm()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            self.inner.data_received(data)
            return
        at_boundary = self.started is None
        self.completed = 0
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_watching()  # a WebSocket (or other protocol) now: aiohttp's business
        except httptools.HttpParserError:
            self._stop_watching()
            if self.completed and at_boundary:  # valid requests, then junk: aiohttp would drop them
                split = complete_prefix(data, self.completed)
                self.inner.data_received(data[:split])
                data = data[split:]
        if self.started is not None and self.timer is None and self.parser is not None:
            self.timer = asyncio.get_running_loop().call_at(self.deadline, self._check)
        self.inner.data_received(data)

    # -- httptools callbacks (framing only) ------------------------------------------------

    def on_message_begin(self) -> None:
        self.started = asyncio.get_running_loop().time()
        self.head_done = False
        self.deadline = self.started + REQUEST_READ

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.deadline = asyncio.get_running_loop().time() + REQUEST_READ

    def on_body(self, _body: bytes) -> None:
        self.deadline = asyncio.get_running_loop().time() + REQUEST_READ

    def on_message_complete(self) -> None:
        self.started = None
        self.completed += 1

    # -- the deadline --------------------------------------------------------------------------

    def _check(self) -> None:
        self.timer = None
        transport = self.transport
        if self.started is None or transport is None or transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self.deadline:
            self.timer = loop.call_at(self.deadline, self._check)
            return
        verdict = "wait" if not _reading(transport) else compat.read_stall(self.inner, self.head_done)
        if verdict == "wait":  # aiohttp is answering on this connection (or stopped reading): look again later
            self.timer = loop.call_later(min(RECHECK, REQUEST_READ), self._check)
            return
        self._stop_watching()
        if verdict == "answer":
            transport.write(read_timeout_response())
        transport.close()

    def _stop_watching(self) -> None:
        self.parser = None
        self.started = None
        self._disarm()

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _reading(transport: asyncio.Transport) -> bool:
    """Whether the transport reads (aiohttp pauses it when its buffers are full)."""
    is_reading = getattr(transport, "is_reading", None)
    return True if is_reading is None else bool(is_reading())
