"""Reading server-sent events from an upstream response, one event at a time."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol

DONE_PAYLOAD = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class Readable(Protocol):
    """Anything with ``readany()``: the bytes that arrived since the last call, ``b""`` at the end."""

    readany: Callable[[], Awaitable[bytes]]


async def data_events(content: Readable) -> AsyncGenerator[bytes, None]:
    """Yield the payload of each SSE ``data:`` event (multi-line data joined by ``\\n``).

    Reads whatever the network delivered (one await per read, not per line) and yields
    the events in it one by one, never coalesced. Comments and other fields are
    dropped. A final event without its blank line is still yielded at EOF.
    """
    buf = b""
    readany = content.readany
    while True:
        chunk = await readany()
        if not chunk:
            if buf.strip():
                payload = _payload(buf.rstrip(b"\n"))
                if payload is not None:
                    yield payload
            return
        buf = buf + chunk if buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            payload = _payload(buf[start:end])
            start = end + 2
            if payload is not None:
                yield payload
        buf = buf[start:]


def _payload(block: bytes) -> bytes | None:
    """The data of one event block (None when it has no data field)."""
    if block[:6] == b"data: " and b"\n" not in block:
        return block[6:]
    lines = []
    for line in block.split(b"\n"):
        if line[:5] == b"data:":
            value = line[5:]
            lines.append(value[1:] if value[:1] == b" " else value)
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else b"\n".join(lines)


def event(payload: bytes) -> bytes:
    """One SSE data event."""
    return b"data: " + payload + b"\n\n"
