"""Rate limits end to end: exact rpm under concurrency, tpm settled to real usage (streams too), headers, none and moa."""

from __future__ import annotations

import asyncio

import openai
import orjson
import pytest
from support.harness import run_host, write_config
from support.helpers import USER, entry, until

from hulumanage.sim import hang, ok

KEY = "sk-limited-key"
ANSWER = "one two three"  # the fake reports 3 completion tokens (and 2 prompt tokens for USER)
PROMPT_ESTIMATE = len("Say something.") + 4  # UTF-8 bytes of the text + 4 per message


def keyed(**limits: object) -> dict[str, object]:
    return {"keys": [{"id": "team-a", "key": KEY, **limits}]}


async def test_rpm_is_exact_under_30_concurrent_requests(fakes, proxy, clock) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    a.set_default(ok(latency=0.05))
    host = await proxy([entry(a)], clients=keyed(rpm=10))
    async with host.client(api_key=KEY) as client:
        async def one() -> object:
            try:
                return await client.chat.completions.with_raw_response.create(model="gpt-4", messages=USER)
            except openai.RateLimitError as exc:
                return exc
        results = await asyncio.gather(*(one() for _ in range(30)))
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(refused) == 20 and len(a.chat_requests()) == 10
        assert {r.code for r in refused} == {"rate_limit_exceeded"}
        assert all(60 >= int(r.response.headers["Retry-After"]) >= 59 for r in refused)
        assert {r.response.headers["x-ratelimit-remaining-requests"] for r in refused} == {"0"}
        clock.advance(30)
        with pytest.raises(openai.RateLimitError) as still:
            await client.chat.completions.create(model="gpt-4", messages=USER)
        assert int(still.value.response.headers["Retry-After"]) == 30  # seconds until a request would pass
        clock.advance(30)  # the window has slid past the first ten
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4", messages=USER)
        assert raw.headers["x-ratelimit-limit-requests"] == "10"
        assert raw.headers["x-ratelimit-remaining-requests"] == "9"
    assert len(a.chat_requests()) == 11


async def test_every_answer_carries_the_rate_limit_headers(fakes, proxy, clock) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], clients=keyed(rpm=5, tpm=1000))
    async with host.client(api_key=KEY) as client:
        first = await client.chat.completions.with_raw_response.create(model="gpt-4", messages=USER, max_tokens=10)
        clock.advance(2)
        second = await client.chat.completions.with_raw_response.create(model="gpt-4", messages=USER, max_tokens=10)
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-4", messages=USER, max_tokens=10, stream=True
        ) as streamed:
            stream_headers = streamed.headers
            await streamed.read()
    h1, h2 = first.headers, second.headers
    assert (h1["x-ratelimit-limit-requests"], h1["x-ratelimit-remaining-requests"]) == ("5", "4")
    assert h1["x-ratelimit-reset-requests"] == "1m0s"
    assert (h2["x-ratelimit-remaining-requests"], h2["x-ratelimit-reset-requests"]) == ("3", "58s")
    assert h1["x-ratelimit-limit-tokens"] == "1000"
    # the first reserved its estimate; by the second it was settled to its real usage (2 + 3 tokens)
    assert int(h1["x-ratelimit-remaining-tokens"]) == 1000 - (PROMPT_ESTIMATE + 10)
    assert int(h2["x-ratelimit-remaining-tokens"]) == 1000 - 5 - (PROMPT_ESTIMATE + 10)
    assert h2["x-ratelimit-reset-tokens"] == "58s"
    assert stream_headers["x-ratelimit-remaining-requests"] == "2"
    assert int(stream_headers["x-ratelimit-remaining-tokens"]) == 1000 - 10 - (PROMPT_ESTIMATE + 10)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_tpm_counts_real_usage_and_hides_the_usage_chunk_unless_asked(fakes, proxy, http, clock, stream) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    # each request reserves 18 + 10 = 28 tokens and really uses 5: 100 tokens a minute pass many more than 3
    host = await proxy([entry(a)], clients=keyed(tpm=100))
    async with host.client(api_key=KEY) as client:
        for _ in range(10):
            if stream:
                chunks = [c async for c in await client.chat.completions.create(
                    model="gpt-4", messages=USER, max_tokens=10, stream=True)]
                assert all(c.usage is None for c in chunks)  # not asked: the usage chunk is kept from the client
                assert all(c.choices for c in chunks)
            else:
                await client.chat.completions.create(model="gpt-4", messages=USER, max_tokens=10)
        assert all(s.json.get("stream_options", {}).get("include_usage") is True for s in a.chat_requests()
                   if stream)
        # 50 real tokens used; 50 left: a reservation of 28 fits once more, then not
        await client.chat.completions.create(model="gpt-4", messages=USER, max_tokens=10)
        with pytest.raises(openai.RateLimitError) as over:
            await client.chat.completions.create(model="gpt-4", messages=USER, max_tokens=30)
        assert over.value.code == "rate_limit_exceeded"
        assert over.value.response.headers["x-ratelimit-remaining-tokens"] == "45"
        if stream:  # a client that asks for usage gets its chunk
            chunks = [c async for c in await client.chat.completions.create(
                model="gpt-4", messages=USER, max_tokens=5, stream=True, stream_options={"include_usage": True})]
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    async with http.get(f"{host.url}/admin/spend") as resp:
        spend = orjson.loads(await resp.read())
    answered = 12 if stream else 11
    assert spend["keys"]["team-a"] == {"requests": answered, "prompt_tokens": 2 * answered,
                                       "completion_tokens": 3 * answered, "usd": 0.0}


async def test_max_parallel_refuses_the_request_over_the_limit(fakes, proxy) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    a.set_default(ok(latency=0.3))
    host = await proxy([entry(a)], clients=keyed(max_parallel=2))
    async with host.client(api_key=KEY) as client:
        async def one() -> object:
            try:
                return await client.chat.completions.create(model="gpt-4", messages=USER)
            except openai.RateLimitError as exc:
                return exc
        results = await asyncio.gather(*(one() for _ in range(5)))
        assert sum(isinstance(r, openai.RateLimitError) for r in results) == 3
        await client.chat.completions.create(model="gpt-4", messages=USER)  # the places are back


async def test_none_and_moa_requests_are_limited_and_counted_like_proxy_ones(fakes, tmp_path, isolated_env, http,
                                                                              clock) -> None:
    up, a = await fakes("up", "a", answer=ANSWER)
    path = write_config(tmp_path / "p.yaml", [entry(a)], clients=keyed(rpm=3))
    async with run_host("--approach", "none", "--base-url", up.base_url, "--proxy-config", str(path)) as host:
        async with host.client(api_key=KEY) as client:
            await client.chat.completions.create(model="gpt-4", messages=USER)  # none: --base-url
            await client.chat.completions.create(model="moa-gpt-4", messages=USER)  # moa over none
            await client.chat.completions.create(model="proxy-gpt-4", messages=USER)
            for model in ("gpt-4", "moa-gpt-4", "proxy-gpt-4"):
                with pytest.raises(openai.RateLimitError):
                    await client.chat.completions.create(model=model, messages=USER)
        async with http.get(f"{host.url}/admin/spend") as resp:
            spend = await resp.json()
    upstream_calls = len(up.chat_requests())
    assert upstream_calls > 2 and len(a.chat_requests()) == 1  # moa made several calls, one client request
    assert spend["keys"]["team-a"]["requests"] == 3
    # every upstream answer's usage counts (3 words per choice), moa's proposals included
    assert spend["keys"]["team-a"]["completion_tokens"] == 3 + sum(3 * s.json.get("n", 1) for s in up.chat_requests())
    assert spend["providers"]["none"]["requests"] == upstream_calls
    assert spend["providers"]["a"]["requests"] == 1
    assert "none" in spend["unpriced"]


FRONT_ENDS = pytest.mark.parametrize("front", [(), ("--no-fast-path",)], ids=["fast-path", "aiohttp"])


@FRONT_ENDS
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_client_that_leaves_before_its_answer_gives_its_place_back(fakes, proxy, http, front, stream) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    a.script(hang(5))  # the first request waits upstream; the client leaves meanwhile
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front), clients=keyed(max_parallel=1))
    body = {"model": "gpt-4", "messages": USER, "stream": stream}
    headers = {"Authorization": f"Bearer {KEY}"}
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.3):
            async with http.post(f"{host.url}/v1/chat/completions", json=body, headers=headers) as resp:
                await resp.read()

    async def answered() -> bool:
        async with http.post(f"{host.url}/v1/chat/completions", json=body, headers=headers) as resp:
            await resp.read()
            return resp.status == 200

    await until(answered, timeout=3)  # the place came back: not a 429 for ever after
