"""The request gate as the host sees it: one gate for every request, whatever the approach.

A plugin offers the gate through the ``request_gate(app)`` hook, asked once when the
server has started (after every ``lifespan``); the host calls it from ``chat.chat_reply``,
which both front ends share, so the fast path stays on and no approach can bypass it.
The gate's objects are duck-typed (the plugin imports nothing from the host):

Chat requests and the pass-through routes (``/v1/embeddings``, ``/v1/completions``:
:mod:`hulumanage.passthrough`) go through it alike; the request's ``route`` says which.

``gate``
    ``keys_required`` (bool: clients authenticate; their bearer token is the gateway's and
    never goes upstream), ``authenticate(api_key, client_ip) -> client`` (raise an error
    with ``status_code`` to refuse, e.g. 401), ``admit(client, request) -> ticket`` (or an
    awaitable of one; raise to refuse, e.g. 403 or 429 with ``headers``).
``ticket`` (one per admitted request)
    ``answer`` (None, or the gate's own answer, e.g. a cache hit: a raw response or an
    async iterator of SSE bytes; no approach runs then), ``headers() -> dict`` (extra
    response headers, asked when the response head is built), ``record(provider, model,
    usage)`` (terminal approaches report every upstream answer's usage), ``tap`` (None, or
    a callable given every body part the client gets), ``finish(status, complete, ttft,
    total)`` (once, when the response has ended or the client left), ``log_fields() ->
    dict`` (what the access log adds: client, provider, tokens, cost, cache result).

``request`` (:class:`GateRequest`)
    ``body``, ``chain``, ``extra``, ``stream``, ``client_ip``, ``request_id``,
    ``cache_control``, ``fanout``, ``route``, and ``memo``: None, or a dict the gate may
    fill with what it derives from the body alone; the host hands the same dict with the
    same (unchanged) body when the same bytes come again.

``gate.refused(status, chain, model, total)`` (optional) hears of a request that ended without a
ticket (refused by ``authenticate`` or ``admit``, or invalid before it), so that a
gate's metrics count every request.

The access log (logger ``hulumanage.access``, one JSON line per request at INFO) is the
host's: it is written here, with the gate's fields when there is a gate. Without
``--access-log`` its lines go where the other logs go (stderr, when the level is INFO or
DEBUG); with ``--access-log PATH`` or ``-`` (stdout) they go there alone, at INFO whatever
the level, and no longer to stderr (:func:`access_log_to`).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from hulumanage.results import sse_event

access_log = logging.getLogger("hulumanage.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: new request ids: 12 random hex digits per process, then a count (24 hex digits, unique, no syscall a request)
_ID_PREFIX = secrets.token_hex(6)
_ID_COUNT = itertools.count(int.from_bytes(secrets.token_bytes(4)))


def access_log_to(target: str) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` sending the access log to ``target`` (a file, or ``-``: stdout) while the app runs.

    The lines are the JSON alone, at INFO whatever ``--log-level`` says, and stop going to
    the root logger's handlers (stderr): a file access log does not double as console noise.
    """
    async def ctx(_app: Any) -> AsyncIterator[None]:
        handler = logging.StreamHandler(sys.stdout) if target == "-" else logging.FileHandler(target, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
        try:
            yield
        finally:
            access_log.removeHandler(handler)
            if not access_log.handlers:
                access_log.propagate = True
                access_log.setLevel(logging.NOTSET)
            handler.close()

    return ctx


def request_id(given: str | None) -> str:
    """The client's ``x-request-id`` when it is 1-128 of ``A-Za-z0-9._:-``, else a new one."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_ID_COUNT) & 0xFFFFFFFFFFFF:012x}"


class GateRequest:
    """What the gate is told of a request: its body, approach chain and parameters, stream flag, client, headers."""

    __slots__ = ("body", "cache_control", "chain", "client_ip", "extra", "fanout", "memo", "request_id", "route",
                 "stream")

    def __init__(self, body: dict[str, Any], chain: tuple[str, ...], stream: bool, client_ip: str, rid: str,
                 cache_control: str, extra: dict[str, Any] | None = None, fanout: int = 1,
                 route: str = "chat", memo: dict[Any, Any] | None = None) -> None:
        self.body = body          # as the client sent it, the approach prefix stripped from ``model``
        self.chain = chain
        self.extra = {} if extra is None else extra  # the approach parameters taken from the body (``Call.extra``)
        self.stream = stream
        self.client_ip = client_ip
        self.request_id = rid
        self.cache_control = cache_control
        self.fanout = fanout      # the upstream calls its approaches declare at most (bon: 2 per sample): what to reserve
        self.route = route        # "chat", "embeddings" or "completions" (hulumanage/passthrough.py)
        # None, or a dict that lives as long as this exact body (the same bytes, parsed once, never changed:
        # hulumanage.chat.HitLane), where the gate may keep what it derives from the body (a cache key)
        self.memo = memo


class Served:
    """One request's passage through the gate and the access log (a no-op without either)."""

    __slots__ = ("chain", "client_ip", "gate", "model", "request_id", "started", "status", "ticket", "ttft")

    def __init__(self, gate: Any, rid: str, started: float, client_ip: str) -> None:
        self.gate = gate
        self.client_ip = client_ip
        self.request_id = rid
        self.started = started
        self.ticket: Any = None
        self.ttft: float | None = None
        self.chain: tuple[str, ...] = ()
        self.model: str | None = None
        self.status = 0

    @property
    def keys_required(self) -> bool:
        """Whether clients authenticate with gateway keys (which then never go upstream)."""
        return self.gate is not None and bool(self.gate.keys_required)

    def authenticate(self, api_key: str | None, client_ip: str) -> Any:
        """Who is calling (the gate decides; None without a gate)."""
        return None if self.gate is None else self.gate.authenticate(api_key, client_ip)

    def admit(self, client: Any, request: GateRequest) -> Any:
        """The gate's ticket for the request (None without a gate), or an awaitable of it when the gate's
        state is shared (Redis); raises the gate's refusal. Synchronous on the usual path: no coroutine a request."""
        self.chain = request.chain
        self.model = request.body.get("model")
        if self.gate is None:
            return None
        ticket = self.gate.admit(client, request)
        if inspect.isawaitable(ticket):
            return self._admitted(ticket)
        self.ticket = ticket
        return ticket

    async def _admitted(self, pending: Any) -> Any:
        self.ticket = ticket = await pending
        return ticket

    def cached(self) -> Any:
        """The gate's own answer (a cache hit), or None."""
        return None if self.ticket is None else self.ticket.answer

    def first_chunk(self, first: Any) -> None:
        """A stream's first chunk is in: time to first token, and the tap sees it."""
        self.ttft = time.perf_counter() - self.started
        tap = None if self.ticket is None else self.ticket.tap
        if tap is not None:
            tap(sse_event(first))

    def headers(self) -> dict[str, str]:
        """Extra response headers from the gate (rate limits, cache result, who answered)."""
        return {} if self.ticket is None else self.ticket.headers()

    def finished(self, status: int, body: bytes | None = None, complete: bool = True) -> None:
        """The response has ended: the gate settles, the access log gets its line (once)."""
        if self.status:
            return
        self.status = status
        total = time.perf_counter() - self.started
        ticket = self.ticket
        if ticket is not None:
            if body is not None and ticket.tap is not None:
                ticket.tap(body)
            ticket.finish(status, complete, self.ttft, total)
        elif self.gate is not None:
            refused = getattr(self.gate, "refused", None)
            if refused is not None:
                refused(status, self.chain, self.model, total)
        if access_log.isEnabledFor(logging.INFO):
            self._log(total, complete)

    def watch(self, rest: Any) -> Any:
        """``rest`` of a stream, seen by the gate and the access log as it goes out."""
        if self.ticket is None and not access_log.isEnabledFor(logging.INFO):
            return rest
        return Watched(self, rest)

    def finished_once(self, status: int, complete: bool) -> None:
        """:meth:`finished`, unless the request already finished (a request cancelled midway, a stream closed twice)."""
        if not self.status:
            self.finished(status, None, complete)

    def _log(self, total: float, complete: bool) -> None:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request_id": self.request_id,
            "client": self.client_ip,
            "approach": "&".join(self.chain) or None,
            "model": self.model,
            "status": self.status,
            "total_ms": round(total * 1000, 2),
            "ttft_ms": None if self.ttft is None else round(self.ttft * 1000, 2),
            "complete": complete,
        }
        if self.ticket is not None:
            line.update(self.ticket.log_fields())
        access_log.info("%s", orjson.dumps(line).decode())


class Watched:
    """A stream's rest as the client gets it: the gate's tap sees each chunk, and the request is settled
    exactly once when the stream ends, breaks or is closed, even closed before its first chunk was asked for
    (an async generator that never started would skip its ``finally``)."""

    __slots__ = ("complete", "rest", "served", "tap")

    def __init__(self, served: Served, rest: AsyncIterator[Any]) -> None:
        self.served = served
        self.rest = rest
        self.tap = None if served.ticket is None else served.ticket.tap
        self.complete = False

    def __aiter__(self) -> Watched:
        """Itself."""
        return self

    async def __anext__(self) -> Any:
        """The next chunk; at the end, or on an error, the request is settled."""
        try:
            chunk = await anext(self.rest)
        except StopAsyncIteration:
            self.complete = True
            await self.aclose()
            raise
        except BaseException:
            await self.aclose()
            raise
        if self.tap is not None:
            self.tap(sse_event(chunk))
        return chunk

    async def aclose(self) -> None:
        """Close the approach's stream (its upstream goes back or closes) and settle the request."""
        try:
            aclose = getattr(self.rest, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self.served.finished_once(200, self.complete)
