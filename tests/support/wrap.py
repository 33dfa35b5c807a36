"""Shared by the wrap and compose tests: fakes behind the proxy, and checks of what reached them."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import openai
from openai.resources.chat.completions import AsyncCompletions

from hulumanage.sim import FakeProvider, ok, stall
from hulumanage.sim.payload import count_tokens, words
from hulumanage.sim.seen import Seen
from support.harness import Host
from support.helpers import entry, health

MODEL = "gpt-4"
MAPPED = {"a": "a-gpt-4", "b": "b-gpt-4"}
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3 + 3? Explain."},
]
FAILOVER = {"strategy": "failover", "health_check": {"enabled": False}}
ONE_ATTEMPT = {"attempts_per_provider": 1}
ANSWER = "alpha beta gamma delta epsilon"
WORDS = ["alpha ", "beta ", "gamma ", "delta ", "epsilon"]

# Every field of an OpenAI chat request (the SDK's own keyword arguments), nothing else.
OPENAI_FIELDS = frozenset(inspect.signature(AsyncCompletions.create).parameters) - {
    "self", "extra_headers", "extra_query", "extra_body", "timeout",
}
APPROACH_PARAMS = {
    "hulumanage_approach", "proxy_wrap", "bon_n", "bon_temperature", "moa_proposals", "moa_temperature",
    "shout_suffix",
}


async def start(
    fakes: Any, proxy: Any, *, approach: str = "none", providers: Sequence[str] = ("a", "b"), answer: str = ANSWER,
    **sections: Any,
) -> tuple[Host, list[FakeProvider], FakeProvider]:
    """Fakes ``providers`` in the pool (with model maps) plus ``direct`` as ``--base-url``; the host.

    A provider name starting with ``dead`` is a closed port (connection refused).
    """
    live = [name for name in providers if not name.startswith("dead")]
    *pool, direct = await fakes(*live, "direct", answer=answer)
    by_name = {p.name: p for p in pool}
    items = [
        entry(by_name[name], model_map={MODEL: MAPPED[name]}) if name in by_name else entry(name)
        for name in providers
    ]
    sections.setdefault("routing", FAILOVER)
    host = await proxy(items, argv=("--approach", approach, "--base-url", direct.base_url), **sections)
    return host, pool, direct


def wrapped(slug: Any, **params: Any) -> dict[str, Any]:
    """The ``extra_body`` that runs ``slug`` wrapped by the proxy."""
    return {"hulumanage_approach": "proxy", "proxy_wrap": slug, **params}


async def ask(host: Host, model: str = MODEL, **kwargs: Any) -> openai.types.chat.ChatCompletion:
    """One non-streaming request on the standard conversation, with a fresh SDK client."""
    async with host.client() as client:
        return await client.chat.completions.create(model=model, messages=CONVERSATION, **kwargs)


async def ask_stream(host: Host, model: str = MODEL, **kwargs: Any) -> list[tuple[float, Any]]:
    """One streaming request; every chunk with its arrival time (``time.monotonic()``)."""
    out = []
    async with host.client() as client:
        stream = await client.chat.completions.create(model=model, messages=CONVERSATION, stream=True, **kwargs)
        async for chunk in stream:
            out.append((time.monotonic(), chunk))
    return out


def streamed_text(chunks: list[tuple[float, Any]]) -> str:
    """The content of choice 0 in streamed chunks."""
    return "".join((c.choices[0].delta.content or "") for _, c in chunks if c.choices)


def check_upstream(seen: Sequence[Seen], model: str, extra_fields: frozenset[str] = frozenset()) -> None:
    """Every call carries the client's conversation as a prefix, the expected model, and only OpenAI fields."""
    assert seen, "no upstream call"
    for s in seen:
        assert s.json["messages"][: len(CONVERSATION)] == CONVERSATION, s.json["messages"]
        assert s.json["model"] == model
        assert set(s.json) <= OPENAI_FIELDS | extra_fields, set(s.json) - OPENAI_FIELDS
        assert not APPROACH_PARAMS & set(s.json)


def usage_of(calls: Sequence[tuple[Seen, str]]) -> dict[str, int]:
    """The usage the fakes reported for answered calls, given each call's answer text.

    A fake counts prompt tokens as the words of the messages, completion tokens as the
    words of the answer times the choices it returned.
    """
    prompt = sum(count_tokens(s.json["messages"]) for s, _ in calls)
    completion = sum(len(words(text)) * (s.json.get("n") or 1) for s, text in calls)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def tokens(usage: Any) -> dict[str, int]:
    """The three token counts of an SDK ``usage`` object."""
    assert usage is not None
    return {name: getattr(usage, name) for name in ("prompt_tokens", "completion_tokens", "total_tokens")}


def moa_script(provider: FakeProvider, final: Any = None) -> list[str]:
    """Script one moa run (proposals, critique, final) on ``provider``; the answer texts in order."""
    texts = ["Six, as three doubled.", "Candidate one is right.", "Six."]
    provider.script(ok(content=texts[0]), ok(content=texts[1]), final or ok(content=texts[2]))
    return texts


def check_moa_calls(seen: Sequence[Seen], texts: Sequence[str], proposals: int) -> None:
    """Proposals (one call with ``n``), critique, final: each built on what came before."""
    assert len(seen) == 3, [s.json["messages"][-1]["content"][:40] for s in seen]
    proposal, critique, final = (s.json for s in seen)
    assert proposal["n"] == proposals and proposal["messages"] == CONVERSATION
    assert len(critique["messages"]) == len(CONVERSATION) + 1
    assert texts[0] in critique["messages"][-1]["content"]
    assert len(final["messages"]) == len(CONVERSATION) + 1
    assert texts[0] in final["messages"][-1]["content"] and texts[1] in final["messages"][-1]["content"]


def bon_script(provider: FakeProvider, samples: int) -> list[str]:
    """Script one bon run (one sampling call with ``n``, then a rating per sample)."""
    texts = ["Six, as three doubled.", *["7"] * samples]
    provider.script(*(ok(content=t) for t in texts))
    return texts


def check_bon_calls(seen: Sequence[Seen], samples: int) -> None:
    """One sampling call with ``n``, then one rating call per sample."""
    assert len(seen) == 1 + samples
    assert seen[0].json["n"] == samples and seen[0].json["messages"] == CONVERSATION
    for rating in seen[1:]:
        assert len(rating.json["messages"]) == len(CONVERSATION) + 1
        assert "Six, as three doubled." in rating.json["messages"][-1]["content"]
        assert "n" not in rating.json


def error_of(body: Any) -> dict[str, Any]:
    """``body`` is an OpenAI error ``{"error": {"message", "type", "code"}}``; the inner object."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    inner = body["error"]
    assert isinstance(inner.get("message"), str) and inner["message"]
    assert isinstance(inner.get("type"), str) and inner["type"]
    assert "code" in inner
    return inner


async def post(host: Host, body: dict[str, Any]) -> tuple[int, str, bytes]:
    """POST a chat request with raw aiohttp: (status, content type, body bytes)."""
    async with aiohttp.ClientSession() as session, session.post(f"{host.url}/v1/chat/completions", json=body) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def sse_payloads(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [block[6:] for block in raw.split(b"\n\n") if block.startswith(b"data: ")]


LONG_ANSWER = " ".join(f"w{i}" for i in range(40))


async def check_abandoned_stream(host: Host, provider: FakeProvider, upstream: str, **kwargs: Any) -> None:
    """Run moa on ``provider`` whose final stream goes on for 4 s (or stalls); leave after the first word.

    The pool must be free again long before the fake would have finished writing.
    """
    gap = 0.1
    moa_script(provider, final=ok(chunk_gap=gap) if upstream == "streaming" else stall(3))
    async with host.client() as client:
        stream = await client.chat.completions.create(
            model=kwargs.pop("model", MODEL), messages=CONVERSATION, stream=True, **kwargs
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                assert chunk.choices[0].delta.content == "w0 "
                break
        await stream.close()
    final = provider.chat_requests()[-1]
    assert final.json["stream"] is True
    deadline = final.time + 15 * gap  # the fake writes its 41 events over 4 s
    async with aiohttp.ClientSession() as http:
        while (await health(http, host))["proxy"]["in_flight"] != 0:
            assert time.monotonic() < deadline, "the pool still holds the abandoned stream"
            await asyncio.sleep(0.02)
        assert (await health(http, host))["proxy"]["providers"][provider.name]["in_flight"] == 0
