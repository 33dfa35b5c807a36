"""Helpers shared by the built-in approaches that call the model several times.

Request building (client fields pass through, unknown ones ride in
``extra_body``), sampling with the ``n`` fill-up rule, usage summing,
completion/chunk dicts, and parameter validation.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from typing import Any

from hulumanage.errors import ApiError

# Keyword arguments of the SDK's ``chat.completions.create``; any other request
# field is sent through ``extra_body`` so nothing the client sent is lost.
_SDK_CONTROL = frozenset({"extra_headers", "extra_query", "extra_body", "timeout", "self"})


@functools.cache
def sdk_fields() -> frozenset[str]:
    """The SDK's keyword arguments (imported on first use: the direct proxy path never needs the SDK)."""
    from openai.resources.chat.completions import AsyncCompletions

    return frozenset(inspect.signature(AsyncCompletions.create).parameters) - _SDK_CONTROL

# Fields that make no sense on an internal "judge" call (critique, rating):
# its answer must be plain text, one choice, not streamed.
JUDGE_DROP = (
    "n",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "response_format",
    "logprobs",
    "top_logprobs",
    "prediction",
    "audio",
    "modalities",
)

# Fields dropped on sampling calls (proposals, bon samples): they are not
# streamed and their number of choices is the approach's to choose.
SAMPLE_DROP = ("n", "stream", "stream_options")

_USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


def as_dict(obj: Any) -> dict[str, Any]:
    """A plain dict for an SDK (pydantic) object or a mapping; ``{}`` for None."""
    if obj is None:
        return {}
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(mode="json", exclude_unset=True)
    return dict(obj)


def create_kwargs(request: Mapping[str, Any], drop: Iterable[str] = (), **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``client.chat.completions.create`` from a client request.

    ``drop`` removes fields, ``overrides`` set or replace them. Fields the SDK
    does not know are forwarded in ``extra_body`` (the request's own
    ``extra_body``, if any, is merged in too).
    """
    body = dict(request)
    for name in drop:
        body.pop(name, None)
    body.update(overrides)
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = dict(body.pop("extra_body", None) or {})
    for name, value in body.items():
        if name in sdk_fields():
            kwargs[name] = value
        else:
            extra[name] = value
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def with_message(messages: list[Any], role: str, content: str) -> list[Any]:
    """The conversation, untouched, followed by one new message."""
    return [*messages, {"role": role, "content": content}]


def message_text(message: Mapping[str, Any]) -> str:
    """The text of an assistant message; tool calls are rendered as JSON."""
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    parts = [content] if content else []
    tool_calls = message.get("tool_calls") or message.get("function_call")
    if tool_calls:
        parts.append("Tool calls: " + json.dumps(tool_calls, ensure_ascii=False))
    return "\n".join(parts)


class Usage:
    """Token usage summed over every upstream call of one request."""

    def __init__(self) -> None:
        """Start at zero."""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_tokens = 0

    def add(self, usage: Any) -> None:
        """Add one response's ``usage`` (object, dict or None; missing counts 0)."""
        data = as_dict(usage)
        prompt = _int(data.get("prompt_tokens"))
        completion = _int(data.get("completion_tokens"))
        total = data.get("total_tokens")
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens += _int(total) if total is not None else prompt + completion

    def as_dict(self) -> dict[str, int]:
        """The OpenAI ``usage`` object."""
        return {name: getattr(self, name) for name in _USAGE_FIELDS}


def _int(value: Any) -> int:
    """``value`` if it is a non-negative int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def completion_id() -> str:
    """A fresh chat.completion id."""
    return "chatcmpl-" + uuid.uuid4().hex


def completion(model: str, choices: list[dict[str, Any]], usage: Usage, **fields: Any) -> dict[str, Any]:
    """A chat.completion dict with ``choices`` re-indexed from 0."""
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{**choice, "index": index} for index, choice in enumerate(choices)],
        "usage": usage.as_dict(),
        **fields,
    }


def chunk(chunk_id: str, created: int, model: str, choices: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A chat.completion.chunk dict."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        **fields,
    }


def wants_usage(request: Mapping[str, Any]) -> bool:
    """True if the client asked for a separate usage chunk (``stream_options.include_usage``)."""
    options = request.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


async def with_usage_last(
    chunks: AsyncIterator[dict[str, Any]], usage: Usage, separate: bool
) -> AsyncIterator[dict[str, Any]]:
    """Relay ``chunks`` so that the last one carries the summed ``usage``.

    ``separate``: end with an extra usage-only chunk (``choices: []``), as
    OpenAI does for ``include_usage``. Otherwise the usage rides on the last
    chunk that has choices (held back by one chunk), so clients that read
    ``choices[0]`` of every chunk keep working.
    """
    held: dict[str, Any] | None = None
    async for item in chunks:
        if held is not None:
            yield held
        held = item
    if held is None:
        return
    if separate:
        yield held
        yield {**held, "choices": [], "usage": usage.as_dict()}
    else:
        yield {**held, "usage": usage.as_dict()}


async def relay(stream: Any, model: str, usage: Usage) -> AsyncIterator[dict[str, Any]]:
    """Chunks of an upstream SDK stream as dicts with ``model`` rewritten.

    Upstream usage (from ``include_usage``) is added to ``usage`` and its
    usage-only chunk is not relayed: the caller puts the sum on the last chunk.
    The upstream stream is closed however iteration ends.
    """
    try:
        async for item in stream:
            data = as_dict(item)
            if data.get("usage") is not None:
                usage.add(data.pop("usage"))
            if not data.get("choices"):
                continue
            data["model"] = model
            yield data
    finally:
        await stream.close()


async def gather_all(aws: Iterable[Awaitable[Any]]) -> list[Any]:
    """Run ``aws`` concurrently; on the first failure cancel the rest and raise it as is.

    (``asyncio.gather`` leaves the others running; a TaskGroup would wrap the
    error in an ExceptionGroup, hiding its ``status_code`` from the host.)
    """
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
    return [task.result() for task in tasks]


async def sample(client: Any, kwargs: dict[str, Any], count: int, usage: Usage) -> list[dict[str, Any]]:
    """``count`` choices (as dicts) for one request.

    One call with ``n=count``; if the upstream returns fewer choices (it
    ignores ``n``), the rest come from concurrent calls with ``n=1``. Every
    response's usage is added to ``usage``.
    """
    first = await client.chat.completions.create(**{**kwargs, "n": count})
    usage.add(first.usage)
    choices = [as_dict(choice) for choice in first.choices][:count]
    missing = count - len(choices)
    if missing > 0:
        more = await gather_all(client.chat.completions.create(**{**kwargs, "n": 1}) for _ in range(missing))
        for response in more:
            usage.add(response.usage)
            choices.extend(as_dict(choice) for choice in response.choices[:1])
    if not choices:
        raise ApiError(502, "the upstream model returned no choices", "server_error", "no_choices")
    return choices


def int_param(extra: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """An integer approach parameter from ``extra``, validated (400 if bad)."""
    value = extra.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}", code="invalid_parameter")
    return value


def float_param(extra: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    """A number approach parameter from ``extra``, validated (400 if bad)."""
    value = extra.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number from {low:g} to {high:g}", code="invalid_parameter")
    return float(value)


def client_n(request: Mapping[str, Any]) -> int:
    """The number of choices the client asked for (``n``, default 1)."""
    value = request.get("n")
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(400, "n must be a positive integer", code="invalid_parameter")
    return value
