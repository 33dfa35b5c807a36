"""How many tokens a request may use, estimated before it goes upstream (never under the real count).

Prompt: the UTF-8 bytes of every text part of every message, plus 4 per message (the chat
format's own tokens), plus the JSON bytes of anything else the model reads (non-text
parts, tool calls, ``tools``, ``functions``, ``response_format``; the ``prompt`` of a legacy
completion, the ``input`` of embeddings). No common BPE token is
shorter than one byte, so bytes never undercount; for English text they overcount about
four times. Output: ``max_completion_tokens`` or ``max_tokens`` (else the configured
``budget_reserve_tokens``), times ``n`` choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

PER_MESSAGE = 4
_READ_TOO = ("tools", "functions", "response_format", "tool_choice", "prompt", "input")  # the last two: other routes


def _bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if value is None:
        return 0
    return len(orjson.dumps(value, option=orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS))


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """An upper bound of the prompt's tokens (see the module docstring)."""
    total = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            total += PER_MESSAGE
            if not isinstance(message, dict):
                total += _bytes(message)
                continue
            for field, value in message.items():
                if field == "content" and isinstance(value, list):
                    for part in value:
                        text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
                        total += _bytes(text) if isinstance(text, str) else _bytes(part)
                elif field != "role":
                    total += _bytes(value)
    for field in _READ_TOO:
        if field in body:
            total += _bytes(body[field])
    return total


def output_tokens(body: Mapping[str, Any], default: int) -> int:
    """The most completion tokens the answer may have: its limit (else ``default``) times ``n``."""
    limit = body.get("max_completion_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        limit = body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        limit = default
    n = body.get("n")
    return limit * (n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1)
