"""The OpenAI-compatible routes: chat completions, models, health."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from hulumanage.appkeys import ALLOWED, APPROACHES, GUARD, OPTIONS, PARAMS, PLUGIN_MANAGER
from hulumanage.call import Call
from hulumanage.compose import Fanout, declared_fanout, fanout_error, layer_client
from hulumanage.errors import ApiError, error_payload
from hulumanage.guard import content_type_refusal
from hulumanage.plugins import settle
from hulumanage.results import completion_body, is_stream, sse_writes
from hulumanage.validate import check_depth, validate_request

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def error_response(exc: BaseException) -> web.Response:
    """An OpenAI-shaped JSON error response for ``exc``."""
    status, body, headers = error_reply(exc)
    return web.Response(status=status, body=body, headers=headers)


def resolve_chain(
    data: dict[str, Any], approaches: dict[str, Any], default: str, allowed: frozenset[str] | None = None
) -> tuple[str, ...]:
    """Pick the approach layers for a request and strip any approach prefix from ``model``.

    Every layer the client names must be in ``allowed`` (``--allow-approaches``; None: any),
    else a 403; the server's default, used implicitly, always is.
    """
    model = data["model"]
    head, sep, rest = model.partition("-")
    prefix: tuple[str, ...] = ()
    if sep and rest and (head in approaches or "&" in head):
        parts = tuple(head.split("&"))
        if all(p in approaches for p in parts):
            prefix = parts
            data["model"] = rest
    if not prefix and "hulumanage_approach" not in data:
        return (default,)  # the server's default: checked at startup
    selected = data.get("hulumanage_approach")
    if selected is not None:
        if not isinstance(selected, str) or not selected.strip():
            raise ApiError(400, "hulumanage_approach must be a non-empty string such as 'proxy' or 'bon&proxy'", code="invalid_approach")
        chain = tuple(s.strip() for s in selected.split("&"))
    else:
        chain = prefix or (default,)
    unknown = [s for s in chain if s not in approaches]
    if unknown:
        raise ApiError(
            400,
            f"unknown approach {unknown[0]!r}; known approaches: {', '.join(sorted(approaches))}",
            code="unknown_approach",
        )
    if allowed is not None:
        refused = [s for s in chain if s not in allowed]
        if refused:
            raise ApiError(
                403,
                f"approach {refused[0]!r} may not be selected by clients on this server; "
                f"allowed approaches: {', '.join(sorted(allowed))}",
                "permission_error",
                "approach_not_allowed",
            )
    if len(set(chain)) != len(chain):
        raise ApiError(400, f"approach chain {'&'.join(chain)!r} repeats an approach (a cycle)", code="approach_cycle")
    for outer in chain[:-1]:
        if getattr(approaches[outer], "terminal", False):
            raise ApiError(
                400,
                f"approach {outer!r} calls providers itself and cannot run other layers; put it last, "
                f"e.g. '{'&'.join([s for s in chain if s != outer] + [outer])}-{data['model']}'",
                code="invalid_approach_chain",
            )
    return chain


def bearer(authorization: str) -> str | None:
    """The client's bearer token from an ``Authorization`` header value, if any."""
    if authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
        return token or None
    return None


class Streamed(NamedTuple):
    """A streaming answer: its first chunk (already produced), the iterator of the rest, and
    headers beyond the SSE ones (CORS)."""

    first: Any
    rest: Any
    headers: dict[str, str]


async def chat_reply(
    app: web.Application, raw: bytes, authorization: str, content_type: str | None = None, origin: str | None = None
) -> tuple[int, bytes, dict[str, str]] | Streamed:
    """A chat completion request body in, an answer out: (status, JSON body, headers) or a stream.

    Everything between the request's bytes and the response's: the cross-site checks
    (``guard.py``: ``origin``, then ``content_type`` of a non-empty body), parse once,
    validate, pick the approach, run it. Shared by the aiohttp route and the fast path
    (``fastpath.py``), so both answer alike. Every failure becomes an OpenAI-shaped error answer.
    """
    approaches = app[APPROACHES]
    guard = app[GUARD]
    refusal = guard.origin_refusal(origin)
    if refusal is not None:
        return error_reply(refusal)
    if origin is None:
        return await _chat_reply(app, approaches, raw, authorization, content_type)
    cors = guard.cors_headers(origin)
    reply = await _chat_reply(app, approaches, raw, authorization, content_type)
    if isinstance(reply, Streamed):
        return reply._replace(headers=cors)
    status, body, headers = reply
    return status, body, {**headers, **cors}


async def _chat_reply(
    app: web.Application, approaches: dict[str, Any], raw: bytes, authorization: str, content_type: str | None
) -> tuple[int, bytes, dict[str, str]] | Streamed:
    try:
        if raw:
            refusal = content_type_refusal(content_type)
            if refusal is not None:
                raise refusal
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
        if isinstance(data, dict | list):
            check_depth(data)
        validate_request(data)
        chain = resolve_chain(data, approaches, app[OPTIONS].approach, app[ALLOWED])
        extra: dict[str, Any] = {}
        if "hulumanage_approach" in data:
            extra["hulumanage_approach"] = data.pop("hulumanage_approach")
        for name in app[PARAMS].intersection(data):
            extra[name] = data.pop(name)
        api_key = bearer(authorization)
        options = app[OPTIONS]
        limit = options.max_fanout
        base = options.approach
        if base in chain or not getattr(approaches.get(base), "terminal", False):
            base = "none"
        fanout = Fanout(limit)
        call = Call(
            request=data,
            extra=extra,
            stream=data.get("stream") is True,
            client=layer_client(
                chain[1:], approaches=approaches, base=base, app=app, extra=extra, api_key=api_key, full_chain=chain,
                fanout=fanout,
            ),
            app=app,
            approaches=approaches,
            api_key=api_key,
            chain=chain,
            allowed=app[ALLOWED],
            fanout=fanout,
        )
        worst, how = declared_fanout(chain, approaches, call)
        if worst > limit:
            raise fanout_error(limit, f"this request could make {worst} upstream calls ({how})")
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("request model=%s approach=%s stream=%s", data.get("model"), "&".join(chain), call.stream)
        result = await approaches[chain[0]].run(call)
        if not is_stream(result):
            return completion_body(result)
        iterator = aiter(result)
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            raise ApiError(502, "the approach produced an empty stream", "server_error", "empty_stream") from None
        return Streamed(first, iterator, {})
    except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-shaped error
        return error_reply(exc)


def error_reply(exc: BaseException) -> tuple[int, bytes, dict[str, str]]:
    """(status, JSON body, headers) of the OpenAI-shaped error for ``exc`` (unexpected ones logged)."""
    if not isinstance(getattr(exc, "status_code", None), int):
        logger.exception("unexpected error while serving a chat completion", exc_info=exc)
    status, payload, headers = error_payload(exc)
    return status, orjson.dumps(payload), {"Content-Type": "application/json", **headers}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions`` on aiohttp (the fast path serves it when it can)."""
    try:
        raw = await request.read()
    except web.HTTPException as exc:  # a body over the size limit
        return error_response(exc)
    head = request.headers
    reply = await chat_reply(request.app, raw, head.get("Authorization", ""), head.get("Content-Type"), head.get("Origin"))
    if isinstance(reply, Streamed):
        return await _stream(request, reply)
    status, body, headers = reply
    return web.Response(status=status, body=body, headers=headers)


async def close_stream(iterator: Any) -> None:
    """Close an approach's stream iterator (its upstream goes back or closes now)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


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
    """OpenAI-shaped 404 for unknown paths under /v1 (``OPTIONS`` there: a CORS preflight)."""
    if request.method == "OPTIONS":
        return await preflight(request)
    return error_response(ApiError(404, f"no route for {request.method} {request.path}", code="not_found"))
