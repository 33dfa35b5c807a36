"""Everything the fast path needs from aiohttp beyond its public API, in one place.

The fast path (``fastpath.py``, ``fastsite.py``) is a ``web.BaseSite`` of its own that hands
connections to aiohttp's protocol and shares aiohttp's graceful stop; aiohttp has no public
API for either. Every private attribute and internal it relies on is touched here and only
here, and listed in ``REQUIRED``: ``tests/test_aiohttp_compat.py`` checks each one against the
installed aiohttp and fails naming the attribute when a release moves it (the ``aiohttp<4``
cap in ``pyproject.toml`` is the coarse guard, that test the fine one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_protocol, web_request, web_runner, web_server

#: (owner, attribute, what the fast path does with it): every aiohttp internal used below.
REQUIRED: tuple[tuple[str, str, str], ...] = (
    ("web_runner.BaseSite", "_backlog", "read: the listen backlog a site was made with"),
    ("web_runner.BaseSite", "_server", "set: the asyncio server BaseSite.stop() closes"),
    ("web_runner.BaseRunner", "_shutdown_timeout", "read as the default grace; shortened once the grace is spent"),
    ("web_runner.BaseRunner", "server", "the web_server.Server: protocol factory of aiohttp's connections"),
    ("web_server.Server", "__call__", "makes the web_protocol.RequestHandler a handed-over connection gets"),
    ("web_server.Server", "connections", "aiohttp's open connections (its RequestHandlers)"),
    ("web_protocol.RequestHandler", "_request_in_progress", "whether aiohttp is serving a request (graceful stop)"),
    ("web_protocol.RequestHandler", "_current_request", "the request a handler is running for (read deadlines, stop)"),
    ("web_protocol.RequestHandler", "_messages", "requests parsed, not yet served (read deadlines)"),
    ("web_protocol.RequestHandler", "transport", "the connection of a request still running at the end of a stop"),
    ("web_request.BaseRequest", "writer", "its StreamWriter: output_size (has an answer started?), chunked"),
    ("web_protocol.RequestHandler", "connection_made", "a handed-over transport starts on aiohttp"),
    ("web_protocol.RequestHandler", "data_received", "the bytes the fast path read before handing over"),
    ("web.Application", "middlewares", "a middleware turns the fast path off"),
    ("web.Application", "on_response_prepare", "a response signal turns the fast path off"),
)

OWNERS: dict[str, Any] = {
    "web_runner.BaseSite": web_runner.BaseSite,
    "web_runner.BaseRunner": web_runner.BaseRunner,
    "web_server.Server": web_server.Server,
    "web_protocol.RequestHandler": web_protocol.RequestHandler,
    "web_request.BaseRequest": web_request.BaseRequest,
    "web.Application": web.Application,
}


def site_backlog(site: web.BaseSite) -> int:
    """The listen backlog ``site`` was made with."""
    return site._backlog


def set_site_server(site: web.BaseSite, server: asyncio.AbstractServer) -> None:
    """Record ``site``'s listening server, so that ``BaseSite.stop()`` closes it."""
    site._server = server


def shutdown_timeout(runner: web.BaseRunner) -> float | None:
    """The runner's shutdown timeout (seconds), None when this aiohttp keeps none."""
    value = getattr(runner, "_shutdown_timeout", None)
    return float(value) if isinstance(value, int | float) else None


def set_shutdown_timeout(runner: web.BaseRunner, seconds: float) -> None:
    """Shorten what aiohttp's own shutdown waits for its requests (0 would mean no limit)."""
    runner._shutdown_timeout = seconds


def protocol_factory(runner: web.BaseRunner) -> Any:
    """What ``loop.create_server`` takes to serve every connection on aiohttp (as ``web.TCPSite`` does)."""
    return runner.server


def new_handler(runner: web.BaseRunner) -> Any:
    """A new aiohttp protocol (``RequestHandler``) of ``runner``, for one connection."""
    server = runner.server
    assert server is not None, "the runner is not set up"
    return server()


def hand_over(runner: web.BaseRunner, transport: asyncio.Transport, data: bytes,
              wrap: Callable[[Any], asyncio.Protocol] | None = None) -> None:
    """Give ``transport`` to a new aiohttp protocol of ``runner`` (inside ``wrap``), starting with ``data`` already read."""
    protocol = new_handler(runner)
    if wrap is not None:
        protocol = wrap(protocol)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    protocol.data_received(data)


def aiohttp_busy(runner: web.BaseRunner) -> bool | None:
    """Whether aiohttp is serving a request on this runner (None: cannot tell)."""
    server = getattr(runner, "server", None)
    handlers = getattr(server, "connections", None)
    if handlers is None:
        return None
    try:
        return any(handler._request_in_progress for handler in handlers)
    except AttributeError:  # a future aiohttp: its own shutdown timeout applies
        return None


def read_stall(handler: Any, head_done: bool) -> str:
    """What a read deadline may do on aiohttp's connection ``handler``, its request not all in.

    ``"answer"``: nothing of an answer is going out, write the 408; ``"wait"``: an answer (to an
    earlier request, or to this one by a handler that did not read its body) is going out;
    ``"done"``: the request was answered already, close quietly.
    """
    if handler._messages:
        return "wait"  # earlier pipelined requests still to answer
    current = handler._current_request
    if handler._request_in_progress:
        if head_done and current is not None and current.writer.output_size == 0:
            return "answer"  # its handler waits for the body
        return "wait"
    return "done" if head_done else "answer"


def requests_in_flight(runner: web.BaseRunner) -> list[tuple[asyncio.Transport, str, bool, bool]]:
    """aiohttp's requests whose handler still runs: (transport, path, answer started, answer chunked)."""
    server = getattr(runner, "server", None)
    found = []
    for handler in list(getattr(server, "connections", None) or ()):
        request = getattr(handler, "_current_request", None)
        transport = getattr(handler, "transport", None)
        if request is None or transport is None or transport.is_closing():
            continue
        writer = request.writer
        found.append((transport, request.path, writer.output_size > 0, bool(getattr(writer, "chunked", False))))
    return found


def hot_route_problem(app: web.Application) -> str | None:
    """Why the fast path cannot serve ``app``'s chat route as aiohttp would (None: it can).

    The host's routes for the hot paths come first and aiohttp refuses a second POST
    route on the same path, so only middlewares and response signals could change what
    a client gets.
    """
    if app.middlewares:
        return "the application has middlewares"
    if app.on_response_prepare:
        return "the application has on_response_prepare signals"
    return None


def missing() -> list[str]:
    """``owner.attribute`` of every ``REQUIRED`` internal this aiohttp lacks (on the class or in its slots)."""
    gone = []
    for owner, attribute, _why in REQUIRED:
        cls = OWNERS[owner]
        slots = {s for klass in cls.__mro__ for s in getattr(klass, "__slots__", ())}
        if not hasattr(cls, attribute) and attribute not in slots:
            gone.append(f"{owner}.{attribute}")
    return gone

