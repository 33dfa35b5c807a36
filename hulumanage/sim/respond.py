"""How a simulated provider plays one behaviour on the wire, and the signals that wake it.

:class:`Gate` holds a provider's wake-up signals (close, release_hangs) and its
running handlers; :func:`respond` turns a :class:`Behaviour` into aiohttp responses,
dropped connections and silences.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from hulumanage.sim import payload
from hulumanage.sim.behaviour import Behaviour

__all__ = ["Gate", "check_request", "drop", "error_response", "respond"]


async def _wait(event: asyncio.Event, seconds: float | None) -> None:
    """Wait until ``event`` is set or ``seconds`` have passed (None: no limit)."""
    if event.is_set():
        return
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass


class Gate:
    """A provider's running chat handlers and the signals that cut their waits short."""

    def __init__(self) -> None:
        """No handler running, nothing released, not closed."""
        self.closed = False
        self._closing = asyncio.Event()
        self._release = asyncio.Event()
        self._active: dict[int, web.BaseRequest] = {}  # id(request) -> request
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self, request: web.BaseRequest) -> None:
        """Track a running handler so :meth:`close` can abort it."""
        self._active[id(request)] = request
        self._idle.clear()

    def leave(self, request: web.BaseRequest) -> None:
        """Untrack a handler."""
        self._active.pop(id(request), None)
        if not self._active:
            self._idle.set()

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless closed first; False if closed."""
        if seconds > 0:
            await _wait(self._closing, seconds)
        return not self.closed

    async def hold(self, cap: float | None) -> bool:
        """Wait for :meth:`release` or ``cap`` seconds (None: no cap); False if closed."""
        await _wait(self._release, cap)
        return not self.closed

    def release(self) -> None:
        """Wake every handler in :meth:`hold` now; later holds wait again."""
        self._release.set()
        self._release = asyncio.Event()

    async def close(self, timeout: float) -> None:
        """Wake every wait, abort every running handler's connection, await them (``timeout``)."""
        self.closed = True
        self._closing.set()
        self._release.set()
        for request in list(self._active.values()):
            drop(request)
        await _wait(self._idle, timeout)


def drop(request: web.BaseRequest) -> web.StreamResponse:
    """Abort the request's TCP connection; the returned response is never sent."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response()


def error_response(
    status: int,
    message: str | None,
    type: str | None,
    code: str | None,
    headers: Mapping[str, str],
) -> web.Response:
    """An OpenAI-shaped JSON error response."""
    return web.json_response(payload.error_body(status, message, type, code), status=status, headers=headers)


def _seconds(value: float) -> str:
    """Format a Retry-After number: ``7`` for whole seconds, else ``0.5``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def check_request(body: Any) -> str | None:
    """What is wrong with a chat request body, or None if it is usable."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "You must provide a model parameter."
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "'messages' must be a non-empty array."
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        return "'n' must be an integer from 1 to 128."
    return None


async def respond(
    request: web.BaseRequest,
    body: dict[str, Any],
    b: Behaviour,
    answer: payload.Answer,
    gate: Gate,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """Answer one checked chat request with behaviour ``b`` (not ``down``: the provider's job)."""
    if b.name == "reset":
        return drop(request)
    if not await gate.pause(b.latency):
        return drop(request)
    if b.name == "error":
        extra = dict(headers)
        extra.update(b.headers)
        if b.retry_after is not None:
            value = b.retry_after
            extra["Retry-After"] = value if isinstance(value, str) else _seconds(value)
        return error_response(b.status, b.message, b.error_type, b.code, extra)
    stream = body.get("stream") is True
    if (b.name == "hang" or (b.name == "stall" and not stream)) and not await gate.hold(b.seconds):
        return drop(request)
    if stream:
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        return await _stream(request, answer, b, usage, gate, headers)
    if b.name == "slow_first_token" and not await gate.pause(b.seconds or 0.0):
        return drop(request)
    if b.name == "malformed":
        return web.Response(body=b"{not json", content_type="application/json", headers=headers)
    data = json.dumps(payload.completion(answer)).encode()
    if b.name == "cut":
        resp = web.StreamResponse(headers=headers)
        resp.content_type = "application/json"
        resp.content_length = len(data)
        await resp.prepare(request)  # status line and headers go out at once
        return drop(request)
    return web.Response(body=data, content_type="application/json", headers=headers)


def _events(answer: payload.Answer, b: Behaviour, usage: bool) -> tuple[list[bytes], int]:
    """The SSE events of ``answer`` under ``b``, and the index where cut/stall strike (-1: none)."""
    head, tail = payload.stream_chunks(answer)
    events = [payload.sse(c) for c in head]
    # cut/stall: after the role chunks and b.chunks content chunks, never past the content.
    stop_at = min(answer.n + b.chunks, len(events)) if b.name in ("cut", "stall") else -1
    events += [payload.sse(c) for c in tail]
    if usage:
        events.append(payload.sse(payload.usage_chunk(answer)))
    if b.name != "no_done":
        events.append(payload.DONE)
    if b.name == "malformed":
        events.insert(min(b.chunks, len(events)), payload.MALFORMED)
    return events, stop_at


async def _stream(
    request: web.BaseRequest,
    answer: payload.Answer,
    b: Behaviour,
    usage: bool,
    gate: Gate,
    headers: Iterable[tuple[str, str]] | Mapping[str, str],
) -> web.StreamResponse:
    """Send ``answer`` as SSE, applying the streaming faults of ``b``."""
    events, stop_at = _events(answer, b, usage)
    return await write_events(request, events, stop_at, b, gate, headers)


async def write_events(
    request: web.BaseRequest,
    events: list[bytes],
    stop_at: int,
    b: Behaviour,
    gate: Gate,
    headers: Iterable[tuple[str, str]] | Mapping[str, str],
) -> web.StreamResponse:
    """Send SSE ``events``, applying the streaming faults of ``b`` (cut or stall at ``stop_at``, gaps)."""
    resp = web.StreamResponse(headers=headers)
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    resp.content_type = "text/event-stream"
    try:
        await resp.prepare(request)
        if b.name == "slow_first_token" and not await gate.pause(b.seconds or 0.0):
            return drop(request)
        for i, event in enumerate(events):
            if i == stop_at and (b.name == "cut" or not await gate.hold(None)):
                return drop(request)
            if i and b.chunk_gap and not await gate.pause(b.chunk_gap):
                return drop(request)
            await resp.write(event)
        await resp.write_eof()
    except ConnectionError:
        pass  # the client went away mid-stream
    return resp
