"""One pipelined Redis connection for the admission script: the request's only round trip, kept lean.

Every admission with ``state.backend: redis`` is one ``EVALSHA`` on the request's path.
Through redis-py's asyncio client a call costs about 100 µs of Python (a pool checkout under
a condition, argument checks, per-call timeouts, the reply's dispatch) on this project's
benchmark machine, more than Redis spends running the script. A :class:`Lane` sends the
command on one connection that every admission shares (Redis answers in order, so replies
are matched to callers first in, first out), encodes it in one buffer and parses the reply
with ``hiredis``, the parser redis-py itself uses. It serves only ``EVALSHA``; everything
else (loading scripts, the batches, the cache, circuits) stays on redis-py.

It speaks to ``redis://`` and ``unix://`` URLs (with a user, a password and a database);
:func:`lane_for` returns None for anything else (``rediss://``, query options), and the
admission then goes through redis-py as before. The caller bounds every call
(``RedisStore.call``: ``redis_timeout``); a reply that comes after its caller gave up is
read and dropped, so the order stays right. A lost connection fails every call waiting on
it and the next call connects again.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()  # ints, floats: as redis-py's encoder writes them


def pack(*args: Any) -> bytes:
    """One command in RESP."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _arg(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: Any = None  # an asyncio or uvloop transport (uvloop's is not an asyncio.Transport)
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            waiter = self.waiting.popleft()
            if not waiter.done():  # (its caller may have timed out)
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc!r}" if exc else "connection to Redis closed"))

    def fail(self, exc: Exception) -> None:
        self.lost = True
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class Lane:
    """``EVALSHA`` over one shared, pipelined connection (see the module docstring)."""

    def __init__(self, host: str, port: int, path: str | None, username: str | None, password: str | None,
                 db: int) -> None:
        self.host, self.port, self.path = host, port, path
        self.username, self.password, self.db = username, password, db
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            protocol = self._protocol
            if protocol is not None and not protocol.lost:
                return protocol
            loop = asyncio.get_running_loop()
            if self.path is not None:
                _, protocol = await loop.create_unix_connection(_Protocol, self.path)
            else:
                _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
            try:
                if self.password is not None:
                    auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                    await self._send(protocol, auth)
                if self.db:
                    await self._send(protocol, ("SELECT", self.db))
            except BaseException:
                protocol.fail(RedisConnectionError("could not set up the connection"))
                raise
            self._protocol = protocol
            return protocol

    @staticmethod
    async def _send(protocol: _Protocol, command: Sequence[Any]) -> Any:
        """Send ``command``, wait for its reply; an error reply raises (``NOSCRIPT``: :class:`NoScriptError`)."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.waiting.append(waiter)
        protocol.transport.write(pack(*command))
        reply = await waiter
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            raise NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)
        return reply

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run the loaded script ``sha``; :class:`~redis.exceptions.NoScriptError` when Redis does not have it."""
        return await self._send(await self._connection(), ("EVALSHA", sha, len(keys), *keys, *args))

    def close(self) -> None:
        """Drop the connection (the next call connects again)."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.fail(RedisConnectionError("connection to Redis dropped"))


def lane_for(url: str) -> Lane | None:
    """A :class:`Lane` for ``url``, or None when it needs more than the lane speaks (TLS, query options)."""
    parsed = urlparse(url)
    if parsed.query or parsed.scheme not in ("redis", "unix"):
        return None
    username = unquote(parsed.username) if parsed.username else None
    password = unquote(parsed.password) if parsed.password else None
    if parsed.scheme == "unix":
        return Lane("", 0, unquote(parsed.path), username, password, 0) if parsed.path else None
    db_text = unquote(parsed.path).strip("/")
    if db_text and not db_text.isdigit():
        return None
    return Lane(parsed.hostname or "localhost", parsed.port or 6379, None, username, password,
                int(db_text) if db_text else 0)
