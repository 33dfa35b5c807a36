"""The fast path's listening site: which server a new connection starts on, and the graceful stop.

``FastSite`` is a ``web.BaseSite`` (``web.TCPSite`` otherwise alike) whose connections start
on the fast path (``fastpath.FastConnection``) unless the application could observe the
difference (a middleware or an ``on_response_prepare`` signal) or ``--no-fast-path`` asked;
then aiohttp serves every connection. Its stop gives requests in flight on both servers one
grace. What it needs of aiohttp's internals is in ``aiohttp_compat.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from hulumanage import aiohttp_compat as compat
from hulumanage.aiohttp_compat import hot_route_problem
from hulumanage.fastpath import FastConnection

__all__ = ["FastSite", "hot_route_problem"]

logger = logging.getLogger("hulumanage.fastpath")  # one logger for the whole fast path

STOP_POLL = 0.05              # seconds between looks at aiohttp's requests while stopping
STOP_MOMENT = 0.05            # seconds aiohttp's own shutdown gets once the grace is over


class FastSite(web.BaseSite):
    """A TCP site whose connections start on the fast path (``web.TCPSite`` otherwise alike).

    ``sock``: serve an already bound socket instead of ``host``/``port``. ``fast=False``:
    every request goes to aiohttp (``--no-fast-path``), with this site's graceful stop.
    """

    __slots__ = ("_fast", "_grace", "_host", "_port", "_sock", "access_log", "connections", "runner", "tasks")

    def __init__(
        self, runner: web.BaseRunner, host: str | None = None, port: int | None = None, *,
        sock: Any = None, backlog: int = 128, access_log: logging.Logger | None = None, grace: float | None = None,
        fast: bool = True,
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
            factory = compat.protocol_factory(runner)
        backlog = compat.site_backlog(self)
        if self._sock is not None:
            server = await loop.create_server(factory, sock=self._sock, backlog=backlog)
        else:
            server = await loop.create_server(factory, self._host, self._port or 0, backlog=backlog)
        compat.set_site_server(self, server)

    def _connection(self) -> FastConnection:
        return FastConnection(self)

    async def stop(self) -> None:
        """Stop listening; requests in flight, here and on aiohttp, get one grace to finish.

        aiohttp's own shutdown (``runner.cleanup``, which calls this first) waits up to its
        timeout for a request, then cancels it and waits up to that timeout again. So the
        waiting is done here, for both servers at once, until the grace runs out; what is
        still running then is cancelled, and aiohttp's shutdown is left only a moment.
        """
        await super().stop()
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
