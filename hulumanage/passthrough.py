"""The OpenAI routes beyond chat: ``/v1/embeddings`` and ``/v1/completions``, served by one approach as they are.

An approach serves such a route when it has the optional method of the route's name
(``embeddings(call)``, ``completions(call)``), which returns what ``run`` does: a raw
response or a dict, or for a streamed completion an async iterator of SSE bytes. The
request goes through everything a chat request does (cross-site checks, request id, the
request gate with its keys, limits, budgets and metrics, the access log: ``chat.chat_reply``
runs :func:`answer_route` in place of the chat answer), but never through composed layers:

- the approach is the one that calls upstream itself: the selected chain's innermost
  layer when it is ``terminal`` (``proxy-text-embedding-3-small``, ``bon&proxy-...``,
  ``hulumanage_approach: proxy``), else the base a chat request's layers would reach (the
  server's ``--approach`` when terminal, else ``none``);
- an approach without the method is a 400 ``unsupported_route`` naming those that have it.

The fast path serves chat only; these routes are aiohttp's.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

from aiohttp import web

from hulumanage import api
from hulumanage.appkeys import ALLOWED, APPROACHES, OPTIONS
from hulumanage.call import Call
from hulumanage.chain import bearer, resolve_chain
from hulumanage.chat import Head, Reply, admitted_body, error_reply, host_fields, reply_of
from hulumanage.errors import ApiError
from hulumanage.gate import GateRequest, Served
from hulumanage.validate import FIELD_TYPES

logger = logging.getLogger(__name__)

#: Each route: the approach method that serves it and the body field it requires.
ROUTES = {"embeddings": "input", "completions": "prompt"}
#: The paths served, versioned and not (as chat's), and their route.
PATHS = {f"{prefix}/{route}": route for route in ROUTES for prefix in ("/v1", "")}


def route_handler(route: str) -> api.Handler:
    """The aiohttp handler of ``POST /v1/<route>``."""
    answer = functools.partial(answer_route, route)

    async def serve(request: web.Request) -> web.StreamResponse:
        return await api.answered(request, answer)

    serve.__doc__ = f"``POST /v1/{route}``: one approach's ``{route}(call)``, behind the request gate."
    return serve


def add_routes(app: web.Application) -> None:
    """Register every path of :data:`PATHS`."""
    for path, route in PATHS.items():
        app.router.add_post(path, route_handler(route))


def serving_approach(chain: tuple[str, ...], approaches: dict[str, Any], default: str) -> str:
    """The slug of the approach that serves a route for ``chain``: its innermost layer if terminal, else the base."""
    if getattr(approaches[chain[-1]], "terminal", False):
        return chain[-1]
    return default if getattr(approaches.get(default), "terminal", False) else "none"


def validate_route_request(route: str, data: Any) -> None:
    """Raise a 400 for a body the route cannot use: not an object, no ``model``, no ``input``/``prompt``, bad types."""
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}", code="invalid_request")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "'model' is required and must be a non-empty string", code="invalid_request")
    field = ROUTES[route]
    if data.get(field) is None:
        raise ApiError(400, f"'{field}' is required for /v1/{route}", code="invalid_request")
    for name in ("stream", "stream_options", "n", "max_tokens", "user"):
        value = data.get(name)
        types, label = FIELD_TYPES[name]
        if value is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            raise ApiError(400, f"'{name}' must be {label}, got {type(value).__name__}", code="invalid_request")


async def answer_route(route: str, app: web.Application, raw: bytes, head: Head, served: Served) -> Reply:
    """Check, parse, admit and run one request of ``route``; every failure an OpenAI-shaped error."""
    approaches = app[APPROACHES]
    try:
        client, data = admitted_body(raw, head, served)
        validate_route_request(route, data)
        options = app[OPTIONS]
        chain = resolve_chain(data, approaches, options.approach, app[ALLOWED])
        extra = host_fields(app, data)
        slug = serving_approach(chain, approaches, options.approach)
        serve = getattr(approaches[slug], route, None)
        if serve is None:
            able = sorted(s for s, a in approaches.items() if getattr(a, route, None) is not None)
            raise ApiError(400, f"approach {slug!r} does not serve /v1/{route}; approaches that do: {', '.join(able)}",
                           code="unsupported_route")
        # a gateway key is never sent upstream: with client keys on, the bearer token is the gateway's
        api_key = None if served.keys_required else bearer(head.authorization)
        stream = route == "completions" and data.get("stream") is True
        call = Call(request=data, extra=extra, stream=stream, client=None, app=app, approaches=approaches,
                    api_key=api_key, chain=(slug,), allowed=app[ALLOWED])
        ticket = served.admit(client, GateRequest(data, (slug,), stream, head.client_ip, served.request_id,
                                                        head.cache_control or "", extra, route=route))
        if inspect.isawaitable(ticket):  # the gate's state is shared (Redis): admission is a round trip
            ticket = await ticket
        if ticket is not None:  # the upstream call reports its usage to it
            call = call.replace(ticket=ticket)
        answer = served.cached()
        return await reply_of(answer if answer is not None else await serve(call), served)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-shaped error
        return error_reply(exc, {}, served.request_id)
