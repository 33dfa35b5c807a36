"""The response cache: deterministic answers served again without an upstream call.

The gate asks it twice per request: :meth:`ResponseCache.admit` (look up; a hit becomes
the ticket's own answer, a miss gets a :class:`Fill` that taps what the client receives)
and :meth:`ResponseCache.finish` (store the answer if it may be). The rules:

- **What is cached.** Requests whose ``temperature`` is at most ``cache.max_temperature``
  (an absent temperature counts as 1.0) or that set ``seed``; any other is a ``bypass``.
- **The key** is the SHA-256 of the namespace (the client key id with ``per_client``,
  else one shared namespace), the approach chain, the approach parameters the host
  stripped from the body (``bon_n``, ``proxy_wrap``, ...) and every body field but
  ``stream``, ``stream_options`` and ``user``, serialized with sorted keys: JSON key
  order does not matter, any other difference does (``0`` and ``0.0`` are two keys: a
  miss, never a wrong answer).
- **What is stored**: one canonical ``chat.completion`` per key, from the JSON body or
  assembled from the stream's chunks, so either kind of request is served from it.
  Only a 200 that ended complete; never a stream that broke once it had answered
  (continued elsewhere or not: the dispatch loop reports ``answering`` and then a
  failed ``attempted`` for it), never an error event, never an answer whose choices do
  not all end with ``stop``, ``length``, ``tool_calls`` or ``function_call``, never a
  tool call cut by ``length`` (its arguments are cut JSON), never more than
  ``max_entry_bytes`` of JSON.
- ``Cache-Control: no-cache`` skips the lookup and stores the fresh answer (refresh);
  ``no-store`` skips both. Both are a ``bypass``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from proxy_plugin.gate.store import Entry, MemoryStore, Store

if TYPE_CHECKING:
    from proxy_plugin.clock import Clock
    from proxy_plugin.config import CacheConfig

#: body fields that do not change the answer
IGNORED = frozenset(("stream", "stream_options", "user"))
#: host fields that name the chain, which is in the key already
CHAIN_FIELDS = frozenset(("hulumanage_approach",))
FINISHED = frozenset(("stop", "length", "tool_calls", "function_call"))
JSON_HEADERS = {"Content-Type": "application/json"}
#: a stream whose bytes pass this many times ``max_entry_bytes`` is no longer buffered
STREAM_SLACK = 32


class CachedAnswer:
    """A non-streaming hit: a raw response (``status``, ``body``, ``headers``) with the stored JSON."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes) -> None:
        self.status = 200
        self.body = body
        self.headers = JSON_HEADERS


class Replay:
    """A streaming hit: an async iterator yielding the prebuilt SSE body once."""

    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    def __aiter__(self) -> Replay:
        return self

    async def __anext__(self) -> bytes:
        body = self._body
        if body is None:
            raise StopAsyncIteration
        self._body = None
        return body


class Fill:
    """A miss (or a refresh) on its way: the key, what the client received, whether a stream broke."""

    __slots__ = ("broken", "key", "open", "parts", "size", "stream")

    def __init__(self, key: str, stream: bool) -> None:
        self.key = key
        self.stream = stream
        self.parts: list[bytes] | None = []
        self.size = 0
        self.open = 0          # attempts that answered and have not ended yet
        self.broken = False    # an answer that had started failed (a stream cut, continued or not)

    def tap(self, data: bytes) -> None:
        """Every body part the client gets (the host calls it); too much is given up on."""
        parts = self.parts
        if parts is not None:
            parts.append(data)
            self.size += len(data)

    def answering(self) -> None:
        """An attempt answered (a whole answer, or a stream whose first event is in)."""
        self.open += 1

    def attempted(self, ok: bool) -> None:
        """An attempt ended: after answering, a failure means the stream broke mid-way."""
        if self.open:
            self.open -= 1
            if not ok:
                self.broken = True


def cacheable(body: dict[str, Any], max_temperature: float) -> bool:
    """A ``seed``, or a temperature at or below ``max_temperature`` (absent: 1.0)."""
    if body.get("seed") is not None:
        return True
    temperature = body.get("temperature")
    if temperature is None:
        temperature = 1.0
    return isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature <= max_temperature


def directives(cache_control: str) -> frozenset[str]:
    """The directive names of a ``Cache-Control`` header, lower case."""
    if not cache_control:
        return frozenset()
    return frozenset(part.split("=", 1)[0].strip().lower() for part in cache_control.split(","))


def cache_key(namespace: str, request: Any) -> str:
    """The canonical key of a request (see the module docstring)."""
    fields = {k: v for k, v in request.body.items() if k not in IGNORED}
    extra = {k: v for k, v in (getattr(request, "extra", None) or {}).items() if k not in CHAIN_FIELDS}
    blob = orjson.dumps([namespace, list(request.chain), extra, fields], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()


def _finished(completion: Any) -> bool:
    """Every choice ended for a reason that makes a whole answer (a cut tool call does not)."""
    if not isinstance(completion, dict):
        return False
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            return False
        reason = choice.get("finish_reason")
        if reason not in FINISHED:
            return False
        message = choice.get("message")
        calls = isinstance(message, dict) and (message.get("tool_calls") or message.get("function_call"))
        if calls and reason == "length":
            return False
    return True


def assemble(parts: list[bytes]) -> dict[str, Any] | None:
    """The ``chat.completion`` a stream's SSE bytes spell, or None (an error event, unreadable JSON)."""
    head: dict[str, Any] = {}
    usage = None
    choices: dict[int, dict[str, Any]] = {}
    for line in b"".join(parts).split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(chunk, dict) or "error" in chunk:
            return None
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if key in chunk and key not in head:
                head[key] = chunk[key]
        if chunk.get("usage") is not None:
            usage = chunk["usage"]
        for delta_choice in chunk.get("choices") or ():
            _merge(choices.setdefault(delta_choice.get("index", 0), {"message": {}}), delta_choice)
    completion: dict[str, Any] = {"object": "chat.completion", **head}
    completion["choices"] = [_choice(index, choices[index]) for index in sorted(choices)]
    if usage is not None:
        completion["usage"] = usage
    return completion


def _merge(into: dict[str, Any], delta_choice: dict[str, Any]) -> None:
    """Add one chunk's choice to what is assembled for that index."""
    message = into["message"]
    delta = delta_choice.get("delta") or {}
    for key, value in delta.items():
        if value is None:
            continue
        if key == "tool_calls":
            calls = message.setdefault("tool_calls", {})
            for call in value:
                slot = calls.setdefault(call.get("index", 0), {"function": {"name": "", "arguments": ""}})
                for field in ("id", "type"):
                    if call.get(field):
                        slot[field] = call[field]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
        elif key == "function_call":
            slot = message.setdefault("function_call", {"name": "", "arguments": ""})
            slot["name"] += value.get("name") or ""
            slot["arguments"] += value.get("arguments") or ""
        elif isinstance(value, str) and key != "role":
            message[key] = message.get(key, "") + value
        else:
            message[key] = value
    logprobs = delta_choice.get("logprobs")
    if isinstance(logprobs, dict) and logprobs.get("content"):
        into.setdefault("logprobs", {"content": []})["content"].extend(logprobs["content"])
    if delta_choice.get("finish_reason") is not None:
        into["finish_reason"] = delta_choice["finish_reason"]


def _choice(index: int, assembled: dict[str, Any]) -> dict[str, Any]:
    message = assembled["message"]
    out = {"role": message.get("role", "assistant"), "content": message.get("content"), **message}
    if "tool_calls" in out:
        out["tool_calls"] = [out["tool_calls"][i] for i in sorted(out["tool_calls"])]
    return {"index": index, "message": out, "logprobs": assembled.get("logprobs"),
            "finish_reason": assembled.get("finish_reason")}


class ResponseCache:
    """The cache of one proxy runtime: its store and the rules above (config read per request)."""

    def __init__(self, clock: Clock, store: Store | None = None) -> None:
        self.store: Store = MemoryStore(clock) if store is None else store

    def admit(self, ticket: Any, config: CacheConfig) -> None:
        """Look the request up: a hit sets ``ticket.answer``, a miss a :class:`Fill` and ``ticket.tap``."""
        key = self._key(ticket, config)
        if key is not None:
            self._found(ticket, key, None if ticket.cache == "bypass" else self.store.get(key))

    async def admit_shared(self, ticket: Any, config: CacheConfig) -> None:
        """:meth:`admit` on a shared store (Redis): a local miss asks the store's ``fetch`` (bounded)."""
        key = self._key(ticket, config)
        if key is None:
            return
        entry = None
        if ticket.cache != "bypass":
            entry = self.store.get(key)
            fetch = getattr(self.store, "fetch", None)
            if entry is None and fetch is not None:
                entry = await fetch(key)
        self._found(ticket, key, entry)

    def _key(self, ticket: Any, config: CacheConfig) -> str | None:
        """The request's key, None when the cache does not apply (``ticket.cache`` says why; a refresh: bypass)."""
        if not config.enabled:
            if len(self.store):
                self.store.clear()  # turned off by a reload: the memory goes back
            return None
        request = ticket.request
        said = directives(request.cache_control)
        if "no-store" in said or not cacheable(request.body, config.max_temperature):
            ticket.cache = "bypass"
            return None
        client = ticket.client
        namespace = client.id if config.per_client and client.key is not None else ""
        if "no-cache" in said:
            ticket.cache = "bypass"
        memo = getattr(request, "memo", None)  # the host's dict for this exact body (hulumanage.gate.GateRequest)
        if memo is None:
            return cache_key(namespace, request)
        key: str | None = memo.get(("cache", namespace))
        if key is None:
            key = memo[("cache", namespace)] = cache_key(namespace, request)
        return key

    def _found(self, ticket: Any, key: str, entry: Entry | None) -> None:
        """A hit answers from ``entry``; else a :class:`Fill` taps the answer on its way (a miss or a refresh)."""
        request = ticket.request
        if entry is not None:
            ticket.cache = "hit"
            ticket.saved_usd = entry.usd
            if request.stream:
                options = request.body.get("stream_options")
                usage = isinstance(options, dict) and options.get("include_usage") is True
                ticket.answer = Replay(entry.sse(usage))
            else:
                ticket.answer = CachedAnswer(entry.body)
            return
        if ticket.cache != "bypass":
            ticket.cache = "miss"
        fill = ticket.fill = Fill(key, request.stream)
        ticket.tap = fill.tap
        if request.stream:
            ticket.wants_usage = True  # so that a replay can carry the usage the client did not ask for

    def finish(self, ticket: Any, status: int, complete: bool, config: CacheConfig) -> bool:
        """Store the answer a :class:`Fill` saw, if it may be (module docstring); whether it was stored."""
        fill = ticket.fill
        if fill is None or status != 200 or not complete or fill.broken or not fill.parts or not config.enabled:
            return False
        if fill.size > config.max_entry_bytes * (STREAM_SLACK if fill.stream else 1):
            return False
        if fill.stream:
            completion = assemble(fill.parts)
            if completion is None:
                return False
            if "usage" not in completion and (ticket.prompt_tokens or ticket.completion_tokens):
                completion["usage"] = {"prompt_tokens": ticket.prompt_tokens,
                                       "completion_tokens": ticket.completion_tokens,
                                       "total_tokens": ticket.prompt_tokens + ticket.completion_tokens}
            body = orjson.dumps(completion)
        else:
            body = b"".join(fill.parts)
            try:
                completion = orjson.loads(body)
            except orjson.JSONDecodeError:
                return False
        if not _finished(completion) or len(body) > config.max_entry_bytes:
            return False
        self.store.max_entries = config.max_entries
        self.store.put(fill.key, Entry(body, completion, float(ticket.usd or 0.0)), config.ttl)
        return True

    def clear(self) -> int:
        """Empty the cache; how many entries there were."""
        return self.store.clear()
