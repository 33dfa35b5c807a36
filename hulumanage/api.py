"""The OpenAI-compatible routes: chat completions, models, health (embeddings and completions: ``passthrough.py``)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from hulumanage.appkeys import ALLOWED, APPROACHES, GUARD, OPTIONS, PLUGIN_MANAGER
from hulumanage.chat import AiohttpHead, Answer, Streamed, chat_reply, close_stream, error_reply
from hulumanage.errors import ApiError
from hulumanage.plugins import settle
from hulumanage.results import sse_writes

__all__ = ["Streamed", "chat_reply", "close_stream", "error_reply"]  # the fast path's names, from chat.py

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def error_response(exc: BaseException) -> web.Response:
    """An OpenAI-shaped JSON error response for ``exc``."""
    status, body, headers = error_reply(exc)
    return web.Response(status=status, body=body, headers=headers)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions`` on aiohttp (the fast path serves it when it can)."""
    return await answered(request)


async def answered(request: web.Request, answer: Answer | None = None) -> web.StreamResponse:
    """Read the body and answer it as ``chat_reply`` does (``answer``: another route's, see ``passthrough.py``)."""
    try:
        raw = await request.read()
    except web.HTTPException as exc:  # a body over the size limit
        return error_response(exc)
    reply = await chat_reply(request.app, raw, AiohttpHead(request), answer)
    if isinstance(reply, Streamed):
        return await _stream(request, reply)
    status, body, headers = reply
    return web.Response(status=status, body=body, headers=headers)


async def _stream(request: web.Request, reply: Streamed) -> web.StreamResponse:
    """Relay an SSE stream; close the approach's iterator whatever happens."""
    first, iterator = reply.first, reply.rest
    response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **reply.headers})
    try:
        await response.prepare(request)
        async with contextlib.aclosing(sse_writes(first, iterator)) as writes:
            async for part, last in writes:
                await (response.write_eof(part) if last else response.write(part))
    except (ConnectionResetError, OSError):
        logger.info("client went away during a stream")
    finally:
        await close_stream(iterator)
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cross_site_checked(handler: Handler) -> Handler:
    """``handler`` behind the origin check, its answers with CORS headers for allowed origins."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        guard = request.app[GUARD]
        origin = request.headers.get("Origin")
        refusal = guard.origin_refusal(origin)
        if refusal is not None:
            return error_response(refusal)
        response = await handler(request)
        if origin is not None and not response.prepared:
            response.headers.update(guard.cors_headers(origin))
        return response

    return checked


async def preflight(request: web.Request) -> web.Response:
    """``OPTIONS`` on any path: a CORS preflight is answered for allowed origins, refused for others."""
    guard = request.app[GUARD]
    origin = request.headers.get("Origin")
    if origin is None:
        return web.Response(status=204, headers={"Allow": "GET, POST, OPTIONS"})
    refusal = guard.origin_refusal(origin)
    if refusal is not None:
        return error_response(refusal)
    return web.Response(
        status=204, headers=guard.preflight_headers(origin, request.headers.get("Access-Control-Request-Headers"))
    )


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: the models every plugin reports, deduplicated."""
    seen: dict[str, dict[str, Any]] = {}
    for models in await settle(request.app[PLUGIN_MANAGER].hook.list_models(app=request.app)):
        for model in models or ():
            seen.setdefault(model["id"], model)
    return web.json_response({"object": "list", "data": list(seen.values())}, dumps=lambda o: orjson.dumps(o).decode())


async def health(request: web.Request) -> web.Response:
    """``GET /health``: the host, its approaches, and whatever plugins report."""
    approaches = request.app[APPROACHES]
    allowed: frozenset[str] = request.app[ALLOWED]
    body: dict[str, Any] = {
        "status": "ok",
        "approaches": sorted(approaches),
        "default_approach": request.app[OPTIONS].approach,
        "allowed_approaches": sorted(allowed),
    }
    for part in await settle(request.app[PLUGIN_MANAGER].hook.health(app=request.app)):
        if part:
            body.update(part)
    return web.json_response(body, dumps=lambda o: orjson.dumps(o).decode())


async def not_found(request: web.Request) -> web.Response:
    """OpenAI-shaped 404 for an unknown path, 405 (with ``Allow``) for a known path asked with another method.

    Registered last, for every path and method, so no request gets aiohttp's plain-text
    answer; ``OPTIONS`` here is a CORS preflight.
    """
    if request.method == "OPTIONS":
        return await preflight(request)
    allowed: set[str] = set()
    here = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not here:
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= {m for m in methods if m not in ("*", "HEAD")}
    if allowed:
        allow = ", ".join(sorted(allowed))
        response = error_response(ApiError(405, f"{request.method} is not allowed on {request.path}; use {allow}",
                                           code="method_not_allowed"))
        response.headers["Allow"] = allow
        return response
    return error_response(ApiError(404, f"no route for {request.method} {request.path}", code="not_found"))
