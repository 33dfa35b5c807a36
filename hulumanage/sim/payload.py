"""OpenAI-shaped bodies a simulated provider sends: completions, chunks, errors, model lists.

Pure functions over plain dicts, so they are easy to test and to reuse.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "DONE",
    "MALFORMED",
    "Answer",
    "completion",
    "continuation",
    "count_tokens",
    "error_body",
    "model_list",
    "sse",
    "stream_chunks",
    "usage_chunk",
    "words",
]

#: The SSE terminator event.
DONE = b"data: [DONE]\n\n"
#: The broken event sent by the ``malformed`` behaviour.
MALFORMED = b"data: {not json\n\n"

_WORD = re.compile(r"\s*\S+\s*")
_DEFAULT_TYPES = {429: "requests"}


def words(text: str) -> list[str]:
    """Split ``text`` into stream deltas: one word each, with its trailing whitespace.

    Leading whitespace sticks to the first word, so ``"".join(words(t)) == t`` for any
    text with at least one non-space character.
    """
    return _WORD.findall(text)


def count_tokens(messages: Any) -> int:
    """A rough prompt token count: the words of every text in ``messages`` (at least 1)."""
    total = 0
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                total += len(content.split())
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        total += len(part["text"].split())
    return max(total, 1)


def continuation(answer: str, messages: Any) -> str:
    """The text to send: ``answer``, minus an assistant prefill it starts with.

    If the last message is ``{"role": "assistant", "content": P}`` (a string) and
    ``answer`` starts with ``P``, only ``answer[len(P):]`` is sent.
    """
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        last = messages[-1]
        prefill = last.get("content")
        if last.get("role") == "assistant" and isinstance(prefill, str) and answer.startswith(prefill):
            return answer[len(prefill) :]
    return answer


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """Everything that identifies one answer: ids, model, fingerprint, text, choice count."""

    id: str
    created: int
    model: str
    fingerprint: str
    text: str
    n: int
    prompt_tokens: int
    #: ``(name, arguments JSON)`` when the answer is a tool call (``tools`` in the request)
    tool: tuple[str, str] | None = None

    @property
    def finish_reason(self) -> str:
        """``tool_calls`` for a tool call, else ``stop``."""
        return "stop" if self.tool is None else "tool_calls"

    def tool_calls(self, index: int, arguments: str | None = None) -> list[dict[str, Any]]:
        """The ``tool_calls`` list of choice ``index`` (its id, name and ``arguments``: all of them by default)."""
        assert self.tool is not None
        name, args = self.tool
        return [{"index": 0, "id": f"call_{self.id}_{index}", "type": "function",
                 "function": {"name": name, "arguments": args if arguments is None else arguments}}]

    def usage(self) -> dict[str, int]:
        """The ``usage`` object: completion tokens are words times choices."""
        completion_tokens = len(words(self.text if self.tool is None else self.tool[1])) * self.n
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }

    def _envelope(self, obj: str) -> dict[str, Any]:
        """The fields every completion and chunk share."""
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
        }


def completion(answer: Answer) -> dict[str, Any]:
    """A whole ``chat.completion`` with ``answer.n`` identical choices."""
    body = answer._envelope("chat.completion")
    body["choices"] = [
        {
            "index": i,
            "message": _message(answer, i),
            "logprobs": None,
            "finish_reason": answer.finish_reason,
        }
        for i in range(answer.n)
    ]
    body["usage"] = answer.usage()
    return body


def _message(answer: Answer, index: int) -> dict[str, Any]:
    """The assistant message of choice ``index``: the text, or a tool call without content."""
    if answer.tool is None:
        return {"role": "assistant", "content": answer.text, "refusal": None}
    call = answer.tool_calls(index)[0]
    del call["index"]
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}


def _chunk(answer: Answer, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    """One ``chat.completion.chunk`` carrying one choice."""
    body = answer._envelope("chat.completion.chunk")
    body["choices"] = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return body


def stream_chunks(answer: Answer) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The chunks of a streamed answer, split as (head, tail).

    head: one role chunk per choice, then the content chunks (one word each,
    choices interleaved word by word). tail: one finish chunk per choice.
    The usage chunk is not included: see :func:`usage_chunk`.
    """
    tail = [_chunk(answer, i, {}, answer.finish_reason) for i in range(answer.n)]
    if answer.tool is not None:  # a tool call: its id and name first, then its arguments in pieces
        head = [_chunk(answer, i, {"role": "assistant", "content": None, "tool_calls": answer.tool_calls(i, "")}, None)
                for i in range(answer.n)]
        for piece in words(answer.tool[1]):
            head.extend(_chunk(answer, i, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None)
                        for i in range(answer.n))
        return head, tail
    head = [_chunk(answer, i, {"role": "assistant", "content": ""}, None) for i in range(answer.n)]
    for word in words(answer.text):
        head.extend(_chunk(answer, i, {"content": word}, None) for i in range(answer.n))
    return head, tail


def usage_chunk(answer: Answer) -> dict[str, Any]:
    """The final chunk sent when ``stream_options.include_usage`` is true: no choices, usage."""
    body = answer._envelope("chat.completion.chunk")
    body["choices"] = []
    body["usage"] = answer.usage()
    return body


def sse(data: dict[str, Any]) -> bytes:
    """One SSE ``data:`` event holding ``data`` as compact JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def error_body(status: int, message: str | None, type: str | None, code: str | None) -> dict[str, Any]:
    """An OpenAI error body; the type defaults from the status."""
    if type is None:
        type = _DEFAULT_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {
        "error": {
            "message": message or f"Simulated error {status}.",
            "type": type,
            "param": None,
            "code": code,
        }
    }


def model_list(models: Sequence[str], owner: str, created: int) -> dict[str, Any]:
    """The ``GET /v1/models`` body for ``models``."""
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": owner} for m in models],
    }
