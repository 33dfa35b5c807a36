"""A client that behaves like ``openai.AsyncOpenAI`` and is backed by the provider pool.

Wrapped approaches (``proxy_wrap: moa``, ``bon&proxy-gpt-4``) get a real SDK client
whose HTTP transport hands each request to the pool instead of the network, so
every call they make gets routing, failover, model mapping, limits and health.

The transport, its body and ``_payload`` are small deliberate copies of the host's own
(docs/internals.md, "Deliberate copies"): the plugin imports nothing from any host.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
import openai
import orjson

from proxy_plugin.errors import ProxyError
from proxy_plugin.runtime import ProxyRuntime

logger = logging.getLogger(__name__)

HOST_FIELDS = frozenset({"hulumanage_approach"})

#: The wrapped request's call (its ``fanout`` counter, with ``take()``, and its gate ``ticket``),
#: set by ``ProxyApproach`` before the wrapped approach runs: the shared pool client has no
#: per-request state of its own, and a context variable follows the request into its calls.
WRAPPED_CALL: contextvars.ContextVar[Any] = contextvars.ContextVar("proxy_wrapped_call", default=None)


class _SSEBody(httpx2.AsyncByteStream):
    """An httpx body that relays a pool stream; closing it closes the upstream."""

    def __init__(self, first: bytes, rest: AsyncIterator[bytes]) -> None:
        self._first = first
        self._rest = rest

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._first
        try:
            async for part in self._rest:
                yield part
        except ProxyError as exc:
            yield b"data: " + orjson.dumps(_payload(exc)) + b"\n\n"

    async def aclose(self) -> None:
        await self._rest.aclose()  # type: ignore[attr-defined]


def _payload(exc: ProxyError) -> dict[str, Any]:
    if exc.body and isinstance(exc.body.get("error"), Mapping):
        return {"error": dict(exc.body["error"])}
    return {"error": {"message": exc.message, "type": exc.type, "code": exc.code}}


def _error(exc: ProxyError) -> httpx2.Response:
    return httpx2.Response(exc.status_code, headers={"content-type": "application/json", **exc.headers},
                           content=orjson.dumps(_payload(exc)))


class PoolTransport(httpx2.AsyncBaseTransport):
    """Answers the SDK's ``POST /chat/completions`` from the pool."""

    def __init__(self, runtime: ProxyRuntime, strip: frozenset[str]) -> None:
        self._runtime = runtime
        self._strip = strip

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send the request through the pool; relay bytes (and SSE) back to the SDK."""
        if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
            return _error(ProxyError(404, f"{request.method} {request.url.path} is not available through the proxy pool",
                                     "invalid_request_error", "not_found"))
        call = WRAPPED_CALL.get()
        fanout = getattr(call, "fanout", None)
        if fanout is not None:
            try:
                fanout.take()  # past the host's cap: its own 400, relayed like any error
            except Exception as exc:  # any host's error with an integer status becomes the SDK's error
                status = getattr(exc, "status_code", None)
                if not isinstance(status, int):
                    raise
                return _error(ProxyError(status, str(getattr(exc, "message", exc)), "invalid_request_error",
                                         getattr(exc, "code", None)))
        body = orjson.loads(await request.aread())
        for name in self._strip.intersection(body):
            del body[name]  # approach parameters never go upstream
        pool = self._runtime.current
        try:
            if body.get("stream") is True:
                parts = pool.stream(body, getattr(call, "ticket", None))
                first = await anext(parts)
                return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=_SSEBody(first, parts))
            response = await pool.complete(body, getattr(call, "ticket", None))
        except ProxyError as exc:
            return _error(exc)
        return httpx2.Response(response.status, headers=response.headers, content=response.body)


def pool_client(runtime: ProxyRuntime, approaches: Mapping[str, Any]) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` whose chat completions go through ``runtime``'s pool.

    One per runtime, built on first use and shared by every wrapped request (building one
    per request was a measurable cost): it keeps no per-request state, and each call it makes goes to
    the pool that is current then, so a reload applies to it at once.
    """
    if runtime.wrap_client is None:
        runtime.wrap_client = _new_pool_client(runtime, approaches)
    client: openai.AsyncOpenAI = runtime.wrap_client
    return client


def _new_pool_client(runtime: ProxyRuntime, approaches: Mapping[str, Any]) -> openai.AsyncOpenAI:
    strip = frozenset(HOST_FIELDS.union(*(getattr(a, "params", {}) or {} for a in approaches.values())))
    return openai.AsyncOpenAI(
        api_key="proxy-pool",
        base_url="http://proxy-pool.invalid/v1",
        max_retries=0,  # the pool is the only retry loop
        http_client=httpx2.AsyncClient(transport=PoolTransport(runtime, strip), timeout=None),
    )
