"""Turn what an approach returns into HTTP bodies: JSON or SSE bytes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from hulumanage.errors import error_payload

DONE = b"data: [DONE]\n\n"
JSON_HEADERS = {"Content-Type": "application/json"}


def is_raw(result: Any) -> bool:
    """True for a duck-typed raw response (``status``, ``body: bytes``, ``headers``)."""
    return isinstance(getattr(result, "body", None), bytes) and isinstance(getattr(result, "status", None), int)


def is_stream(result: Any) -> bool:
    """True when the approach returned an async iterator of chunks."""
    return hasattr(result, "__aiter__")


def to_jsonable(obj: Any) -> Any:
    """A dict for a completion or chunk (pydantic models are dumped)."""
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(mode="json", exclude_unset=True)
    return obj


def completion_body(result: Any) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) for a non-streaming result."""
    if is_raw(result):
        headers = {k: v for k, v in result.headers.items() if k.lower() in ("content-type", "retry-after")}
        headers.setdefault("Content-Type", "application/json")
        return result.status, result.body, headers
    return 200, orjson.dumps(to_jsonable(result)), dict(JSON_HEADERS)


def sse_event(chunk: Any) -> bytes:
    """One chunk as SSE bytes: bytes pass through untouched, objects become a ``data:`` event."""
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    return b"data: " + orjson.dumps(to_jsonable(chunk)) + b"\n\n"


def error_event(exc: BaseException) -> bytes:
    """The SSE event that ends a stream which failed after it started."""
    _status, payload, _headers = error_payload(exc)
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def sse_stream(first: Any, rest: AsyncIterator[Any]) -> AsyncGenerator[bytes, None]:
    """SSE bytes for a stream whose first chunk was already taken.

    Object chunks get a closing ``data: [DONE]``; an iterator of bytes is a
    relayed SSE stream that carries its own. An error after the start becomes
    an SSE error event and the stream ends without ``[DONE]``.
    """
    raw = isinstance(first, bytes | bytearray | memoryview)
    yield sse_event(first)
    try:
        async for chunk in rest:
            yield sse_event(chunk)
    except Exception as exc:  # noqa: BLE001 - reported to the client in-band
        yield error_event(exc)
        return
    if not raw:
        yield DONE


async def sse_writes(first: Any, rest: AsyncIterator[Any]) -> AsyncGenerator[tuple[bytes, bool], None]:
    """The SSE body of a stream as writes, ``(bytes, last)``, for a server to put on the wire.

    One write per event, except ``[DONE]``: it is held back and goes out with the end of
    the body (one write, one packet). The last write may be empty; no other one is.
    """
    held = b""
    async with contextlib.aclosing(sse_stream(first, rest)) as parts:
        async for part in parts:
            if held:
                yield held, False
                held = b""
            if part == DONE:
                held = part
            elif part:
                yield part, False
    yield held, True
