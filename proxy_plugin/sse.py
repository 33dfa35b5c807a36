"""Reading server-sent events from an upstream response, one event at a time.

``DONE_EVENT`` is the OpenAI wire format's terminator; the host keeps its own copy
(docs/internals.md, "Deliberate copies").
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable
from typing import Protocol

DONE_PAYLOAD = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class Readable(Protocol):
    """Anything with ``readany()``: the bytes that arrived since the last call, ``b""`` at the end."""

    def readany(self) -> Awaitable[bytes]:
        """The bytes that arrived since the last call; ``b""`` at the end."""
        ...


async def data_events(content: Readable) -> AsyncGenerator[bytes, None]:
    """Yield the payload of each SSE ``data:`` event (multi-line data joined by ``\\n``).

    Reads whatever the network delivered (one await per read, not per line) and yields
    the events in it one by one, never coalesced. Comments and other fields are
    dropped. A final event without its blank line is still yielded at EOF. An event
    that spans many reads is kept as a list of pieces and joined once, when its end
    arrives: linear in its size, however many reads it takes.
    """
    pieces: list[bytes] = []    # the start of an unfinished event, as it came in
    cr = b""                    # a CR that ended the last read (its LF may start the next)
    readany = content.readany
    while True:
        chunk = await readany()
        if not chunk:
            rest = b"".join(pieces) + cr
            if rest.strip():
                payload = _payload(rest.replace(b"\r\n", b"\n").rstrip(b"\r\n"))
                if payload is not None:
                    yield payload
            return
        if cr:
            chunk, cr = cr + chunk, b""
        if b"\r" in chunk:
            if chunk[-1:] == b"\r":
                chunk, cr = chunk[:-1], b"\r"
            chunk = chunk.replace(b"\r\n", b"\n")
            if not chunk:
                continue
        if pieces:
            ends = b"\n\n" in chunk or (chunk[:1] == b"\n" and pieces[-1][-1:] == b"\n")
            pieces.append(chunk)
            if not ends:
                continue
            chunk = b"".join(pieces)
            pieces.clear()
        start = 0
        while True:
            end = chunk.find(b"\n\n", start)
            if end < 0:
                break
            payload = _payload(chunk[start:end])
            start = end + 2
            if payload is not None:
                yield payload
        if start < len(chunk):
            pieces.append(chunk[start:])


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
