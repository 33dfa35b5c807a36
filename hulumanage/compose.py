"""Composition: an ``openai.AsyncOpenAI`` whose calls run an approach in-process.

``a&b-model`` runs ``a`` with a client whose ``chat.completions.create`` runs
``b``. The client is a real SDK client on an httpx transport that calls the
next layer's approach directly, so an approach cannot tell it apart from a
client of a remote server, streaming and errors included.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx2
import openai
import orjson

from hulumanage.call import Call
from hulumanage.errors import error_payload
from hulumanage.results import completion_body, is_stream, sse_stream

logger = logging.getLogger(__name__)

HOST_FIELDS = ("hulumanage_approach",)


class LazyClient:
    """Stands for an ``openai.AsyncOpenAI``; builds it on first use.

    The direct proxy path never touches its client, so it never pays for one.
    """

    __slots__ = ("_factory", "_client")

    def __init__(self, factory: Callable[[], openai.AsyncOpenAI]) -> None:
        self._factory = factory
        self._client: openai.AsyncOpenAI | None = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._factory()
        return getattr(self._client, name)


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
        approach, call = self._make_call(body)
        try:
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
        except Exception as exc:  # noqa: BLE001 - becomes the HTTP error the SDK raises
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


def layer_client(
    chain: tuple[str, ...],
    *,
    approaches: Mapping[str, Any],
    base: str,
    app: Any,
    extra: dict[str, Any],
    api_key: str | None,
    full_chain: tuple[str, ...],
) -> LazyClient:
    """A client whose calls run ``chain[0]`` (with deeper layers below it), or ``base`` when empty."""
    slug, rest = (chain[0], chain[1:]) if chain else (base, ())

    def make_call(body: dict[str, Any]) -> tuple[Any, Call]:
        approach = approaches[slug]
        call = Call(
            request=body,
            extra=extra,
            stream=body.get("stream") is True,
            client=layer_client(
                rest, approaches=approaches, base=base, app=app, extra=extra, api_key=api_key, full_chain=full_chain
            ),
            app=app,
            approaches=approaches,
            api_key=api_key,
            chain=full_chain,
        )
        return approach, call

    def factory() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=api_key or "unused",
            base_url=f"http://layer.{slug}.invalid/v1",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=ApproachTransport(make_call)),
        )

    return LazyClient(factory)
