"""The upstream client: keep-alive connections per provider origin, for POSTs on the hot path.

aiohttp's client is general-purpose (cookie jars, redirects, multipart, tracing, a
``ClientRequest`` and ``ClientResponse`` per call); this one does one job and costs a
fraction of its CPU per request (the figures are in ``bench/README.md``). The request
head is built once per provider (:class:`Endpoint`); a request is one ``write`` of head
+ body; the response is parsed as it arrives (``framing.py``, ``connection.py``) and its
body handed over chunk by chunk, never copied into a stream object.

What it does: keep-alive connections per origin (idle ones closed after ``keepalive``
seconds, or as soon as the server closes them; a request meeting an idle close within
``RESEND_WINDOW`` of its write is sent once more, and only then), connecting to every address of a host (happy eyeballs), TLS with the
system's trust store, an egress HTTP proxy (``egress.py``). What it leaves to the
caller: timeouts beyond the connect timeout (the pool's deadlines wrap every call) and
retries (the pool decides those). Health checks and everything else off the hot path
stay on aiohttp.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import socket
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohappyeyeballs

from proxy_plugin.upstream.connection import Connection
from proxy_plugin.upstream.egress import EgressProxy, egress_proxy, open_tunnel
from proxy_plugin.upstream.errors import ConnectFailedError, DisconnectedError
from proxy_plugin.upstream.framing import request_head

PARK_SECONDS = 5.0                # a finished stream may take this long to send its last bytes
#: A reused connection that closes without a byte of answer within this long of the request's
#: write met the keep-alive race (the provider closed it for idleness as the request went out):
#: its close was already on the way, so it arrives within about one round trip of the write
#: (milliseconds nearby, ~150-200 ms to the far side of the world). 0.25 s covers that, and
#: is shorter than a provider takes to *process* a chat completion, so a request it may have
#: acted on is never sent twice silently: a later close is the provider failing (one attempt,
#: charged to it, logged, seen by the retry budget before any retry).
RESEND_WINDOW = 0.25


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """One provider URL with its request head built once (up to ``Content-Length:``)."""

    origin: tuple[object, ...]        # the connection pool's key: scheme, host, port, proxy
    host: str
    port: int
    ssl: ssl.SSLContext | None
    head: bytes
    proxy: EgressProxy | None = None


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


class UpstreamClient:
    """Keep-alive connections to every provider origin, for POSTs on the hot path."""

    def __init__(
        self, keepalive: float = 30.0, ssl_context: ssl.SSLContext | None = None, environ: Mapping[str, str] | None = None,
    ) -> None:
        """Idle connections live ``keepalive`` seconds; ``environ`` holds the egress proxy settings."""
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
        authorization = proxy.authorization if proxy is not None and scheme == "http" else None
        head = request_head(target, authority, headers, authorization)
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

        A kept-alive connection that the provider closes without a byte of answer within
        ``RESEND_WINDOW`` of the write was closed for idleness as the request went out (a
        race every keep-alive client meets): the request is sent once more on a new
        connection, so that race is neither an error for the client nor a failure charged
        to the provider. A later close raises ``DisconnectedError``: the provider held the
        request, it may have acted on it, and the caller decides (one failed attempt).
        """
        conn = self._take_idle(endpoint.origin)
        if conn is not None:
            conn.reset()
            conn.read_deadline = deadline
            loop_time = asyncio.get_running_loop().time
            written = loop_time()
            try:
                return await self._exchange(conn, endpoint, payload)
            except DisconnectedError:
                if conn.answered or loop_time() - written > RESEND_WINDOW:
                    raise
                self.stale += 1
        conn = await self._connect(endpoint, connect_timeout, deadline)
        conn.read_deadline = deadline
        return await self._exchange(conn, endpoint, payload)

    @staticmethod
    async def _exchange(conn: Connection, endpoint: Endpoint, payload: bytes) -> Connection:
        """Write the request in one go and wait for the response head (the connection is closed if that fails)."""
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
            """The last bytes came: the connection is reused."""
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
        """The most recently used live idle connection to ``origin``; the expired ones met are closed."""
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
        """A new connection, within ``timeout`` or by ``deadline``, whichever is nearer.

        ConnectFailedError when it cannot be opened; TimeoutError when the deadline passes first.
        """
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
                    await open_tunnel(loop, sock, endpoint.host, endpoint.port, proxy)
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
        """Keep ``conn`` idle for the next request to its origin (the sweep closes it past ``keepalive``)."""
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.keepalive, self._sweep)

    def _unpark(self, conn: Connection) -> None:
        """A parked stream's connection completed or waited long enough: release it."""
        self._parked.discard(conn)
        conn.on_complete = None
        self.release(conn)

    @staticmethod
    def _reusable(conn: Connection) -> bool:
        """Whether ``conn`` can carry another request once its response is complete."""
        return not conn.closed and conn.keep_alive and conn.error is None and not conn.paused

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
