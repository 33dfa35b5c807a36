"""The httpx transport behind composed clients: runs an approach in-process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import orjson

from hulumanage.call import Call
from hulumanage.errors import error_payload
from hulumanage.results import completion_body, is_stream, sse_stream

logger = logging.getLogger(__name__)

HOST_FIELDS = ("hulumanage_approach",)


class _Body(httpx2.AsyncByteStream):
    """An httpx body fed by an async iterator of bytes."""

    def __init__(self, source: AsyncIterator[bytes], on_close: Callable[[], Any] | None = None) -> None:
        self._source = source
        self._on_close = on_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._source:
            yield part

    async def aclose(self) -> None:
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()
        if self._on_close is not None:
            result = self._on_close()
            if hasattr(result, "__await__"):
                await result


class ApproachTransport(httpx2.AsyncBaseTransport):
    """An httpx transport that answers ``POST .../chat/completions`` by running an approach."""

    def __init__(self, make_call: Callable[[dict[str, Any]], tuple[Any, Call]]) -> None:
        self._make_call = make_call

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Run the layer's approach on the SDK's request and answer like a server would."""
        if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
            return _error_response(404, f"{request.method} {request.url.path} is not served by an approach layer")
        body = orjson.loads(await request.aread())
        for field in HOST_FIELDS:
            body.pop(field, None)
        approach: Any = None
        try:
            approach, call = self._make_call(body)  # may refuse: over --max-fanout
            result = await approach.run(call)
            if is_stream(result):
                iterator = aiter(result)
                try:
                    first = await anext(iterator)
                except StopAsyncIteration:
                    first = b""
                return httpx2.Response(
                    200,
                    headers={"content-type": "text/event-stream"},
                    stream=_Body(sse_stream(first, iterator), getattr(iterator, "aclose", None)),
                )
        except Exception as exc:
            status, payload, headers = error_payload(exc)
            if status == 500:
                logger.exception("approach %r failed inside a composed call", getattr(approach, "slug", "?"))
            return httpx2.Response(status, headers={"content-type": "application/json", **headers}, content=orjson.dumps(payload))
        status, content, headers = completion_body(result)
        return httpx2.Response(status, headers=headers, content=content)


def _error_response(status: int, message: str) -> httpx2.Response:
    return httpx2.Response(
        status,
        headers={"content-type": "application/json"},
        content=orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "code": None}}),
    )
