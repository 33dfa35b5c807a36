"""The fast path's listening site: which server a new connection starts on, and the graceful stop.

``FastSite`` is a ``web.BaseSite`` (``web.TCPSite`` otherwise alike) whose connections start
on the fast path (``fastpath.FastConnection``) unless the application could observe the
difference (a middleware or an ``on_response_prepare`` signal) or ``--no-fast-path`` asked;
then aiohttp serves every connection, each inside ``fastguard.Guarded`` (read deadlines). Its
stop gives requests in flight on both servers one grace; what still runs when it ends gets an
answer, not a bare disconnect: a 503 (``server_shutting_down``) when nothing of its answer went
out, else an SSE error event ending the stream (no ``[DONE]``). What it needs of aiohttp's
internals is in ``aiohttp_compat.py``.

It caps the open client connections (``max_connections``, both servers together): past it a
new connection is accepted and closed at once, without a byte (accepting frees the kernel's
queue; an answer would need a read first). That, and the event loop's ``accept()`` failures
for want of descriptors (EMFILE, ENFILE, ...), are logged once per ``LOG_EVERY`` seconds
with a count, never once per connection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from typing import Any

from aiohttp import web

from hulumanage import aiohttp_compat as compat
from hulumanage.aiohttp_compat import hot_route_problem
from hulumanage.errors import ApiError
from hulumanage.fastguard import Guarded, error_response
from hulumanage.fastpath import FastConnection
from hulumanage.fastwire import HOT_PATHS
from hulumanage.results import error_event

__all__ = ["FastSite", "hot_route_problem"]

logger = logging.getLogger("hulumanage.fastpath")  # one logger for the whole fast path

STOP_POLL = 0.05              # seconds between looks at aiohttp's requests while stopping
STOP_MOMENT = 0.05            # seconds aiohttp's own shutdown gets once the grace is over
LOG_EVERY = 10.0              # seconds between two reports of refused connections or failed accept()s
FILES_RESERVE = 64            # descriptors kept for files, logs and listening sockets
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
SHUTTING_DOWN = "the server is shutting down; send the request again"


def default_max_connections() -> int:
    """Half the descriptors of the soft ``RLIMIT_NOFILE`` left after ``FILES_RESERVE``.

    The other half stays for upstream connections (about one per request in flight).
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        soft = 1 << 20
    return max(8, (soft - FILES_RESERVE) // 2)


def shutdown_answer() -> bytes:
    """The 503 of a request still running when the stop's grace ended."""
    return error_response(503, SHUTTING_DOWN, "server_shutting_down")


def shutdown_event() -> bytes:
    """The SSE event that ends a stream still running when the stop's grace ended."""
    return error_event(ApiError(503, SHUTTING_DOWN, "server_error", "server_shutting_down"))


class FastSite(web.BaseSite):
    """A TCP site whose connections start on the fast path (``web.TCPSite`` otherwise alike).

    ``sock``: serve an already bound socket instead of ``host``/``port``. ``fast=False``:
    every request goes to aiohttp (``--no-fast-path``), with this site's graceful stop.
    """

    __slots__ = ("_accept_errors", "_fast", "_grace", "_host", "_last_report", "_port", "_previous_handler", "_refused",
                 "_sock", "access_log", "connections", "max_connections", "open", "runner", "stopping", "tasks")

    def __init__(
        self, runner: web.BaseRunner, host: str | None = None, port: int | None = None, *,
        sock: Any = None, backlog: int = 128, access_log: logging.Logger | None = None, grace: float | None = None,
        fast: bool = True, max_connections: int | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._sock = sock
        self.runner = runner
        self.access_log = access_log
        self._fast = fast
        self.connections: set[FastConnection] = set()  # the connections still on the fast path
        self.tasks: set[asyncio.Task[None]] = set()     # the fast path's requests in flight
        default = compat.shutdown_timeout(runner)
        self._grace: float = grace if grace is not None else (60.0 if default is None else default)
        self.max_connections = default_max_connections() if max_connections is None else max_connections
        self.open = 0                 # client connections open, on both servers
        self.stopping = False
        self._refused = 0             # since the last report
        self._accept_errors = 0       # since the last report
        self._last_report: float | None = None
        self._previous_handler: Any = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}" if self._sock is None else f"fast:{self._sock.getsockname()}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        runner = self.runner
        app = getattr(runner, "app", None)
        if not self._fast:
            problem: str | None = "turned off by hand"
        else:
            problem = hot_route_problem(app) if app is not None else "the runner has no application"
        if problem is None:
            factory: Any = self._connection
        else:
            logger.info("fast path off (%s): every request goes through aiohttp", problem)
            factory = self._guarded
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        backlog = compat.site_backlog(self)
        if self._sock is not None:
            server = await loop.create_server(factory, sock=self._sock, backlog=backlog)
        else:
            server = await loop.create_server(factory, self._host, self._port or 0, backlog=backlog)
        compat.set_site_server(self, server)

    def _connection(self) -> FastConnection:
        return FastConnection(self)

    def _guarded(self) -> Guarded:
        return Guarded(self, compat.new_handler(self.runner))

    # -- the connection cap and resource exhaustion ------------------------------------------

    def admit(self) -> bool:
        """Take a slot for a new client connection; False (and counted for the log) past the cap."""
        if self.open >= self.max_connections:
            self._refused += 1
            self._report()
            return False
        self.open += 1
        return True

    def release(self) -> None:
        """A client connection closed: give its slot back."""
        self.open -= 1

    def _report(self) -> None:
        """Log refusals and accept() failures, at most once per ``LOG_EVERY`` seconds."""
        now = asyncio.get_running_loop().time()
        if self._last_report is not None and now - self._last_report < LOG_EVERY:
            return
        self._last_report = now
        if self._refused:
            logger.warning("connection limit reached (%d open, --max-connections %d): %d new connection(s) "
                           "refused in the last %gs", self.open, self.max_connections, self._refused, LOG_EVERY)
        if self._accept_errors:
            logger.error("accept() failed for want of resources (file descriptors?) %d time(s) in the last %gs, "
                         "with %d client connections open; lower --max-connections or raise the limit (ulimit -n)",
                         self._accept_errors, LOG_EVERY, self.open)
        self._refused = self._accept_errors = 0

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler: accept() resource failures counted and reported, not logged each."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            self._accept_errors += 1
            self._report()
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    async def stop(self) -> None:
        """Stop listening; requests in flight, here and on aiohttp, get one grace to finish.

        aiohttp's own shutdown (``runner.cleanup``, which calls this first) waits up to its
        timeout for a request, then cancels it and waits up to that timeout again. So the
        waiting is done here, for both servers at once, until the grace runs out; what is
        still running then is cancelled, and aiohttp's shutdown is left only a moment.
        """
        await super().stop()
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        for conn in list(self.connections):
            conn.close_when_idle()
        runner = self.runner
        while (left := deadline - loop.time()) > 0:
            aiohttp_busy = compat.aiohttp_busy(runner)
            if not self.tasks and not aiohttp_busy:
                break
            step = min(left, STOP_POLL) if aiohttp_busy else left
            if self.tasks:
                await asyncio.wait(set(self.tasks), timeout=step, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(step)
        # what still runs gets an answer: a 503, or an error event ending its stream
        answer, event = shutdown_answer(), shutdown_event()
        for conn in list(self.connections):
            conn.interrupt(answer, event)
        for transport, path, started, chunked in compat.requests_in_flight(runner):
            if not started:
                transport.write(answer)
            elif chunked and path in HOT_PATHS:  # an SSE chat stream: a last event, then the body's end
                transport.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(event), event))
            transport.close()
        pending = [task for task in self.tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for conn in list(self.connections):
            conn.abort()
        if compat.shutdown_timeout(runner) is not None:  # aiohttp's sites set it alike
            # aiohttp reads 0 as "no limit": a moment, or half the rest when its requests could not be seen
            left = max(0.0, deadline - loop.time())
            compat.set_shutdown_timeout(
                runner, STOP_MOMENT if compat.aiohttp_busy(runner) is not None else max(STOP_MOMENT, left / 2))
        if loop.get_exception_handler() == self._loop_exception:
            loop.set_exception_handler(self._previous_handler)
