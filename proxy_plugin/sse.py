"""Reading server-sent events from an upstream response, one event at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

DONE_PAYLOAD = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


async def data_events(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Yield the payload of each SSE ``data:`` event (multi-line data joined by ``\\n``).

    Comments (``: keep-alive``) and other fields are dropped. A final event
    without its blank line is still yielded at EOF.
    """
    lines: list[bytes] = []
    readline = content.readline
    while True:
        line = await readline()
        if not line:
            if lines:
                yield b"\n".join(lines)
            return
        if line[:5] == b"data:":
            value = line[5:].rstrip(b"\r\n")
            lines.append(value[1:] if value[:1] == b" " else value)
        elif line in (b"\n", b"\r\n"):
            if lines:
                yield lines[0] if len(lines) == 1 else b"\n".join(lines)
                lines = []


def event(payload: bytes) -> bytes:
    """One SSE data event."""
    return b"data: " + payload + b"\n\n"
