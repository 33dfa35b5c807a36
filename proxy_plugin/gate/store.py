"""Where cached answers live: a small interface (``get``, ``put``, ``clear``) and its in-memory backend.

:class:`MemoryStore` is an LRU with a time to live, reading time from the injectable
clock (``proxy_plugin/clock.py``), so tests expire entries without sleeping. A shared
backend (Redis, for several replicas) implements the same four members; what it stores
is an :class:`Entry`'s ``body`` (the JSON bytes) and ``usd``, everything else is derived.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

import orjson

from proxy_plugin.clock import Clock

DONE = b"data: [DONE]\n\n"


class Entry:
    """One cached answer: the canonical ``chat.completion`` as JSON bytes, its parsed form and what it cost.

    The SSE replay is built from it once, on the first streaming hit, and kept
    (one variant with the usage chunk, one without), so a hit encodes nothing.
    """

    __slots__ = ("_sse", "body", "completion", "usd")

    def __init__(self, body: bytes, completion: dict[str, Any], usd: float) -> None:
        self.body = body
        self.completion = completion
        self.usd = usd
        self._sse: dict[bool, bytes] = {}

    def sse(self, usage: bool) -> bytes:
        """The whole answer as one SSE body (``usage``: with the usage chunk, when the entry knows it)."""
        built = self._sse.get(usage)
        if built is None:
            built = self._sse[usage] = replay(self.completion, usage)
        return built


def replay(completion: dict[str, Any], usage: bool) -> bytes:
    """A ``chat.completion`` as SSE events: per choice its message and then its finish reason,
    the usage chunk (if ``usage`` and known), ``[DONE]``."""
    head: dict[str, Any] = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint") if key in completion}
    head["object"] = "chat.completion.chunk"
    events: list[bytes] = []

    def event(choices: list[dict[str, Any]], **more: Any) -> None:
        events.append(b"data: " + orjson.dumps({**head, "choices": choices, **more}) + b"\n\n")

    choices = completion.get("choices") or []
    for choice in choices:
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": message.get("role") or "assistant", "content": message.get("content")}
        for key in ("refusal", "function_call", "audio"):
            if message.get(key) is not None:
                delta[key] = message[key]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        event([{"index": choice.get("index", 0), "delta": delta, "logprobs": choice.get("logprobs"),
                "finish_reason": None}])
    for choice in choices:
        event([{"index": choice.get("index", 0), "delta": {}, "logprobs": None,
                "finish_reason": choice.get("finish_reason")}])
    if usage and completion.get("usage") is not None:
        event([], usage=completion["usage"])
    events.append(DONE)
    return b"".join(events)


class Store(Protocol):
    """What the cache needs of a backend."""

    max_entries: int

    def get(self, key: str) -> Entry | None:
        """The live entry under ``key``, or None (absent or expired)."""

    def put(self, key: str, entry: Entry, ttl: float) -> None:
        """Keep ``entry`` under ``key`` for ``ttl`` seconds (replacing any entry there)."""

    def clear(self) -> int:
        """Drop every entry; how many there were."""

    def __len__(self) -> int:
        """How many entries are held (expired ones not yet dropped included)."""


class MemoryStore:
    """An in-process LRU with a time to live (one process; the default backend)."""

    __slots__ = ("_entries", "clock", "max_entries")

    def __init__(self, clock: Clock, max_entries: int = 1000) -> None:
        self.clock = clock
        self.max_entries = max_entries  # the gate sets it from the current config before each put
        self._entries: OrderedDict[str, tuple[float, Entry]] = OrderedDict()

    def get(self, key: str) -> Entry | None:
        """The entry under ``key`` if it has not expired; a hit makes it the most recently used."""
        found = self._entries.get(key)
        if found is None:
            return None
        expires, entry = found
        if self.clock.monotonic() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry, ttl: float) -> None:
        """Store ``entry``; the least recently used entries go beyond ``max_entries``."""
        entries = self._entries
        entries[key] = (self.clock.monotonic() + ttl, entry)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def clear(self) -> int:
        """Drop everything; how many entries there were."""
        count = len(self._entries)
        self._entries.clear()
        return count

    def __len__(self) -> int:
        return len(self._entries)
