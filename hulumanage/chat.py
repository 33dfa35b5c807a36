"""One chat completion request, from its bytes to its answer, for both front ends.

``chat_reply`` is everything between a request's bytes and its response: the cross-site
checks (``guard.py``), the request id, the request gate (who calls, may they, how much:
:mod:`hulumanage.gate`), parse once, validate, pick the approach chain, run it. The
aiohttp route (``api.py``) and the fast path (``fastpath.py``) both call it, so both
answer alike. Every failure becomes an OpenAI-shaped error answer.

The hit lane (:class:`HitLane`): a body the gate answered itself (a cache hit) is kept,
parsed and resolved, under its exact bytes, so the next request with the same bytes skips
parsing, validation, the chain and the fan-out (they depend on the bytes alone) and goes
straight to the gate, still after authentication and the content type, and still through
the gate's limits and its ``Cache-Control`` rules. When the gate does not answer it this
time, the request takes the whole path from its bytes, already admitted.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, NamedTuple, Protocol

import orjson
from aiohttp import web

from hulumanage.appkeys import ALLOWED, APPROACHES, GATE, GUARD, HIT_LANE, OPTIONS, PARAMS
from hulumanage.call import Call
from hulumanage.chain import bearer, resolve_chain
from hulumanage.compose import Fanout, declared_fanout, fanout_error, layer_client
from hulumanage.errors import ApiError, error_payload
from hulumanage.gate import GateRequest, Served, request_id
from hulumanage.guard import content_type_refusal
from hulumanage.results import completion_body, is_stream
from hulumanage.validate import check_depth, validate_request

logger = logging.getLogger(__name__)

__all__ = ["Answer", "Head", "HitLane", "Streamed", "chat_reply", "close_stream", "error_reply"]


class Head(Protocol):
    """What ``chat_reply`` reads of a request's head (the fast path's parsed request is one)."""

    authorization: str
    content_type: str | None
    origin: str | None
    request_id: str | None
    cache_control: str | None
    client_ip: str


class AiohttpHead:
    """A :class:`Head` from an aiohttp request."""

    __slots__ = ("authorization", "cache_control", "client_ip", "content_type", "origin", "request_id")

    def __init__(self, request: web.Request) -> None:
        headers = request.headers
        self.authorization = headers.get("Authorization", "")
        self.content_type = headers.get("Content-Type")
        self.origin = headers.get("Origin")
        self.request_id = headers.get("X-Request-Id")
        self.cache_control = headers.get("Cache-Control")
        self.client_ip = request.remote or ""


class Streamed(NamedTuple):
    """A streaming answer: its first chunk (already produced), the iterator of the rest, and
    headers beyond the SSE ones (request id, CORS, what the gate adds)."""

    first: Any
    rest: Any
    headers: dict[str, str]


Reply = tuple[int, bytes, dict[str, str]] | Streamed


class Answer(Protocol):
    """What answers one request once its cross-site checks passed: ``_answer`` for chat (the default)."""

    async def __call__(self, app: web.Application, raw: bytes, head: Head, served: Served) -> Reply: ...


async def chat_reply(app: web.Application, raw: bytes, head: Head, answer: Answer | None = None) -> Reply:
    """A chat completion request body in, an answer out: (status, JSON body, headers) or a stream.

    ``answer`` serves another route the same way (:mod:`hulumanage.passthrough`): the same
    checks, request id, gate, access log and headers around it.
    """
    started = time.perf_counter()
    rid = request_id(head.request_id)
    origin = head.origin
    guard = app[GUARD]
    refusal = guard.origin_refusal(origin)
    if refusal is not None:
        return error_reply(refusal, {"x-request-id": rid}, rid)
    extra_headers = {"x-request-id": rid}
    if origin is not None:
        extra_headers.update(guard.cors_headers(origin))
    served = Served(app.get(GATE), rid, started, head.client_ip)
    try:
        reply = await (_answer if answer is None else answer)(app, raw, head, served)
    except BaseException:  # the client left (cancelled) before an answer: what was reserved is given back
        served.finished_once(499, False)
        raise
    if isinstance(reply, Streamed):
        headers = {**reply.headers, **extra_headers, **served.headers()}
        return Streamed(reply.first, served.watch(reply.rest), headers)
    status, body, headers = reply
    served.finished(status, body)
    return status, body, {**headers, **extra_headers, **served.headers()}


class Prepared(NamedTuple):
    """A chat body parsed, validated and resolved: what depends on its bytes alone."""

    data: dict[str, Any]
    chain: tuple[str, ...]
    extra: dict[str, Any]
    stream: bool
    fanout: Fanout
    calls: int                 # what the gate reserves for
    memo: dict[Any, Any]       # the gate's own values derived from this body (GateRequest.memo)

    def gate_request(self, head: Head, rid: str) -> GateRequest:
        return GateRequest(self.data, self.chain, self.stream, head.client_ip, rid, head.cache_control or "",
                           self.extra, self.calls, memo=self.memo)


class HitLane:
    """Bodies the gate answered itself, by their exact bytes (see the module docstring).

    Bounded: :data:`ENTRIES` bodies of at most :data:`MAX_BYTES` bytes, the oldest out first.
    Empty until the gate answers a request (with the cache off, a request pays one truth test).
    """

    ENTRIES = 128
    MAX_BYTES = 8192

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[bytes, Prepared] = {}

    def get(self, raw: bytes) -> Prepared | None:
        entries = self.entries
        return entries.get(raw) if entries and len(raw) <= self.MAX_BYTES else None

    def keep(self, raw: bytes, prepared: Prepared) -> None:
        if len(raw) > self.MAX_BYTES:
            return
        entries = self.entries
        if len(entries) >= self.ENTRIES:
            del entries[next(iter(entries))]
        entries[raw] = prepared

    def forget(self, raw: bytes) -> None:
        self.entries.pop(raw, None)


def _prepare(app: web.Application, raw: bytes) -> Prepared:
    """Parse, validate, pick the chain and the gate's reservation: every check that depends on the bytes alone."""
    data = parsed_body(raw)
    validate_request(data)
    options = app[OPTIONS]
    approaches = app[APPROACHES]
    allowed = app[ALLOWED]
    chain = resolve_chain(data, approaches, options.approach, allowed)
    extra = host_fields(app, data)
    limit = options.max_fanout
    fanout = Fanout(limit)
    stream = data.get("stream") is True
    # the layers declare their fan-out from the request alone: the call's client comes after admission
    declared = Call(request=data, extra=extra, stream=stream, client=None, app=app, approaches=approaches,
                    api_key=None, chain=chain, allowed=allowed, fanout=fanout)
    worst, how = declared_fanout(chain, approaches, declared)
    if worst > limit:
        raise fanout_error(limit, f"this request could make {worst} upstream calls ({how})")
    # what the gate reserves for (budgets, tokens): the declared calls, or the cap when a layer declares none
    calls = limit if any(_undeclared(approaches[slug]) for slug in chain) else worst
    return Prepared(data, chain, extra, stream, fanout, calls, {})


async def _answer(app: web.Application, raw: bytes, head: Head, served: Served) -> Reply:
    """Check, parse, admit and run one request; every failure an OpenAI-shaped error."""
    try:
        client = admitted_client(raw, head, served)
        lane: HitLane = app[HIT_LANE]
        prepared = lane.get(raw)
        laned = prepared is not None  # the gate answered these bytes before: straight to it
        if prepared is None:
            prepared = _prepare(app, raw)
        ticket = served.admit(client, prepared.gate_request(head, served.request_id))
        if inspect.isawaitable(ticket):  # the gate's state is shared (Redis): admission is a round trip
            ticket = await ticket
        answer = served.cached()
        if answer is not None:  # the gate's own answer (a cache hit): no approach runs
            if not laned:
                lane.keep(raw, prepared)
            return await reply_of(answer, served)
        if laned:  # not this time: the lane's body is never an approach's; the whole path from the bytes
            lane.forget(raw)
            prepared = _prepare(app, raw)
        data, chain, extra, stream, fanout = prepared.data, prepared.chain, prepared.extra, prepared.stream, prepared.fanout
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("request model=%s approach=%s stream=%s", data.get("model"), "&".join(chain), stream)
        approaches = app[APPROACHES]
        options = app[OPTIONS]
        base = options.approach
        if base in chain or not getattr(approaches.get(base), "terminal", False):
            base = "none"
        # a gateway key is never sent upstream: with client keys on, the bearer token is the gateway's
        api_key = None if served.keys_required else bearer(head.authorization)
        allowed = app[ALLOWED]
        # every upstream call of this request reports to the ticket, composed layers too
        call = Call(
            request=data,
            extra=extra,
            stream=stream,
            client=layer_client(
                chain[1:], approaches=approaches, base=base, app=app, extra=extra, api_key=api_key, full_chain=chain,
                fanout=fanout, ticket=ticket,
            ),
            app=app,
            approaches=approaches,
            api_key=api_key,
            chain=chain,
            allowed=allowed,
            fanout=fanout,
            ticket=ticket,
        )
        return await reply_of(await approaches[chain[0]].run(call), served)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-shaped error
        return error_reply(exc, {}, served.request_id)


async def reply_of(result: Any, served: Served) -> Reply:
    """An approach's result as a reply: a JSON answer, or a stream with its first chunk in hand."""
    if not is_stream(result):
        return completion_body(result)
    iterator = aiter(result)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        raise ApiError(502, "the approach produced an empty stream", "server_error", "empty_stream") from None
    served.first_chunk(first)
    return Streamed(first, iterator, {})


def admitted_body(raw: bytes, head: Head, served: Served) -> tuple[Any, Any]:
    """Who calls (the gate's authentication, first), then the body: JSON, not nested too deep.

    The steps every route of the gate takes before its own validation, in the order the
    security guarantees promise: authentication, then the content type, then parsing.
    """
    return admitted_client(raw, head, served), parsed_body(raw)


def admitted_client(raw: bytes, head: Head, served: Served) -> Any:
    """Who calls (the gate's authentication, first), then a body's content type."""
    client = served.authenticate(bearer(head.authorization), head.client_ip)
    if raw:
        refusal = content_type_refusal(head.content_type)
        if refusal is not None:
            raise refusal
    return client


def parsed_body(raw: bytes) -> Any:
    """The body's JSON, not nested too deep."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if isinstance(data, (dict, list)):
        check_depth(data)
    return data


def host_fields(app: web.Application, data: dict[str, Any]) -> dict[str, Any]:
    """The host's own fields taken out of the body: ``hulumanage_approach`` and the approaches' parameters."""
    extra: dict[str, Any] = {}
    if "hulumanage_approach" in data:
        extra["hulumanage_approach"] = data.pop("hulumanage_approach")
    for name in app[PARAMS].intersection(data):
        extra[name] = data.pop(name)
    return extra


def _undeclared(approach: Any) -> bool:
    """A layer that calls its client as often as it likes: non-terminal, and no ``fanout(call)`` declared."""
    return not getattr(approach, "terminal", False) and getattr(approach, "fanout", None) is None


def error_reply(exc: BaseException, headers: dict[str, str] | None = None,
                rid: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """(status, JSON body, headers) of the OpenAI-shaped error for ``exc`` (unexpected ones logged).

    With ``rid``, the error names the request id (``error.request_id``).
    """
    if not isinstance(getattr(exc, "status_code", None), int):
        logger.exception("unexpected error while serving a chat completion (request %s)", rid or "-", exc_info=exc)
    status, payload, extra = error_payload(exc)
    if rid is not None:
        payload["error"]["request_id"] = rid
    return status, orjson.dumps(payload), {"Content-Type": "application/json", **extra, **(headers or {})}


async def close_stream(iterator: Any) -> None:
    """Close an approach's stream iterator (its upstream goes back or closes now)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
