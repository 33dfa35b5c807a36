"""A lean keep-alive HTTP/1.1 client for the hot path: chat completion POSTs to providers.

aiohttp's client is general-purpose (cookie jars, redirects, multipart, tracing, a
``ClientRequest`` and ``ClientResponse`` per call); measured sequentially against the
benchmark upstream it spends about 220 µs of CPU on one small POST, this client about
60 µs, with the same C-speed parsing (``httptools``, llhttp). The request head is built
once per provider; a request is one ``write`` of head + body; the response is parsed as
it arrives and its body handed over chunk by chunk, never copied into a stream object.

What it does: keep-alive connections per origin (idle ones closed after ``keepalive``
seconds, or as soon as the server closes them), TLS with the system's trust store,
``Content-Length``, chunked and read-until-close bodies, ``gzip``/``deflate`` bodies
(``identity`` is asked for), read back-pressure (reading pauses while a large body
waits for its reader), an egress HTTP proxy from ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
``NO_PROXY`` (``CONNECT`` tunnels for https providers, absolute-form requests for http
ones; loopback hosts never go through it). What it leaves to the caller: timeouts beyond
the connect timeout (the pool's deadlines wrap every call) and retries (the pool decides
those). Health checks and everything else off the hot path stay on aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import errno
import ipaddress
import socket
import ssl
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urlsplit

import aiohappyeyeballs
import httptools

MAX_BODY = 64 * 1024 * 1024       # a larger answer is refused, not buffered
PAUSE_AT = 256 * 1024             # unread body bytes at which reading from the socket pauses
PARK_SECONDS = 5.0                # a finished stream may take this long to send its last bytes
USER_AGENT = "hulumanage-proxy"


class UpstreamError(Exception):
    """A transport failure while talking to a provider."""

    #: a short, secret-free description for errors and ``/health``
    what = "upstream transport error"
    #: whether it says the provider as a whole is unreachable (not one model)
    connection_level = False

    def __init__(self, what: str | None = None) -> None:
        """``what``, when given, replaces the class's description and is the message too."""
        if what is None:
            super().__init__()
        else:
            super().__init__(what)
            self.what = what


class ConnectFailedError(UpstreamError):
    """No connection could be opened."""

    connection_level = True


class DisconnectedError(UpstreamError):
    """The server closed the connection before any response."""

    what = "server disconnected"
    connection_level = True


class ResponseCutError(UpstreamError):
    """The connection ended in the middle of a response."""

    what = "response cut short"


class BadHTTPError(UpstreamError):
    """The server's bytes are not a valid HTTP/1.1 response, or one this client refuses."""


@dataclasses.dataclass(frozen=True, slots=True)
class EgressProxy:
    """The HTTP proxy requests to a provider go through (from the environment)."""

    host: str
    port: int
    url: str = dataclasses.field(repr=False)                  # credentials included: aiohttp's ``proxy=``
    authorization: str | None = dataclasses.field(default=None, repr=False)  # ``Proxy-Authorization`` value

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"  # never the credentials


def egress_proxy(url: str, environ: Mapping[str, str]) -> EgressProxy | None:
    """The proxy for ``url`` per ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` in ``environ`` (None: direct).

    The lower-case name wins, as in curl and urllib. Loopback hosts are always reached
    directly (a local provider or the demo's simulated ones behind a corporate proxy
    setting). Only ``http://`` proxies are supported: anything else is a ``ValueError``
    naming the variable, never its value (it may hold credentials).
    """
    target = urlsplit(url)
    host = (target.hostname or "").lower()
    names = ("https_proxy", "HTTPS_PROXY") if target.scheme.lower() == "https" else ("http_proxy", "HTTP_PROXY")
    variable = next((name for name in names if environ.get(name, "").strip()), None)
    if variable is None or _loopback(host):
        return None
    target_port = target.port or (443 if target.scheme.lower() == "https" else 80)
    if _bypassed(host, target_port, environ.get("no_proxy") or environ.get("NO_PROXY") or ""):
        return None
    value = environ[variable].strip()
    if "://" not in value:
        value = f"http://{value}"
    parts = urlsplit(value)
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme.lower() != "http":
        raise ValueError(f"{variable}: only http:// proxies are supported, got a {parts.scheme.lower()}:// one")
    if not parts.hostname or not port:
        raise ValueError(f"{variable}: not a usable proxy URL (expected http://[user:password@]host[:port])")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return EgressProxy(parts.hostname, port, value, authorization)


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` names the host: ``*``, a domain and its subdomains (with or without a
    leading dot), an IP address or network (``10.0.0.0/8``), each optionally with ``:port``."""
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        name, _, wanted = entry.rpartition(":") if entry.count(":") == 1 or "]:" in entry else (entry, "", "")
        if wanted and (not wanted.isdigit() or int(wanted) != port):
            continue
        name = name.strip("[]").lstrip("*").lstrip(".")
        if not name:
            continue
        if host == name or host.endswith("." + name):
            return True
        try:
            if ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(name, strict=False):
                return True
        except ValueError:
            pass
    return False


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """One provider URL with its request head built once (up to ``Content-Length:``)."""

    origin: tuple[object, ...]        # the connection pool's key: scheme, host, port, proxy
    host: str
    port: int
    ssl: ssl.SSLContext | None
    head: bytes
    proxy: EgressProxy | None = None


class Connection(asyncio.Protocol):
    """One keep-alive connection; during an exchange it is also the response being read."""

    def __init__(self, origin: tuple[object, ...]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.on_complete: Callable[[Connection], None] | None = None
        self.busy = False         # an exchange is in progress
        self._paused = False
        self._reset()

    def _reset(self) -> None:
        if self._paused and self.transport is not None:
            self.transport.resume_reading()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.error: UpstreamError | None = None
        self.answered = False     # any byte of a response arrived in this exchange
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._body_size = 0
        self._paused = False
        self._until_close = False
        self._decoder: zlib._Decompress | None = None  # type: ignore[name-defined]
        self._waiter: asyncio.Future[None] | None = None
        #: loop time by which a read that has to wait must get data, else TimeoutError (None: no limit);
        #: a timer is armed only when a read actually waits, so a busy stream costs none
        self.read_deadline: float | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for (a 408 before an idle close): not reusable
            self.close()
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadHTTPError("the provider switched protocols"))
        except httptools.HttpParserError as exc:
            if self.error is None:
                reason = str(exc)[:80]  # llhttp's fixed reason ("Expected HTTP/"), never response bytes
                self._fail(BadHTTPError(f"malformed HTTP response ({reason})" if reason else "malformed HTTP response"))
        if self.error is not None and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self.error is not None:
            self._wake()
            return
        if self.headers_done and self._until_close:
            self._finish()  # a body delimited by the end of the connection
        elif self.headers_done:
            self._fail(ResponseCutError())
        elif self.busy:
            self._fail(DisconnectedError())

    # -- httptools callbacks -------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.headers = {}
            return  # an interim response: the real one follows
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        headers = self.headers
        self._until_close = "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            self._fail(BadHTTPError(f"unsupported content-encoding {encoding!r}"))
            return
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if not self.headers_done or self.error is not None:
            return
        if self._decoder is not None:
            try:  # at most one byte past the limit: a small compressed body never expands in memory
                body = self._decoder.decompress(body, MAX_BODY - self._body_size + 1)
            except zlib.error:
                self._fail(BadHTTPError("the response body does not decompress"))
                return
            if not body:
                return
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            self._fail(BadHTTPError(f"response body larger than {MAX_BODY // (1024 * 1024)} MB"))
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done or self.error is not None:
            return  # the end of an interim response, or of one already refused
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._chunks.append(rest)
        self._finish()

    # -- the exchange ----------------------------------------------------------------

    def _finish(self) -> None:
        self.complete = True
        self._wake()
        if self.on_complete is not None:
            callback, self.on_complete = self.on_complete, None
            callback(self)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
            self.keep_alive = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
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
            chunks = self._chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
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


def _connect_error(exc: BaseException, timeout: float | None) -> ConnectFailedError | None:
    """What a failed connection attempt means, without the addresses or the OS's words (None: not ours)."""
    if isinstance(exc, TimeoutError):
        return ConnectFailedError(f"connect timeout ({timeout:g}s)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectFailedError(f"TLS certificate not trusted ({exc.verify_message})")
    if isinstance(exc, ssl.SSLError):
        return ConnectFailedError("TLS handshake failed")
    if isinstance(exc, ConnectionRefusedError) or (isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED):
        return ConnectFailedError("connection refused")
    if isinstance(exc, socket.gaierror):
        return ConnectFailedError("cannot resolve the provider's host name")
    if isinstance(exc, OSError):
        return ConnectFailedError(f"cannot connect ({type(exc).__name__})")
    return None  # cancellation and the rest: as they are


async def _tunnel(loop: asyncio.AbstractEventLoop, sock: socket.socket, endpoint: Endpoint, proxy: EgressProxy) -> None:
    """Ask the egress proxy for a tunnel to the provider (``CONNECT``); TLS then runs inside it."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    authority = f"{host}:{endpoint.port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}", f"User-Agent: {USER_AGENT}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    reply = b""
    while b"\r\n\r\n" not in reply and len(reply) <= 16 * 1024:
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise ConnectFailedError(f"the egress proxy {proxy} closed the connection instead of opening a tunnel")
        reply += data
    head, ended, rest = reply.partition(b"\r\n\r\n")
    version, _, status_reason = head.split(b"\r\n", 1)[0].partition(b" ")
    status, _, reason = status_reason.partition(b" ")
    if not ended or rest or not version.startswith(b"HTTP/1.") or not status.isdigit():
        raise ConnectFailedError(f"the egress proxy {proxy} did not answer CONNECT with HTTP")
    if not 200 <= int(status) < 300:
        said = "".join(c for c in reason[:60].decode("latin-1") if c.isprintable())
        raise ConnectFailedError(f"the egress proxy {proxy} refused the tunnel ({' '.join(filter(None, (status.decode(), said)))})")


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamClient:
    """Keep-alive connections to every provider origin, for POSTs on the hot path."""

    def __init__(
        self, keepalive: float = 30.0, ssl_context: ssl.SSLContext | None = None, environ: Mapping[str, str] | None = None,
    ) -> None:
        self.keepalive = keepalive
        self._ssl = ssl_context
        self._environ = environ if environ is not None else {}
        self._idle: dict[tuple[object, ...], list[Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._parked: set[Connection] = set()
        self.opened = 0   # connections opened in all (reuse shows as requests >> opened)
        self.stale = 0    # requests sent again because a kept-alive connection closed under them

    def endpoint(self, url: str, headers: Mapping[str, str]) -> Endpoint:
        """The endpoint for POSTs to ``url`` with ``headers`` (sent on every request).

        ValueError: ``url`` is not an http(s) URL, or the proxy setting for it is unusable.
        """
        proxy = egress_proxy(url, self._environ)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        authority = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            authority += f":{port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if proxy is not None and scheme == "http":
            target = f"http://{authority}{target}"  # absolute form: the proxy forwards it
        lines = [f"POST {target} HTTP/1.1", f"Host: {authority}"]
        if proxy is not None and scheme == "http" and proxy.authorization is not None:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        given = {name.lower() for name in headers}
        if "user-agent" not in given:
            lines.append(f"User-Agent: {USER_AGENT}")
        if "accept-encoding" not in given:
            lines.append("Accept-Encoding: identity")
        for name, value in headers.items():
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection", "proxy-authorization"):
                continue
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        tls = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        origin = (scheme, host, port) if proxy is None else (scheme, host, port, proxy.host, proxy.port)
        return Endpoint(origin, host, port, tls, head, proxy)

    async def send(
        self, endpoint: Endpoint, payload: bytes, connect_timeout: float | None, deadline: float | None = None,
    ) -> Connection:
        """POST ``payload``; returns once the response headers are in.

        ``deadline`` (the loop's clock, None: none) bounds the whole exchange up to the
        headers, connecting included, and stays the connection's ``read_deadline`` for
        the body until the caller moves it; passing it raises ``TimeoutError``. It takes
        the place of an ``asyncio.timeout()`` around the call: no task cancellation, and a
        timer only while a read actually waits.

        The caller reads the body from the returned connection and hands it back with
        :meth:`release` (or :meth:`release_streamed`), whatever happened.

        A kept-alive connection that the provider closes without a byte of answer was
        most likely closed for idleness as the request went out (a race every keep-alive
        client meets): the request is sent once more on a new connection, so that race is
        neither an error for the client nor a failure charged to the provider.
        """
        conn = self._take_idle(endpoint.origin)
        if conn is not None:
            conn._reset()
            conn.read_deadline = deadline
            try:
                return await self._exchange(conn, endpoint, payload)
            except DisconnectedError:
                if conn.answered:
                    raise
                self.stale += 1
        conn = await self._connect(endpoint, connect_timeout, deadline)
        conn.read_deadline = deadline
        return await self._exchange(conn, endpoint, payload)

    @staticmethod
    async def _exchange(conn: Connection, endpoint: Endpoint, payload: bytes) -> Connection:
        conn.busy = True
        assert conn.transport is not None
        conn.transport.write(endpoint.head + b"%d\r\n\r\n" % len(payload) + payload)
        try:
            await conn.wait_headers()
        except BaseException:
            conn.close()
            raise
        return conn

    def release(self, conn: Connection) -> None:
        """Hand a connection back: kept for the next request when its response was read whole."""
        conn.busy = False
        if conn.complete and self._reusable(conn):
            self._keep(conn)
        else:
            conn.close()

    def release_streamed(self, conn: Connection) -> None:
        """Hand back a stream whose answer is complete (``[DONE]`` relayed).

        Its last bytes (the chunked terminator) may still be on their way: the connection
        waits up to ``PARK_SECONDS`` for them, then is reused, or closed if they never come.
        """
        if conn.complete or not self._reusable(conn):
            self.release(conn)
            return
        self._parked.add(conn)
        timer = asyncio.get_running_loop().call_later(PARK_SECONDS, self._unpark, conn)

        def completed(done: Connection) -> None:
            timer.cancel()
            self._unpark(done)

        conn.on_complete = completed

    async def close(self) -> None:
        """Close every idle and parked connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        for conn in list(self._parked):
            conn.close()
        self._parked.clear()

    @property
    def idle(self) -> int:
        """Open connections waiting for a request."""
        return sum(len(c) for c in self._idle.values())

    def snapshot(self) -> dict[str, int]:
        """Connection reuse at a glance, for ``/health``."""
        return {"opened": self.opened, "idle": self.idle, "resent_after_idle_close": self.stale}

    # -- internals -------------------------------------------------------------------

    def _take_idle(self, origin: tuple[object, ...]) -> Connection | None:
        conns = self._idle.get(origin)
        if not conns:
            return None
        loop_time = asyncio.get_running_loop().time()
        while conns:
            conn = conns.pop()  # the most recently used: the warmest
            if not conn.closed and loop_time - conn.idle_since < self.keepalive:
                return conn
            conn.close()
        return None

    async def _connect(self, endpoint: Endpoint, timeout: float | None, deadline: float | None) -> Connection:
        loop = asyncio.get_running_loop()
        origin = endpoint.origin
        sock: socket.socket | None = None
        limit = timeout
        if deadline is not None:
            left = max(0.0, deadline - loop.time())
            if limit is None or left < limit:
                limit = left
        proxy = endpoint.proxy
        host, port = (endpoint.host, endpoint.port) if proxy is None else (proxy.host, proxy.port)
        try:
            async with asyncio.timeout(limit):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                # every address, IPv6 and IPv4 interleaved, a new attempt every 250 ms (RFC 8305):
                # a host whose first address does not answer still connects promptly
                sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=0.25, interleave=1)
                if proxy is not None and endpoint.ssl is not None:
                    await _tunnel(loop, sock, endpoint, proxy)
                _, conn = await loop.create_connection(
                    lambda: Connection(origin), sock=sock, ssl=endpoint.ssl,
                    server_hostname=endpoint.host if endpoint.ssl is not None else None,
                )
        except BaseException as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, TimeoutError) and limit != timeout:
                raise TimeoutError() from None  # the caller's deadline, not the connect timeout
            failed = _connect_error(exc, timeout)
            if failed is None:
                raise
            raise failed from None
        self.opened += 1
        return conn

    def _keep(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.keepalive, self._sweep)

    def _unpark(self, conn: Connection) -> None:
        self._parked.discard(conn)
        conn.on_complete = None
        self.release(conn)

    @staticmethod
    def _reusable(conn: Connection) -> bool:
        return not conn.closed and conn.keep_alive and conn.error is None and not conn._paused

    def _sweep(self) -> None:
        """Close connections idle for longer than ``keepalive``; run again while any remain."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.keepalive
        for origin, conns in list(self._idle.items()):
            live = []
            for conn in conns:
                if conn.closed or conn.idle_since <= cutoff:
                    conn.close()
                else:
                    live.append(conn)
            if live:
                self._idle[origin] = live
            else:
                del self._idle[origin]
        if self._idle:
            self._sweeper = loop.call_later(self.keepalive / 2, self._sweep)

