"""Simulated providers (hulumanage.sim) seen through the official openai SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from hulumanage.sim import (
    DEFAULT_ANSWER,
    FLAKY,
    PROFILE_HANG_CAP,
    Behaviour,
    FakeProvider,
    Profile,
    content_filter,
    context_length,
    cut,
    down,
    error,
    hang,
    malformed,
    no_done,
    ok,
    rate_limited,
    reset,
    server_error,
    slow_first_token,
    stall,
    start_fleet,
)
from hulumanage.sim.payload import words

KEY = "sk-test"
MESSAGES = [{"role": "user", "content": "Say the pangram please"}]
ANSWER_WORDS = DEFAULT_ANSWER.split()


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    """A started provider that requires ``KEY``."""
    async with FakeProvider("alpha", api_key=KEY) as p:
        yield p


@pytest.fixture
async def client(provider: FakeProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    """An SDK client for ``provider`` without retries."""
    c = openai.AsyncOpenAI(base_url=provider.base_url, api_key=KEY, max_retries=0, timeout=5.0)
    yield c
    await c.close()


async def chat(client: openai.AsyncOpenAI, **kw: Any) -> Any:
    """One non-streaming chat call with default model and messages."""
    kw.setdefault("model", "gpt-4")
    kw.setdefault("messages", MESSAGES)
    return await client.chat.completions.create(**kw)


async def collect(client: openai.AsyncOpenAI, **kw: Any) -> list[Any]:
    """All chunks of one streaming chat call."""
    stream = await chat(client, stream=True, **kw)
    return [chunk async for chunk in stream]


def text_of(chunks: list[Any], index: int = 0) -> str:
    """The content streamed for choice ``index``."""
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == index)


async def raw_events(provider: FakeProvider, body: dict[str, Any]) -> list[bytes]:
    """POST ``body`` with aiohttp and return the SSE lines that are not blank."""
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with session.post(f"{provider.base_url}/chat/completions", json=body, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            return [line.rstrip(b"\n") async for line in resp.content if line.strip()]


# -- normal answers ---------------------------------------------------------------


async def test_completion_has_the_openai_shape(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-fake-provider"] == "alpha"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert completion.system_fingerprint == "fake-alpha"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == (
        "assistant",
        DEFAULT_ANSWER,
        "stop",
    )
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == len(ANSWER_WORDS)
    assert usage.prompt_tokens == len(MESSAGES[0]["content"].split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_n_choices(client: openai.AsyncOpenAI) -> None:
    completion = await chat(client, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.message.content == DEFAULT_ANSWER for c in completion.choices)
    assert completion.usage is not None and completion.usage.completion_tokens == 3 * len(ANSWER_WORDS)
    chunks = await collect(client, n=2)
    assert text_of(chunks, 0) == text_of(chunks, 1) == DEFAULT_ANSWER


async def test_stream_sends_one_word_per_chunk(client: openai.AsyncOpenAI) -> None:
    chunks = await collect(client)
    assert all(c.object == "chat.completion.chunk" and c.system_fingerprint == "fake-alpha" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert content == [w + " " for w in ANSWER_WORDS[:-1]] + [ANSWER_WORDS[-1]]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert len(chunks) == len(ANSWER_WORDS) + 2
    assert all(c.usage is None for c in chunks)


async def test_stream_usage_chunk_when_asked(client: openai.AsyncOpenAI) -> None:
    chunks = await collect(client, stream_options={"include_usage": True})
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == len(ANSWER_WORDS)
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_stream_ends_with_done(provider: FakeProvider) -> None:
    lines = await raw_events(provider, {"model": "gpt-4", "messages": MESSAGES, "stream": True})
    assert lines[-1] == b"data: [DONE]"
    assert all(line.startswith(b"data: ") for line in lines)
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "stop"


async def test_content_override_and_custom_answer(client: openai.AsyncOpenAI, provider: FakeProvider) -> None:
    provider.script(ok(content="Scripted words here"))
    assert (await chat(client)).choices[0].message.content == "Scripted words here"
    async with FakeProvider("beta", answer="Only this.") as other:
        c = openai.AsyncOpenAI(base_url=other.base_url, api_key="any", max_retries=0)
        try:
            assert (await chat(c)).choices[0].message.content == "Only this."
        finally:
            await c.close()


@pytest.mark.parametrize(
    ("prefill", "expected"),
    [
        ("The quick brown", " fox jumps over the lazy dog."),
        ("The quick brown fox jumps over the lazy dog.", ""),
        ("Something else", DEFAULT_ANSWER),
    ],
)
async def test_prefill_gets_the_continuation(client: openai.AsyncOpenAI, prefill: str, expected: str) -> None:
    messages = [*MESSAGES, {"role": "assistant", "content": prefill}]
    assert (await chat(client, messages=messages)).choices[0].message.content == expected
    assert text_of(await collect(client, messages=messages)) == expected


async def test_models_list_and_status(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data] == ["gpt-4", "gpt-4o-mini"]
    assert all(m.owned_by == "alpha" for m in page.data)
    provider.set_models_status(503)
    with pytest.raises(openai.InternalServerError) as info:
        await client.models.list()
    assert info.value.status_code == 503
    assert [s.behaviour for s in provider.requests] == ["models", "models"]
    assert provider.chat_requests() == []


async def test_latency_and_chunk_gap_are_applied(client: openai.AsyncOpenAI, provider: FakeProvider) -> None:
    provider.script(ok(latency=0.15), ok(chunk_gap=0.02))
    start = time.monotonic()
    await chat(client)
    assert time.monotonic() - start >= 0.15
    start = time.monotonic()
    chunks = await collect(client)
    assert time.monotonic() - start >= 0.02 * (len(chunks) - 1)


# -- auth, bad requests, records --------------------------------------------------------


async def test_wrong_key_is_401_and_keeps_the_script(provider: FakeProvider) -> None:
    provider.script(server_error())
    bad = openai.AsyncOpenAI(base_url=provider.base_url, api_key="wrong", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError) as info:
            await chat(bad)
        assert info.value.code == "invalid_api_key"
        assert info.value.type == "invalid_request_error"
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
    finally:
        await bad.close()
    assert [s.behaviour for s in provider.requests] == ["unauthorized", "unauthorized"]
    good = openai.AsyncOpenAI(base_url=provider.base_url, api_key=KEY, max_retries=0)
    try:
        with pytest.raises(openai.InternalServerError):  # the script was not used up
            await chat(good)
    finally:
        await good.close()


async def test_bad_request_is_400_and_unknown_path_404(provider: FakeProvider) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"{provider.base_url}/chat/completions", data=b"{nope") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["type"] == "invalid_request_error"
        async with session.post(f"{provider.base_url}/chat/completions", json={"model": "gpt-4"}) as resp:
            assert resp.status == 400
        async with session.get(f"{provider.base_url}/embeddings") as resp:
            assert resp.status == 404
            assert resp.headers["x-fake-provider"] == "alpha"
            assert "error" in await resp.json()
    assert [s.behaviour for s in provider.requests] == ["bad_request", "bad_request", "not_found"]


async def test_seen_records_each_request(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    before = time.monotonic()
    await chat(client, temperature=0.5)
    await client.models.list()
    first, second = provider.requests
    assert (first.method, first.path, first.behaviour) == ("POST", "/v1/chat/completions", "ok")
    assert first.json["temperature"] == 0.5 and first.json["messages"] == MESSAGES
    assert first.headers["Authorization"] == f"Bearer {KEY}"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert isinstance(first.headers, dict) and "AUTHORIZATION" in first.headers
    assert before <= first.time <= second.time <= time.monotonic()
    assert (second.method, second.path, second.json) == ("GET", "/v1/models", None)
    assert provider.chat_requests() == [first]


async def test_script_runs_in_order_then_the_default(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.set_default(ok(content="default"))
    provider.script(server_error(), ok(content="second"))
    with pytest.raises(openai.InternalServerError):
        await chat(client)
    assert (await chat(client)).choices[0].message.content == "second"
    assert (await chat(client)).choices[0].message.content == "default"
    assert (await chat(client)).choices[0].message.content == "default"
    assert [s.behaviour for s in provider.chat_requests()] == ["error", "ok", "ok", "ok"]


async def test_wait_for_requests(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    waiter = asyncio.create_task(provider.wait_for_requests(2, timeout=2.0, chat_only=True))
    await asyncio.sleep(0)
    assert not waiter.done()
    await client.models.list()
    await chat(client)
    await asyncio.sleep(0)
    assert not waiter.done()  # one chat request so far
    await chat(client)
    await asyncio.wait_for(waiter, 1.0)
    await provider.wait_for_requests(3, timeout=0.1)  # all requests: already there
    with pytest.raises(TimeoutError, match="expected 4"):
        await provider.wait_for_requests(4, timeout=0.05)


# -- errors -------------------------------------------------------------------------------


async def test_rate_limited_with_retry_after(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    provider.script(rate_limited(retry_after=7.0), rate_limited(retry_after=date), rate_limited())
    for expected in ("7", date, None):
        with pytest.raises(openai.RateLimitError) as info:
            await chat(client)
        assert info.value.status_code == 429
        assert info.value.code == "rate_limit_exceeded"
        assert info.value.response.headers.get("retry-after") == expected
        assert info.value.response.headers["x-fake-provider"] == "alpha"


@pytest.mark.parametrize(
    ("behaviour", "exc", "status", "code"),
    [
        (server_error(), openai.InternalServerError, 500, None),
        (server_error(503), openai.InternalServerError, 503, None),
        (context_length(), openai.BadRequestError, 400, "context_length_exceeded"),
        (content_filter(), openai.BadRequestError, 400, "content_filter"),
        (
            error(404, code="model_not_found", type="invalid_request_error"),
            openai.NotFoundError,
            404,
            "model_not_found",
        ),
    ],
)
async def test_error_behaviours(
    provider: FakeProvider,
    client: openai.AsyncOpenAI,
    behaviour: Behaviour,
    exc: type[openai.APIStatusError],
    status: int,
    code: str | None,
) -> None:
    provider.script(behaviour, behaviour)
    for stream in (False, True):
        with pytest.raises(exc) as info:
            await chat(client, stream=stream)
        assert info.value.status_code == status
        assert info.value.code == code
        body = info.value.body
        assert isinstance(body, dict) and set(body) >= {"message", "type", "code"}


async def test_content_filter_message_and_types(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.script(content_filter(), context_length(), server_error(502))
    with pytest.raises(openai.BadRequestError) as info:
        await chat(client)
    assert info.value.body["message"] == (  # type: ignore[index]
        "The response was filtered due to the prompt triggering content management policy."
    )
    assert info.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        await chat(client)
    assert info.value.type == "invalid_request_error"
    with pytest.raises(openai.InternalServerError) as err:
        await chat(client)
    assert err.value.status_code == 502 and err.value.type == "server_error"


async def test_error_with_extra_headers(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.script(error(418, message="teapot", headers={"x-extra": "1"}, retry_after=0.5))
    with pytest.raises(openai.APIStatusError) as info:
        await chat(client)
    assert info.value.status_code == 418
    assert info.value.response.headers["x-extra"] == "1"
    assert info.value.response.headers["retry-after"] == "0.5"
    assert info.value.body["message"] == "teapot"  # type: ignore[index]


def test_behaviour_validation() -> None:
    with pytest.raises(ValueError, match="unknown behaviour"):
        Behaviour("explode")
    with pytest.raises(ValueError):
        error(200)
    with pytest.raises(ValueError):
        ok(latency=-1)
    with pytest.raises(ValueError):
        Profile(error_rate=0.8, hang_rate=0.3)
    with pytest.raises(ValueError):
        Profile(latency=(0.5, 0.1))


# -- connection faults ------------------------------------------------------------------


async def test_reset_is_a_connection_error(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.script(reset(), reset())
    with pytest.raises(openai.APIConnectionError):
        await chat(client)
    with pytest.raises(openai.APIConnectionError):
        await chat(client, stream=True)
    assert [s.behaviour for s in provider.chat_requests()] == ["reset", "reset"]
    assert (await chat(client)).choices[0].message.content == DEFAULT_ANSWER


async def test_cut_stream_never_finishes(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.script(cut(2))
    chunks: list[Any] = []
    stream = await chat(client, stream=True)
    with pytest.raises(openai.APIConnectionError):  # the SDK reports the dropped body
        async for chunk in stream:
            chunks.append(chunk)
    assert text_of(chunks) == "The quick "
    assert len(chunks) == 3
    assert all(c.choices[0].finish_reason is None for c in chunks)


async def test_cut_stream_raw(provider: FakeProvider) -> None:
    provider.script(cut(1))
    lines: list[bytes] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        await raw_events_into(provider, lines)
    assert len(lines) == 2
    assert b"[DONE]" not in b"".join(lines) and b'"stop"' not in b"".join(lines)


async def raw_events_into(provider: FakeProvider, lines: list[bytes]) -> None:
    """Stream a request with aiohttp, appending each SSE line to ``lines`` as it arrives."""
    body = {"model": "gpt-4", "messages": MESSAGES, "stream": True}
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session,
        session.post(f"{provider.base_url}/chat/completions", json=body) as resp,
    ):
        async for line in resp.content:
            if line.strip():
                lines.append(line.rstrip(b"\n"))


async def test_cut_without_stream_drops_before_the_body(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.script(cut(0))
    with pytest.raises(openai.APIConnectionError):
        await chat(client)


async def test_stall_goes_silent_until_released(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.script(stall(2))
    chunks: list[Any] = []
    three = asyncio.Event()

    async def consume() -> None:
        async for chunk in await chat(client, stream=True):
            chunks.append(chunk)
            if len(chunks) == 3:
                three.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three.wait(), 2.0)
    await asyncio.sleep(0.2)
    assert len(chunks) == 3 and not task.done()  # silent after role + 2 words
    provider.release_hangs()
    await asyncio.wait_for(task, 2.0)
    assert text_of(chunks) == DEFAULT_ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_malformed_event_then_normal_stream(provider: FakeProvider) -> None:
    provider.script(malformed(2))
    lines = await raw_events(provider, {"model": "gpt-4", "messages": MESSAGES, "stream": True})
    assert lines[2] == b"data: {not json"
    good = [line for i, line in enumerate(lines) if i != 2]
    assert good[-1] == b"data: [DONE]"
    parsed = [json.loads(line[6:]) for line in good[:-1]]
    assert "".join(p["choices"][0]["delta"].get("content", "") for p in parsed) == DEFAULT_ANSWER
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"


async def test_no_done_ends_cleanly_without_the_marker(provider: FakeProvider) -> None:
    provider.script(no_done())
    body = {"model": "gpt-4", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    lines = await raw_events(provider, body)  # raises if the body is not ended cleanly
    assert b"[DONE]" not in b"".join(lines)
    last = json.loads(lines[-1][6:])
    assert last["usage"]["completion_tokens"] == len(ANSWER_WORDS)
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "stop"


async def test_slow_first_token_sends_headers_first(provider: FakeProvider) -> None:
    provider.script(slow_first_token(0.5))
    body = {"model": "gpt-4", "messages": MESSAGES, "stream": True}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        start = time.monotonic()
        resp = await asyncio.wait_for(session.post(f"{provider.base_url}/chat/completions", json=body), 0.45)
        async with resp:
            assert resp.status == 200
            first = await resp.content.readline()
            assert time.monotonic() - start >= 0.5
            assert b'"role":"assistant"' in first
            rest = await resp.read()
    assert rest.rstrip().endswith(b"data: [DONE]")


async def test_hang_times_out_the_client(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.script(hang())
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.2).chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert provider.chat_requests()[0].behaviour == "hang"


async def test_hang_answers_once_released(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.script(hang(), hang())
    tasks = [asyncio.create_task(chat(client)), asyncio.create_task(collect(client))]
    await provider.wait_for_requests(2, timeout=2.0)
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in tasks)
    provider.release_hangs()
    completion, chunks = await asyncio.wait_for(asyncio.gather(*tasks), 2.0)
    assert completion.choices[0].message.content == DEFAULT_ANSWER
    assert text_of(chunks) == DEFAULT_ANSWER
    provider.script(hang(seconds=0.05))  # a capped hang answers by itself
    assert (await asyncio.wait_for(chat(client), 2.0)).choices[0].message.content == DEFAULT_ANSWER


async def test_close_is_prompt_with_hung_requests() -> None:
    provider = await FakeProvider("gamma").start()
    provider.script(hang(), stall(1))
    c = openai.AsyncOpenAI(base_url=provider.base_url, api_key="x", max_retries=0, timeout=30.0)
    try:
        hung = asyncio.create_task(chat(c))
        stalled = asyncio.create_task(collect(c))
        await provider.wait_for_requests(2, timeout=2.0)
        start = time.monotonic()
        await asyncio.wait_for(provider.close(), 2.0)
        assert time.monotonic() - start < 0.4  # woken and dropped, not left to aiohttp's shutdown timeout
        for task in (hung, stalled):
            with pytest.raises(openai.APIConnectionError):
                await asyncio.wait_for(task, 2.0)
        await provider.close()  # idempotent
        with socket.socket() as sock, pytest.raises(OSError):
            sock.connect(("127.0.0.1", provider.port))
    finally:
        await c.close()


# -- outages and profiles ---------------------------------------------------------------


async def test_down_answers_503_to_everything_then_recovers(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.script(down(0.3), ok(content="after"))
    with pytest.raises(openai.InternalServerError) as info:
        await chat(client)
    assert info.value.status_code == 503 and info.value.code == "service_unavailable"
    assert provider.is_down
    with pytest.raises(openai.InternalServerError):
        await client.models.list()
    with pytest.raises(openai.InternalServerError):  # does not use up the script
        await chat(client)
    await asyncio.sleep(0.35)
    assert not provider.is_down
    assert (await chat(client)).choices[0].message.content == "after"
    assert [s.behaviour for s in provider.requests] == ["down", "down", "down", "ok"]


async def test_down_via_set_default_starts_now(provider: FakeProvider, client: openai.AsyncOpenAI) -> None:
    provider.set_default(down(0.2))
    with pytest.raises(openai.InternalServerError):
        await client.models.list()
    await asyncio.sleep(0.25)
    assert (await chat(client)).choices[0].message.content == DEFAULT_ANSWER  # the default stays ok
    provider.down_for(5)
    with pytest.raises(openai.InternalServerError):
        await chat(client)


async def test_profile_draws_are_seeded() -> None:
    profile = Profile(latency=(0.0, 0.001), error_rate=0.5)
    fleet = await start_fleet(
        [{"name": "p1", "profile": profile, "seed": 7}, FakeProvider("p2", profile=profile, seed=7)]
    )
    clients = [openai.AsyncOpenAI(base_url=p.base_url, api_key="x", max_retries=0) for p in fleet]
    try:
        assert fleet[0].port != fleet[1].port
        for c in clients:
            for _ in range(12):
                try:
                    await chat(c)
                except openai.InternalServerError as e:
                    assert e.status_code == 503
        first, second = ([s.behaviour for s in p.requests] for p in fleet)
        assert first == second
        assert set(first) == {"ok", "error"}
    finally:
        for c in clients:
            await c.close()
        for p in fleet:
            await p.close()


def test_profile_hang_is_capped_and_presets() -> None:
    rng = random.Random(1)
    picks = [Profile(hang_rate=1.0).pick(rng) for _ in range(3)]
    assert all(b.name == "hang" and b.seconds == PROFILE_HANG_CAP for b in picks)
    draws = [FLAKY.pick(rng) for _ in range(400)]
    names = [b.name for b in draws]
    assert 60 <= names.count("error") <= 140
    assert 0 < names.count("hang") <= 50
    assert all(0.03 <= b.latency <= 0.1 for b in draws if b.name == "ok")


def test_words_split_keeps_the_text() -> None:
    assert words(DEFAULT_ANSWER) == [w + " " for w in ANSWER_WORDS[:-1]] + [ANSWER_WORDS[-1]]
    assert "".join(words(" fox  jumps\nover ")) == " fox  jumps\nover "
    assert words("") == []
