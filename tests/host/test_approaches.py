"""The built-in ``moa`` and ``bon`` approaches, run directly against a real fake upstream.

Every upstream call goes through a real ``openai.AsyncOpenAI`` to a
``hulumanage.sim.FakeProvider`` on 127.0.0.1. To play an upstream that ignores
``n`` (or maps model names), the client's HTTP transport rewrites the request
body on its way to the fake; the fake itself is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai
import pytest

from hulumanage.approaches.bon import BestOfN, parse_rating
from hulumanage.approaches.moa import MixtureOfAgents
from hulumanage.call import Call
from hulumanage.sim import FakeProvider, error, ok
from hulumanage.sim.payload import count_tokens, words

MODEL = "gpt-4"
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3 + 3? Explain."},
]
TOOLS = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object", "properties": {}}}}]


class RewritingTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport that edits chat request bodies before they reach the upstream.

    ``drop_n``: remove ``n`` (an upstream that ignores it answers one choice).
    ``model``: replace the model name (an upstream that maps model names).
    """

    def __init__(self, drop_n: bool = False, model: str | None = None) -> None:
        """Wrap a real HTTP transport."""
        self.inner = httpx2.AsyncHTTPTransport()
        self.drop_n = drop_n
        self.model = model

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Rewrite the JSON body of a chat request, then send it."""
        if request.method == "POST" and request.url.path.endswith("/chat/completions"):
            body = json.loads(await request.aread())
            if self.drop_n:
                body.pop("n", None)
            if self.model is not None:
                body["model"] = self.model
            headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
            request = httpx2.Request(request.method, request.url, headers=headers, json=body)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    """A fake upstream on a free port."""
    async with FakeProvider("a") as provider:
        yield provider


@asynccontextmanager
async def make_client(fake: FakeProvider, **rewrite: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    """An AsyncOpenAI on ``fake``; with ``rewrite`` its requests pass a RewritingTransport."""
    http_client = httpx2.AsyncClient(transport=RewritingTransport(**rewrite)) if rewrite else None
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0, http_client=http_client)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def client(fake: FakeProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    """A plain client on ``fake`` (the upstream honours ``n``)."""
    async with make_client(fake) as c:
        yield c


def make_call(client: Any, extra: dict[str, Any] | None = None, **fields: Any) -> Call:
    """A Call for a request on the standard conversation, ``fields`` added to the body."""
    request = {"model": MODEL, "messages": [dict(m) for m in CONVERSATION], **fields}
    return Call(
        request=request,
        extra=dict(extra or {}),
        stream=request.get("stream") is True,
        client=client,
        app=None,
        approaches={},
    )


def expected_usage(fake: FakeProvider, contents: list[str]) -> dict[str, int]:
    """The summed usage the fake reported, given the answer text of each chat request in order.

    The fake counts prompt tokens as words of the messages and completion tokens as
    words of the answer times the choices it returned.
    """
    seen = fake.chat_requests()
    assert len(seen) == len(contents)
    prompt = sum(count_tokens(s.json["messages"]) for s in seen)
    completion = sum(len(words(text)) * (s.json.get("n") or 1) for s, text in zip(seen, contents))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def assert_prefix(fake: FakeProvider) -> None:
    """Every upstream call starts with the client's conversation, untouched and in order."""
    for seen in fake.chat_requests():
        assert seen.json["messages"][: len(CONVERSATION)] == CONVERSATION
        assert seen.json["model"] == MODEL


async def collect(stream: Any) -> list[dict[str, Any]]:
    """Every chunk of an approach's stream."""
    assert hasattr(stream, "__aiter__"), f"expected a stream, got {type(stream).__name__}"
    return [chunk async for chunk in stream]


def content_of(chunks: list[dict[str, Any]], index: int = 0) -> list[str]:
    """The non-empty content deltas of choice ``index``."""
    return [
        c["delta"]["content"]
        for chunk in chunks
        for c in chunk["choices"]
        if c["index"] == index and c["delta"].get("content")
    ]


# -- moa ------------------------------------------------------------------------------


async def test_moa_three_steps_messages_and_usage(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    """Proposals (one call, n), critique, final: conversation kept, client fields honoured, usage summed."""
    fake.script(ok(content="Six, because three doubled."), ok(content="Candidate 1 is right."), ok(content="Six."))
    call = make_call(client, {"moa_proposals": 3}, temperature=0.2, max_tokens=100, n=2, tools=TOOLS, top_k=5)

    result = await MixtureOfAgents().run(call)

    proposal, critique, final = (s.json for s in fake.chat_requests())
    assert_prefix(fake)
    assert proposal["n"] == 3 and proposal["temperature"] == 0.7
    assert proposal["tools"] == TOOLS and proposal["top_k"] == 5
    assert len(critique["messages"]) == len(CONVERSATION) + 1
    assert critique["messages"][-1]["role"] == "user"
    assert "Candidate 3:\nSix, because three doubled." in critique["messages"][-1]["content"]
    assert "critique" in critique["messages"][-1]["content"].lower()
    assert "n" not in critique and "tools" not in critique and "stream" not in critique
    last = final["messages"][-1]["content"]
    assert len(final["messages"]) == len(CONVERSATION) + 1
    assert "Six, because three doubled." in last and "Candidate 1 is right." in last
    assert final["n"] == 2 and final["temperature"] == 0.2 and final["max_tokens"] == 100
    assert final["tools"] == TOOLS and "stream" not in final

    assert result["object"] == "chat.completion" and result["model"] == MODEL
    assert isinstance(result["id"], str) and isinstance(result["created"], int)
    assert [c["index"] for c in result["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in result["choices"]] == ["Six.", "Six."]
    assert result["usage"] == expected_usage(fake, ["Six, because three doubled.", "Candidate 1 is right.", "Six."])


async def test_moa_fills_up_proposals_when_n_is_ignored(fake: FakeProvider) -> None:
    """An upstream that answers one choice for n=3 gets two more concurrent n=1 calls."""
    contents = ["Alpha idea.", "Beta idea.", "Gamma idea.", "All fine.", "Final."]
    fake.script(*(ok(content=text) for text in contents))
    async with make_client(fake, drop_n=True) as client:
        result = await MixtureOfAgents().run(make_call(client, {"moa_proposals": 3}))

    seen = fake.chat_requests()
    assert len(seen) == 5
    assert_prefix(fake)
    critique = seen[3].json["messages"][-1]["content"]
    for text in contents[:3]:
        assert text in critique
    assert "Candidate 3:" in critique and "Candidate 4:" not in critique
    assert result["choices"][0]["message"]["content"] == "Final."
    assert result["usage"] == expected_usage(fake, contents)


async def test_moa_rewrites_the_model_name(fake: FakeProvider) -> None:
    """The completion names the model the client asked for, whatever the upstream answered."""
    async with make_client(fake, model="mapped-model") as client:
        result = await MixtureOfAgents().run(make_call(client, {"moa_proposals": 1}, stream=False))
    assert {s.json["model"] for s in fake.chat_requests()} == {"mapped-model"}
    assert result["model"] == MODEL


@pytest.mark.parametrize("include_usage", [False, True])
async def test_moa_streams_the_final_call(fake: FakeProvider, include_usage: bool) -> None:
    """The final call streams through chunk by chunk; the last chunk carries the summed usage."""
    contents = ["Idea.", "Looks right.", "Six is the answer here."]
    fake.script(*(ok(content=text) for text in contents))
    fields: dict[str, Any] = {"stream": True}
    if include_usage:
        fields["stream_options"] = {"include_usage": True}
    async with make_client(fake, model="mapped-model") as client:
        chunks = await collect(await MixtureOfAgents().run(make_call(client, {"moa_proposals": 2}, **fields)))

    seen = [s.json for s in fake.chat_requests()]
    assert len(seen) == 3
    assert "stream" not in seen[0] and "stream" not in seen[1]
    assert seen[2]["stream"] is True and seen[2]["stream_options"] == {"include_usage": True}
    pieces = content_of(chunks)
    assert len(pieces) > 1
    assert "".join(pieces) == "Six is the answer here."
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["model"] == MODEL for chunk in chunks)
    assert [c for c in chunks if c.get("usage")] == [chunks[-1]]
    assert chunks[-1]["usage"] == expected_usage(fake, contents)
    if include_usage:
        assert chunks[-1]["choices"] == []
    else:
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_moa_propagates_upstream_errors(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    """An upstream 429 reaches the host as an exception with status_code and message."""
    fake.script(error(429, code="rate_limit_exceeded", message="slow down"))
    with pytest.raises(openai.APIStatusError) as info:
        await MixtureOfAgents().run(make_call(client))
    assert info.value.status_code == 429
    assert "slow down" in info.value.message
    assert len(fake.chat_requests()) == 1


async def test_moa_stream_error_on_final_call_raises_before_streaming(
    fake: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    """A failing final call is raised by run() itself, so the host can answer with its status."""
    fake.script(ok(), ok(), error(400, message="bad final"))
    with pytest.raises(openai.APIStatusError) as info:
        await MixtureOfAgents().run(make_call(client, {"moa_proposals": 1}, stream=True))
    assert info.value.status_code == 400


@pytest.mark.parametrize("extra", [{"moa_proposals": 0}, {"moa_proposals": "3"}, {"moa_temperature": 5}])
async def test_moa_rejects_bad_parameters(
    fake: FakeProvider, client: openai.AsyncOpenAI, extra: dict[str, Any]
) -> None:
    """Bad approach parameters are a 400 before any upstream call."""
    with pytest.raises(Exception) as info:
        await MixtureOfAgents().run(make_call(client, extra))
    assert getattr(info.value, "status_code", None) == 400
    assert next(iter(extra)) in str(info.value)
    assert fake.chat_requests() == []


# -- bon ------------------------------------------------------------------------------


async def test_bon_picks_the_highest_rated_sample(fake: FakeProvider) -> None:
    """Three different samples, one rating call each; the best-rated one is returned."""
    samples = ["Alpha answer.", "Beta answer.", "Gamma answer."]
    ratings = ["Rating: 4", "9/10", "no idea"]
    fake.script(*(ok(content=text) for text in samples + ratings))
    async with make_client(fake, drop_n=True) as client:
        result = await BestOfN().run(make_call(client, {"bon_n": 3}, tools=TOOLS, temperature=0.3))

    seen = [s.json for s in fake.chat_requests()]
    assert len(seen) == 6
    assert_prefix(fake)
    assert all(s["temperature"] == 0.8 and s["tools"] == TOOLS for s in seen[:3])
    rated: dict[str, str] = {}
    for request, rating in zip(seen[3:], ratings):
        assert len(request["messages"]) == len(CONVERSATION) + 1
        assert "tools" not in request and request["temperature"] == 0
        prompt = request["messages"][-1]["content"]
        [candidate] = [text for text in samples if text in prompt]
        rated[candidate] = rating
    assert sorted(rated) == sorted(samples)  # each sample rated exactly once
    best = next(text for text, rating in rated.items() if rating == "9/10")

    assert result["model"] == MODEL and result["object"] == "chat.completion"
    assert [c["message"]["content"] for c in result["choices"]] == [best]
    assert result["choices"][0]["index"] == 0
    assert result["usage"] == expected_usage(fake, samples + ratings)


async def test_bon_ties_go_to_the_first_sample(fake: FakeProvider) -> None:
    """Equal ratings: the first sample (the first call's choice) wins."""
    fake.script(ok(content="First."), ok(content="Second."), ok(content="7"), ok(content="7"))
    async with make_client(fake, drop_n=True) as client:
        result = await BestOfN().run(make_call(client, {"bon_n": 2}))
    assert result["choices"][0]["message"]["content"] == "First."
    assert len(fake.chat_requests()) == 4


async def test_bon_uses_n_when_honoured_and_returns_client_n_choices(
    fake: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    """One sample call with n=bon_n, one rating call per sample, the top n choices returned."""
    fake.script(ok(content="Same."), ok(content="3"), ok(content="8"), ok(content="5"))
    result = await BestOfN().run(make_call(client, {"bon_n": 3, "bon_temperature": 1.1}, n=2))

    seen = [s.json for s in fake.chat_requests()]
    assert len(seen) == 4
    assert seen[0]["n"] == 3 and seen[0]["temperature"] == 1.1
    assert all("n" not in s for s in seen[1:])
    assert [c["index"] for c in result["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in result["choices"]] == ["Same.", "Same."]
    assert result["usage"] == expected_usage(fake, ["Same.", "3", "8", "5"])


async def test_bon_samples_at_least_the_client_n(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    """A client n above bon_n raises the number of samples to n."""
    result = await BestOfN().run(make_call(client, {"bon_n": 2}, n=4))
    seen = fake.chat_requests()
    assert seen[0].json["n"] == 4 and len(seen) == 1 + 4
    assert len(result["choices"]) == 4


async def test_bon_streams_the_chosen_answer(fake: FakeProvider) -> None:
    """stream=True: the best answer as several content chunks, finish "stop", usage on the last chunk."""
    samples = ["Low rated reply.", "The best reply of all, clearly."]
    ratings = ["2", "10"]
    fake.script(*(ok(content=text) for text in samples + ratings))
    async with make_client(fake, drop_n=True) as client:
        chunks = await collect(await BestOfN().run(make_call(client, {"bon_n": 2}, stream=True)))

    seen = [s.json for s in fake.chat_requests()]
    assert all("stream" not in s for s in seen)
    best = next(text for text in samples if text in seen[2 + ratings.index("10")]["messages"][-1]["content"])
    pieces = content_of(chunks)
    assert len(pieces) > 1 and "".join(pieces) == best
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["model"] == MODEL for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]
    assert finishes == ["stop"]
    assert chunks[-1]["usage"] == expected_usage(fake, samples + ratings)


async def test_bon_propagates_rating_errors(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    """A failing rating call fails the request with the upstream's status."""
    fake.script(ok(), ok(content="5"), error(503, message="overloaded"), ok(content="5"))
    with pytest.raises(openai.APIStatusError) as info:
        await BestOfN().run(make_call(client, {"bon_n": 3}))
    assert info.value.status_code == 503


@pytest.mark.parametrize(
    ("text", "rating"),
    [("8", 8), ("Rating: 7/10", 7), ("**10**", 10), ("12", 10), ("none", 0), ("", 0), (None, 0), (" 03 ", 3)],
)
def test_parse_rating(text: str | None, rating: int) -> None:
    """The first integer, clamped to 0-10; no integer is 0."""
    assert parse_rating(text) == rating


def test_approach_metadata() -> None:
    """Slugs, params and the non-terminal flag the host relies on."""
    moa, bon = MixtureOfAgents(), BestOfN()
    assert (moa.slug, bon.slug) == ("moa", "bon")
    assert set(moa.params) == {"moa_proposals", "moa_temperature"}
    assert set(bon.params) == {"bon_n", "bon_temperature"}
    assert moa.terminal is False and bon.terminal is False
    assert moa.description and bon.description
