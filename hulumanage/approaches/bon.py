"""``bon``: best of n - sample several answers, let the model rate each, return the best."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from hulumanage.approaches._common import (
    JUDGE_DROP,
    SAMPLE_DROP,
    Usage,
    as_dict,
    chunk,
    client_n,
    completion,
    completion_id,
    create_kwargs,
    float_param,
    gather_all,
    int_param,
    message_text,
    sample,
    wants_usage,
    with_message,
)
from hulumanage.call import Call

DEFAULT_SAMPLES = 3
DEFAULT_TEMPERATURE = 0.8
MAX_SAMPLES = 16
MAX_RATING = 10
STREAM_PIECES = 4  # a streamed answer is sent as about this many content chunks

RATING_PROMPT = (
    "Here is a candidate answer to my previous message.\n\n"
    "Candidate:\n{answer}\n\n"
    "Rate how well it answers my previous message, from 0 (useless) to 10 (perfect). "
    "Reply with a single integer and nothing else."
)

_INTEGER = re.compile(r"\d+")


def parse_rating(text: str | None) -> int:
    """The first integer in ``text``, clamped to 0-10; 0 when there is none."""
    match = _INTEGER.search(text or "")
    return min(int(match.group()), MAX_RATING) if match else 0


def _pieces(text: str, count: int) -> list[str]:
    """``text`` cut into at most ``count`` consecutive non-empty pieces."""
    if not text:
        return []
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)]


class BestOfN:
    """Best of n: n samples, one rating call per sample, the best-rated answer(s) returned."""

    slug = "bon"
    description = "Best of n: several samples, each rated by the model; the best one is returned."
    params: ClassVar[dict[str, str]] = {
        "bon_n": f"number of samples (default {DEFAULT_SAMPLES}, at most {MAX_SAMPLES}; at least the client's n)",
        "bon_temperature": f"temperature of the sample calls (default {DEFAULT_TEMPERATURE})",
    }
    terminal = False

    def fanout(self, call: Call) -> int:
        """The most upstream calls ``run`` makes: a sample call per sample (when the upstream
        ignores ``n``), plus one rating call per sample; the client's ``n`` raises the samples."""
        count = max(int_param(call.extra, "bon_n", DEFAULT_SAMPLES, 1, MAX_SAMPLES), client_n(call.request))
        return 2 * count

    async def run(self, call: Call) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """Sample, rate and answer with the top ``n`` samples (streamed when asked)."""
        count = int_param(call.extra, "bon_n", DEFAULT_SAMPLES, 1, MAX_SAMPLES)
        temperature = float_param(call.extra, "bon_temperature", DEFAULT_TEMPERATURE, 0.0, 2.0)
        wanted = client_n(call.request)
        count = max(count, wanted)
        request = call.request
        model = request["model"]
        messages = list(request["messages"])
        usage = Usage()

        samples = await sample(call.client, create_kwargs(request, SAMPLE_DROP, temperature=temperature), count, usage)
        ratings = await gather_all(self._rate(call, messages, choice, usage) for choice in samples)
        # sorted() is stable: among equal ratings the earlier sample wins.
        order = sorted(range(len(samples)), key=lambda i: -ratings[i])
        best = [samples[i] for i in order[:wanted]]
        if call.stream:
            return self._stream(model, best, usage, separate=wants_usage(request))
        return completion(model, [_final_choice(choice) for choice in best], usage)

    async def _rate(self, call: Call, messages: list[Any], choice: dict[str, Any], usage: Usage) -> int:
        """Ask the model to rate one sample; 0 when its reply holds no integer."""
        prompt = RATING_PROMPT.format(answer=message_text(choice.get("message") or {}))
        kwargs = create_kwargs(call.request, JUDGE_DROP, messages=with_message(messages, "user", prompt), temperature=0)
        response = await call.client.chat.completions.create(**kwargs)
        usage.add(response.usage)
        if not response.choices:
            return 0
        return parse_rating(as_dict(response.choices[0].message).get("content"))

    async def _stream(
        self, model: str, choices: list[dict[str, Any]], usage: Usage, separate: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """The chosen answers as chat.completion.chunk dicts; the last chunk carries usage."""
        chunk_id, created = completion_id(), int(time.time())
        for index, choice in enumerate(choices):
            message = choice.get("message") or {}
            first: dict[str, Any] = {"role": "assistant", "content": ""}
            if message.get("tool_calls"):
                first["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(message["tool_calls"])]
            yield chunk(chunk_id, created, model, [{"index": index, "delta": first, "finish_reason": None}])
            for piece in _pieces(message.get("content") or "", STREAM_PIECES):
                yield chunk(
                    chunk_id, created, model, [{"index": index, "delta": {"content": piece}, "finish_reason": None}]
                )
            last = [{"index": index, "delta": {}, "finish_reason": _finish_reason(choice)}]
            if separate or index < len(choices) - 1:
                yield chunk(chunk_id, created, model, last)
            else:
                yield chunk(chunk_id, created, model, last, usage=usage.as_dict())
        if separate:
            yield chunk(chunk_id, created, model, [], usage=usage.as_dict())


def _finish_reason(choice: dict[str, Any]) -> str:
    """``tool_calls`` for a tool-call answer, else ``stop`` (a sample cut at max_tokens keeps ``length``)."""
    reason = choice.get("finish_reason")
    return reason if reason in ("tool_calls", "length", "content_filter") else "stop"


def _final_choice(choice: dict[str, Any]) -> dict[str, Any]:
    """A sample as a returned choice (index is set by the caller)."""
    return {
        "message": choice.get("message") or {"role": "assistant", "content": ""},
        "finish_reason": choice.get("finish_reason") or "stop",
        "logprobs": choice.get("logprobs"),
    }
