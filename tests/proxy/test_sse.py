"""The SSE reader the proxy relays streams with (``proxy_plugin/sse.py``), on its own.

The network splits a stream anywhere: inside an event, between a CR and its LF, inside
``\\n\\n``. Whatever the split, the reader yields the same events, one per event.
End-to-end splits through the proxy are in ``test_upstream_http.py``.
"""

from __future__ import annotations

import random

import pytest

from proxy_plugin.sse import data_events

STREAM = b'data: {"a":1}\n\n: a comment\n\ndata: x\ndata: y\n\nevent: e\nid: 7\ndata: z\n\ndata:tight\n\ndata: [DONE]\n\n'
EVENTS = [b'{"a":1}', b"x\ny", b"z", b"tight", b"[DONE]"]


class Reads:
    """A byte source that delivers the given reads one by one, then the end."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = list(reads)

    async def readany(self) -> bytes:
        return self.reads.pop(0) if self.reads else b""


async def events_of(reads: list[bytes]) -> list[bytes]:
    return [payload async for payload in data_events(Reads(reads))]


def split_randomly(data: bytes, rng: random.Random) -> list[bytes]:
    reads, at = [], 0
    while at < len(data):
        size = rng.randint(1, 9)
        reads.append(data[at:at + size])
        at += size
    return reads


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
async def test_any_split_of_a_stream_yields_the_same_events(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    rng = random.Random(5)
    assert await events_of([stream]) == EVENTS
    assert await events_of([stream[i:i + 1] for i in range(len(stream))]) == EVENTS
    for _ in range(500):
        assert await events_of(split_randomly(stream, rng)) == EVENTS


@pytest.mark.parametrize("tail", [b"data: last", b"data: last\n", b"data: last\r\n", b"data: last\r"])
async def test_a_last_event_without_its_blank_line_is_still_yielded(tail: bytes) -> None:
    assert await events_of([b"data: first\n\n", tail]) == [b"first", b"last"]


async def test_an_event_spanning_many_reads_comes_out_whole() -> None:
    event = b"data: " + b"x" * 1_000_000 + b"\r\n\r\n"
    reads = [event[i:i + 4096] for i in range(0, len(event), 4096)]
    assert await events_of(reads + [b"data: next\n\n"]) == [b"x" * 1_000_000, b"next"]
