"""A simulated provider's other routes: ``POST /v1/embeddings`` and ``POST /v1/completions`` (legacy, ``prompt``).

Embeddings are deterministic: each input's vector comes from the SHA-256 of its text (or
token list), unit length, ``dimensions`` long (default :data:`DIMENSIONS`), as floats or,
with ``encoding_format: base64`` (the openai SDK's default), little-endian float32 bytes
in base64. Completions answer the provider's text as a ``text_completion`` with
``choices[].text`` and usage, or streamed word by word (``stream_options.include_usage``
adds the usage chunk). Both play the provider's behaviours as chat does: ``down``,
``error``, ``reset``, ``latency``, ``hang``; a stream also ``cut`` and ``no_done``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hulumanage.sim import payload
from hulumanage.sim.respond import drop, error_response, write_events

if TYPE_CHECKING:
    from hulumanage.sim.behaviour import Behaviour
    from hulumanage.sim.provider import FakeProvider

__all__ = ["DIMENSIONS", "completion_chunks", "embedding", "handle", "text_completion"]

#: The length of a vector when the request names no ``dimensions``.
DIMENSIONS = 8


def embedding(item: Any, dimensions: int = DIMENSIONS) -> list[float]:
    """The unit vector of one input (a string, or a list of token ids): the same input, the same vector."""
    seed = (item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))).encode()
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + b"#" + str(block).encode()).digest()
        raw.extend(b / 127.5 - 1.0 for b in digest)
        block += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _inputs(value: Any) -> list[Any]:
    """The separate inputs of ``input``: one string, one token list, or a list of either."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(t, int) for t in value)):
        return [value]
    return list(value) if isinstance(value, list) else [value]


def _tokens(item: Any) -> int:
    """A rough token count: words of a string, length of a token list (at least 1)."""
    if isinstance(item, str):
        return max(len(item.split()), 1)
    return max(len(item), 1) if isinstance(item, list) else 1


def embeddings_body(body: dict[str, Any]) -> dict[str, Any]:
    """The ``list`` of embeddings for ``body`` (``input``, ``model``, ``dimensions``, ``encoding_format``)."""
    items = _inputs(body["input"])
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and not isinstance(dims, bool) and dims > 0 else DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(items):
        vector: Any = embedding(item, dims)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(_tokens(item) for item in items)
    return {"object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _envelope(name: str, ident: str, model: str) -> dict[str, Any]:
    return {"id": ident, "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": f"fake-{name}"}


def _usage(body: dict[str, Any], text: str, n: int) -> dict[str, int]:
    prompts = _inputs(body["prompt"])
    prompt = sum(_tokens(p) for p in prompts)
    completion = len(payload.words(text)) * n
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def text_completion(name: str, ident: str, body: dict[str, Any], text: str) -> dict[str, Any]:
    """A whole ``text_completion``: ``n`` choices of ``text``, with usage."""
    n = body.get("n") or 1
    answer = _envelope(name, ident, body["model"])
    answer["choices"] = [{"text": text, "index": i, "logprobs": None, "finish_reason": "stop"} for i in range(n)]
    answer["usage"] = _usage(body, text, n)
    return answer


def completion_chunks(name: str, ident: str, body: dict[str, Any], text: str, usage: bool) -> list[dict[str, Any]]:
    """The chunks of a streamed ``text_completion``: a word per chunk and choice, a finish per choice, the usage."""
    n = body.get("n") or 1
    chunks: list[dict[str, Any]] = []

    def chunk(index: int, piece: str, finish: str | None) -> dict[str, Any]:
        out = _envelope(name, ident, body["model"])
        out["choices"] = [{"text": piece, "index": index, "logprobs": None, "finish_reason": finish}]
        return out

    for word in payload.words(text):
        chunks.extend(chunk(i, word, None) for i in range(n))
    chunks.extend(chunk(i, "", "stop") for i in range(n))
    if usage:
        last = _envelope(name, ident, body["model"])
        last["choices"] = []
        last["usage"] = _usage(body, text, n)
        chunks.append(last)
    return chunks


def _problem(route: str, body: Any) -> str | None:
    """What is wrong with a request body of ``route``, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "You must provide a model parameter."
    field = "input" if route == "embeddings" else "prompt"
    if body.get(field) is None:
        return f"'{field}' is required."
    return None


async def handle(provider: FakeProvider, route: str, request: web.Request) -> web.StreamResponse:
    """``POST /v1/embeddings`` or ``/v1/completions``: check, record, then play the chosen behaviour."""
    arrival = time.monotonic()
    gate = provider._gate
    gate.enter(request)
    try:
        body, b, early = await provider._admitted(request, arrival, lambda body: _problem(route, body))
        if early is not None:
            return early
        assert b is not None
        return await _play(provider, route, request, body, b)
    finally:
        gate.leave(request)


async def _play(provider: FakeProvider, route: str, request: web.Request, body: dict[str, Any],
                b: Behaviour) -> web.StreamResponse:
    """Answer a checked request with behaviour ``b``."""
    gate, headers = provider._gate, provider._headers()
    if b.name == "reset" or not await gate.pause(b.latency):
        return drop(request)
    if b.name == "error":
        extra = {**headers, **dict(b.headers)}
        if b.retry_after is not None:
            extra["Retry-After"] = str(b.retry_after)
        return error_response(b.status, b.message, b.error_type, b.code, extra)
    if b.name == "hang" and not await gate.hold(b.seconds):
        return drop(request)
    if route == "embeddings":
        return web.json_response(embeddings_body(body), headers=headers)
    text = b.content if b.content is not None else provider.answer
    ident = f"cmpl-{provider.name}-{next(provider._ids)}"
    if body.get("stream") is not True:
        return web.json_response(text_completion(provider.name, ident, body, text), headers=headers)
    options = body.get("stream_options")
    usage = isinstance(options, dict) and options.get("include_usage") is True
    events = [payload.sse(c) for c in completion_chunks(provider.name, ident, body, text, usage)]
    stop_at = min(b.chunks, len(events)) if b.name == "cut" else -1
    if b.name != "no_done":
        events.append(payload.DONE)
    return await write_events(request, events, stop_at, b, gate, headers)
