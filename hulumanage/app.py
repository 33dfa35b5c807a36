"""The aiohttp application factory."""

from __future__ import annotations

import argparse
import difflib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pluggy
from aiohttp import web

from hulumanage import admin, api, passthrough
from hulumanage.appkeys import ALLOWED, APPROACHES, GATE, GUARD, HIT_LANE, HTTP, OPTIONS, PARAMS, PLUGIN_MANAGER
from hulumanage.chat import HitLane
from hulumanage.gate import access_log_to
from hulumanage.guard import Guard
from hulumanage.plugins import collect_approaches, get_plugin_manager

logger = logging.getLogger(__name__)


MAX_BODY = 64 * 1024 * 1024  # bytes of a request body


class StartupError(Exception):
    """The server cannot start as configured; the message says what to do."""


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    """One ClientSession for the host's own upstream calls, closed at shutdown."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
    app[HTTP] = session
    yield
    await session.close()


def _plugin_lifespan(generator: Any) -> Any:
    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        async for _ in generator:
            yield
            break
        else:
            yield
            return
        async for _ in generator:  # run the plugin's teardown
            pass

    return ctx


def allowed_approaches(option: str | None, default: str, approaches: dict[str, Any]) -> frozenset[str]:
    """The approaches clients may select (``--allow-approaches``), the server's default always among them.

    Unset: every approach but ``none`` when the default is ``proxy`` (a client naming ``none``
    would reach ``--base-url`` with the server's own key, around the pool's routing, limits and
    queue), else every approach. An unknown name is a StartupError with a did-you-mean.
    """
    if option is None:
        names = {slug for slug in approaches if not (default == "proxy" and slug == "none")}
    else:
        names = {name.strip() for name in option.split(",") if name.strip()}
        for name in sorted(names):
            if name not in approaches:
                close = difflib.get_close_matches(name, list(approaches), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise StartupError(f"unknown approach {name!r} in --allow-approaches{hint}; "
                                   f"known approaches: {', '.join(sorted(approaches))}")
    return frozenset(names | {default})


async def _request_gate(app: web.Application) -> None:
    """Ask the plugins for the request gate, once every plugin has started."""
    app[GATE] = app[PLUGIN_MANAGER].hook.request_gate(app=app)


def make_app(options: argparse.Namespace, pm: pluggy.PluginManager | None = None) -> web.Application:
    """Build the host app: approaches from plugins, routes, plugin lifespans."""
    pm = pm or get_plugin_manager()
    approaches = collect_approaches(pm)
    if any(not getattr(a, "terminal", False) for a in approaches.values()):
        # Composed layers run on the openai SDK; importing it is slow blocking work, which
        # must happen here at startup, not on the event loop under the first such request.
        import openai  # noqa: F401
    if options.approach not in approaches:
        close = difflib.get_close_matches(options.approach, list(approaches), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StartupError(f"unknown --approach {options.approach!r}{hint}; "
                           f"known approaches: {', '.join(sorted(approaches))}")
    allowed = allowed_approaches(options.allow_approaches, options.approach, approaches)
    if options.max_fanout < 1:
        raise StartupError(f"--max-fanout must be at least 1, got {options.max_fanout}")
    app = web.Application(client_max_size=MAX_BODY)
    app[OPTIONS] = options
    app[ALLOWED] = allowed
    app[GUARD] = Guard(options.cors_origins, options.allowed_hosts, options.host)
    app[PLUGIN_MANAGER] = pm
    app[APPROACHES] = approaches
    app[PARAMS] = frozenset(p for a in approaches.values() for p in getattr(a, "params", {}) or {})
    app.cleanup_ctx.append(_http_session)
    if getattr(options, "access_log", None):  # not every command's options have it (the demo's)
        app.cleanup_ctx.append(access_log_to(options.access_log))
    for generator in pm.hook.lifespan(app=app, options=options):
        if generator is not None:
            app.cleanup_ctx.append(_plugin_lifespan(generator))
    app.router.add_post("/v1/chat/completions", api.chat_completions)
    app.router.add_post("/chat/completions", api.chat_completions)
    passthrough.add_routes(app)  # /v1/embeddings, /v1/completions: an approach's optional methods
    app.router.add_get("/v1/models", api.cross_site_checked(api.list_models))
    app.router.add_get("/models", api.cross_site_checked(api.list_models))
    app.router.add_get("/health", api.cross_site_checked(api.health))
    app.router.add_post("/admin/reload", api.cross_site_checked(admin.reload))  # + Host, token: admin.refusal
    app[GATE] = None
    app[HIT_LANE] = HitLane()
    app.on_startup.append(_request_gate)  # after every lifespan's start (cleanup_ctx runs first)
    pm.hook.register_routes(app=app, options=options)
    app.router.add_route("*", "/{tail:.*}", api.cross_site_checked(api.not_found))  # OpenAI-shaped 404/405, preflights
    return app
