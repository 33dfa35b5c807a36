"""Shared by the fault-injection tests: the short configuration, the answer, how to ask and what to check."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import openai
import pytest

from hulumanage.sim import (
    FakeProvider,
    ok,
)
from support.helpers import USER

FAILOVER = {"strategy": "failover", "health_check": {"enabled": False}}
#: attempt 0's backoff is uniform in [0, min(backoff_max, backoff_base)] = [0, 0.05]
RETRIES = {"attempts_per_provider": 2, "backoff_base": 0.05, "backoff_max": 0.1, "retry_after_max": 0.5}
FIRST_BACKOFF_CAP = 0.05
TIMEOUTS = {"connect": 0.5, "request": 2, "first_token": 0.3, "idle": 0.3}
#: scheduling margin on top of a configured delay (loaded CI machines)
SLACK = 0.35
ANSWER = "alpha beta gamma delta epsilon zeta"
WORDS = ["alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta"]
#: the fakes count prompt tokens as the words of the messages: "Say something." is 2
PROMPT_TOKENS = 2


def config(**overrides: dict[str, Any]) -> dict[str, Any]:
    """The proxy sections of these tests, with ``overrides`` merged into each section."""
    sections: dict[str, dict[str, Any]] = {"routing": FAILOVER, "retries": RETRIES, "timeouts": TIMEOUTS}
    for name, values in overrides.items():
        sections[name] = {**sections.get(name, {}), **values}
    return sections


@dataclasses.dataclass
class Reply:
    """What the client got from one request, streamed or not."""

    text: str
    fingerprints: set[str | None]
    model: str
    usage: dict[str, int] | None
    finish_reasons: list[str]
    seconds: float


async def ask(client: openai.AsyncOpenAI, stream: bool, **kwargs: Any) -> Reply:
    """Send one request with the SDK and gather what came back."""
    started = time.monotonic()
    if not stream:
        r = await client.chat.completions.create(model="gpt-4", messages=USER, **kwargs)
        return Reply(
            r.choices[0].message.content or "",
            {r.system_fingerprint},
            r.model,
            r.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) if r.usage else None,
            [c.finish_reason for c in r.choices],
            time.monotonic() - started,
        )
    chunks = [
        c async for c in await client.chat.completions.create(model="gpt-4", messages=USER, stream=True, **kwargs)
    ]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) <= 1, "more than one usage chunk"
    return Reply(
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
        {c.system_fingerprint for c in chunks},
        chunks[0].model,
        usage[0].model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) if usage else None,
        [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason],
        time.monotonic() - started,
    )


def usage_of(answer: str) -> dict[str, int]:
    """The usage a fake reports for ``answer`` to ``USER``."""
    words = len(answer.split())
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": words, "total_tokens": PROMPT_TOKENS + words}


async def serves_normally(client: openai.AsyncOpenAI, *fakes: FakeProvider) -> None:
    """Once the fault is over (every fake answers ok again), plain and streamed requests succeed."""
    answers = {f"fake-{f.name}": f.answer for f in fakes}
    for fake in fakes:
        fake.set_default(ok())
    for stream in (False, True):
        reply = await ask(client, stream)
        (fingerprint,) = reply.fingerprints
        assert fingerprint in answers
        assert reply.text == answers[fingerprint]
        assert reply.finish_reasons == ["stop"]


def gaps(fake: FakeProvider) -> list[float]:
    """Seconds between consecutive chat requests the fake received."""
    times = [s.time for s in fake.chat_requests()]
    return [b - a for a, b in itertools.pairwise(times)]


#: ask for the usage chunk when streaming
USAGE: dict[bool, dict[str, Any]] = {False: {}, True: {"stream_options": {"include_usage": True}}}
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
