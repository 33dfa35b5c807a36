"""The fast path: a lean HTTP/1.1 server for ``POST /v1/chat/completions``, aiohttp for the rest.

This module is the connection (``FastConnection``: an asyncio protocol and its HTTP/1.1
rules); ``fastsite.py`` is the listening site that starts connections here, and
``aiohttp_compat.py`` holds every aiohttp internal the two use (the hand-over, the stop).

Every new request on a connection is looked at before anything is parsed: when it is the
one hot route (``POST /v1/chat/completions`` or ``POST /chat/completions``, HTTP/1.1, no
query string) this module answers it with an ``httptools`` parser and prebuilt response
heads: no request, response, router or header objects, and the response head goes out in
the same write as the first bytes of the body. Anything else (another path or method,
HTTP/1.0, a WebSocket upgrade) hands the connection, with the bytes read so far, to the
aiohttp application, which then keeps it. Both share one function for the request's
meaning (:func:`hulumanage.api.chat_reply`), so the answers are the same.

The fast path turns itself off when the application could observe the difference: a
middleware or an ``on_response_prepare`` signal (a plugin cannot route the hot paths
elsewhere: aiohttp refuses a second POST route on a path). ``--no-fast-path`` turns it
off by hand. On Python 3.12+ a request's task starts eagerly, in the loop turn that read it.

HTTP/1.1 as served here: keep-alive (idle connections closed after ``KEEPALIVE`` seconds),
``Connection: close``, ``Expect: 100-continue``, Content-Length and chunked request bodies
up to ``MAX_BODY`` (64 MiB, the aiohttp app's ``client_max_size`` too; 413 beyond), request heads up to ``MAX_HEAD``
bytes (431 beyond), a request read too slowly answered 408 and closed (its head not in within
``REQUEST_READ`` seconds of its first byte, or its body pausing longer: a client that stalls
mid-request cannot hold a connection), malformed requests answered 400 and closed, pipelined requests answered
in order (one that is not the hot route, arriving in the same packet as the one before it,
closes the connection after the answers before it: RFC 9112 9.3.2 lets a server do that, and
a pipelining client retries on a new connection). A client that goes away cancels its
request (the upstream stream is closed at once), as ``handler_cancellation`` does on aiohttp.

What it saves against aiohttp (CPU per request, time to first byte) is measured in
``bench/README.md``; figures are kept there, not here, so they cannot go stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import deque
from typing import TYPE_CHECKING

import httptools
from aiohttp import web

from hulumanage import api
from hulumanage.aiohttp_compat import hand_over
from hulumanage.app import MAX_BODY
from hulumanage.fastguard import Guarded, error_response
from hulumanage.fastwire import CONTINUE, HOT_URLS, SSE_HEAD, ParsedRequest, date, header_lines, is_hot_route, json_head
from hulumanage.results import sse_writes

if TYPE_CHECKING:
    from hulumanage.fastsite import FastSite

logger = logging.getLogger(__name__)

KEEPALIVE = 75.0              # seconds an idle keep-alive connection stays open (aiohttp's default)
REQUEST_READ = 60.0           # seconds for a request's head from its first byte, and between reads of its body
MAX_HEAD = 64 * 1024          # bytes of request line and headers
EAGER = sys.version_info >= (3, 12)  # asyncio.Task(eager_start=True)
PAUSE_AT = 4                  # pipelined requests waiting before reading pauses


class FastConnection(asyncio.Protocol):
    """One client connection served on the fast path until it is handed to aiohttp."""

    def __init__(self, site: FastSite) -> None:
        self.site = site
        self.app: web.Application = site.runner.app  # type: ignore[attr-defined]
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.sniffed = b""                      # the start of a request not yet known to be the hot route
        self.current: ParsedRequest | None = None    # the request being parsed
        self.ready: deque[ParsedRequest] = deque()   # parsed, waiting for the one in flight
        self.task: asyncio.Task[None] | None = None
        self.head_size = 0
        self.closing = False
        self.paused_reading = False
        self.drain: asyncio.Future[None] | None = None
        self.write_paused = False
        self.idle_timer: asyncio.TimerHandle | None = None  # keep-alive idle, or a request read too slowly
        self.read_started: float | None = None  # loop time of a partly read request's first byte
        self.failure: tuple[int, str, str] | None = None  # an error to answer once the answers before it are out
        self.sent = 0                           # of the answer in flight: 0 nothing, 1 a stream's start, 2 all
        self.admitted = False                   # holds a slot of the site's connection cap
        self.client_ip = ""                     # the peer's address, for the request gate and the access log

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.site.admit():  # past --max-connections: closed at once, without a byte
            transport.close()
            return
        self.admitted = True
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.site.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.site.release()
        self.site.connections.discard(self)
        self.transport = None
        self._disarm_idle()
        self.ready.clear()
        if self.task is not None:
            self.task.cancel()  # the client went away: stop its request (closes the upstream stream)
        if self.drain is not None and not self.drain.done():
            self.drain.set_exception(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._disarm_idle()
        if self.current is None and self.task is None and not self.ready:
            # between requests: is the next one the hot route? (decided on its first bytes)
            data = self.sniffed + data if self.sniffed else data
            self.sniffed = b""
            hot = is_hot_route(data)
            if hot is None:
                self.sniffed = data  # could still be the hot route's request line: wait for more
                self._arm_read()
                return
            if not hot:
                self._hand_over(data)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # answer what came before it, then refuse it and close
            self._fail(400, "protocol upgrades are not served on this route")
        except httptools.HttpParserCallbackError:
            pass  # the callback already answered and is closing the connection
        except httptools.HttpParserError:
            self._fail(400, "malformed HTTP request")
        if self.task is None and self.ready:  # started here, not inside the parser's callback
            self._start(self.ready.popleft())
        if self.current is not None and self.task is None and not self.ready and not self.closing:
            self._arm_read()  # waiting on the client (not while answers go out: reading may be paused)

    def _arm_read(self) -> None:
        """A request is partly read: its head must be in ``REQUEST_READ`` after its first byte,
        and its body must not pause longer than that (then 408 and a close, as nginx does)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        current = self.current
        if self.read_started is None:
            self.read_started = now
        head_pending = current is None or not current.head_done
        deadline = self.read_started + REQUEST_READ if head_pending else now + REQUEST_READ
        self.idle_timer = loop.call_at(deadline, self._read_timed_out)

    def _read_timed_out(self) -> None:
        self.idle_timer = None
        self._fail(408, f"the request did not arrive within {REQUEST_READ:g}s; send it again, whole", "request_timeout")

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = ParsedRequest(self.client_ip)
        self.head_size = 0

    def on_url(self, url: bytes) -> None:  # may come in pieces
        self._count_head(len(url))
        current = self.current
        assert current is not None
        current.path += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        lower = name.lower()
        current = self.current
        assert current is not None
        if lower == b"authorization":
            current.authorization = value.decode("latin-1")
        elif lower == b"content-type":
            current.content_type = value.decode("latin-1")
        elif lower == b"origin":
            current.origin = value.decode("latin-1")
        elif lower == b"x-request-id":
            current.request_id = value.decode("latin-1")
        elif lower == b"cache-control":
            current.cache_control = value.decode("latin-1")
        elif lower == b"content-length":
            if value.strip().isdigit() and int(value) > MAX_BODY:
                self._too_large()
        elif (lower == b"expect" and value.strip().lower() == b"100-continue"
              and self.transport is not None and self.task is None and not self.ready):  # never inside another answer
            self.transport.write(CONTINUE)

    def on_headers_complete(self) -> None:
        current = self.current
        assert current is not None
        current.head_done = True
        if current.path not in HOT_URLS or self.parser.get_method() != b"POST" or self.parser.get_http_version() != "1.1":
            # pipelined behind a hot request in the same packet: its bytes cannot be handed over
            current.refused = True

    def on_body(self, body: bytes) -> None:
        current = self.current
        assert current is not None
        current.size += len(body)
        if current.size > MAX_BODY:
            self._too_large()
        current.body.append(body)

    def on_message_complete(self) -> None:
        current = self.current
        assert current is not None
        self.current = None
        self.read_started = None
        current.keep_alive = self.parser.should_keep_alive()
        self.ready.append(current)
        if len(self.ready) >= PAUSE_AT and not self.paused_reading and self.transport is not None:
            self.paused_reading = True
            self.transport.pause_reading()

    # -- serving ---------------------------------------------------------------------

    def _start(self, request: ParsedRequest) -> None:
        if request.refused:
            self.closing = True
            self._close()
            return
        self.sent = 0
        if EAGER:  # runs up to its first real wait now (the upstream's answer), not a loop turn later
            # eager_start is 3.12+ (EAGER is False before): 3.11's typeshed does not know it
            task = asyncio.Task(self._serve(request), loop=asyncio.get_running_loop(),
                                eager_start=True)  # type: ignore[call-arg,unused-ignore]
        else:
            task = asyncio.get_running_loop().create_task(self._serve(request))
        self.task = task
        self.site.tasks.add(task)
        task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        self.site.tasks.discard(task)
        self.task = None
        if not task.cancelled() and task.exception() is not None:
            logger.error("the fast path failed a request", exc_info=task.exception())
            self._close()
            return
        if self.transport is None:
            return
        if self.ready:
            if self.paused_reading:
                self.paused_reading = False
                self.transport.resume_reading()
            self._start(self.ready.popleft())
        elif self.closing:
            self._finish()
        elif self.current is not None:  # the next request is partly read
            self._arm_read()
        else:
            self._arm_idle()

    async def _serve(self, request: ParsedRequest) -> None:
        raw = b"".join(request.body) if len(request.body) != 1 else request.body[0]
        reply = await api.chat_reply(self.app, raw, request)
        if not request.keep_alive:
            self.closing = True
        close = b"Connection: close\r\n" if self.closing else b""
        try:
            if isinstance(reply, api.Streamed):
                status = 200
                await self._stream(reply, close)
            else:
                status, body, headers = reply
                self._write(json_head(status, headers, len(body), close) + body)
        except ConnectionResetError:
            logger.info("client went away before its answer was written")
            return
        access = self.site.access_log
        if access is not None and access.isEnabledFor(logging.INFO):
            peer = self.transport.get_extra_info("peername") if self.transport is not None else None
            access.info('%s "POST %s HTTP/1.1" %d (fast path)', peer[0] if peer else "-", request.path.decode(), status)

    async def _stream(self, reply: api.Streamed, close: bytes) -> None:
        """Relay the stream: one write per event (``results.sse_writes``), the head with the first."""
        head = SSE_HEAD + header_lines(reply.headers) + close + date() + b"\r\n"
        try:
            async with contextlib.aclosing(sse_writes(reply.first, reply.rest)) as writes:
                async for part, last in writes:
                    chunk = b"%x\r\n%b\r\n" % (len(part), part) if part else b""
                    if last:
                        self.sent = 2
                        self._write(head + chunk + b"0\r\n\r\n")
                        break
                    self._write(head + chunk)
                    head = b""
                    self.sent = 1
                    if self.write_paused:
                        await self._drained()
        finally:
            await api.close_stream(reply.rest)

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)

    async def _drained(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        self.drain = asyncio.get_running_loop().create_future()
        try:
            await self.drain
        finally:
            self.drain = None

    # -- connection management ---------------------------------------------------------

    def _hand_over(self, data: bytes) -> None:
        """Give this connection to aiohttp, starting with ``data`` (its next request's first bytes)."""
        transport = self.transport
        self.site.connections.discard(self)
        self.transport = None
        if transport is None or transport.is_closing():
            return
        hand_over(self.site.runner, transport, data, lambda inner: Guarded(self.site, inner, counted=True))

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > MAX_HEAD:
            self._fail(431, f"request line and headers larger than {MAX_HEAD // 1024} KiB")
            raise ValueError("head too large")  # stops the parser (HttpParserCallbackError)

    def _too_large(self) -> None:
        limit = MAX_BODY
        self._fail(413, f"request body larger than {limit // (1024 * 1024)} MiB", "request_too_large")
        raise ValueError("body too large")

    def _fail(self, status: int, message: str, code: str = "invalid_request") -> None:
        """Answer a request that cannot be served with an OpenAI-shaped error (after the answers
        to the requests read before it: in order), then close."""
        self.closing = True
        self.current = None
        self.failure = self.failure or (status, message, code)
        if self.task is None and not self.ready:  # else after the answers still to go out
            self._finish()

    def _finish(self) -> None:
        """The connection is closing and its answers are out: the pending error, if any, then close."""
        transport = self.transport
        if self.failure is not None and transport is not None and not transport.is_closing():
            transport.write(error_response(*self.failure))
        self._close()

    def interrupt(self, answer: bytes, event: bytes) -> None:
        """The stop's grace is over: a whole ``answer`` (503), or the SSE ``event`` ending a stream; cancel."""
        self.closing = True
        self.ready.clear()
        transport = self.transport
        if self.task is not None and transport is not None and not transport.is_closing():
            if self.sent < 2:  # a stream's last chunk, or a whole 503
                transport.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(event), event) if self.sent else answer)
            self.task.cancel()  # _served closes the connection

    def close_when_idle(self) -> None:
        """Shutdown: close now when idle, else after the request in flight."""
        self.closing = True
        if self.task is None:
            self._close()

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _close(self) -> None:
        self._disarm_idle()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _arm_idle(self) -> None:
        self.idle_timer = asyncio.get_running_loop().call_later(KEEPALIVE, self._close)

    def _disarm_idle(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None


