"""``/v1/embeddings`` and ``/v1/completions`` end to end: through the pool like chat, behind the same gate."""

from __future__ import annotations

import aiohttp
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.harness import run_host
from support.helpers import entry

from hulumanage.sim import DEFAULT_ANSWER, cut, server_error

KEY = "sk-gateway-team-key"
CLIENTS = {"keys": [{"id": "team-a", "key": KEY}]}
EMBED = {"embed": "text-embedding-3-small"}
LEGACY = {"legacy": "gpt-3.5-turbo-instruct"}
NO_BREAKER = {"circuit_breaker": {"enabled": False}, "retries": {"attempts_per_provider": 1}}


def sse_payloads(body: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


async def test_embeddings_through_the_pool_with_model_map(fakes, proxy) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a, model_map=EMBED)])
    async with host.client() as client:
        raw = await client.embeddings.with_raw_response.create(model="embed", input=["hello", "world"])
        first = raw.parse()
        again = await client.embeddings.create(model="embed", input="hello", encoding_format="float")
    assert raw.headers["x-hulumanage-provider"] == "a" and raw.headers.get("x-request-id")
    assert [len(d.embedding) for d in first.data] == [8, 8]
    assert first.data[0].embedding != first.data[1].embedding
    assert again.data[0].embedding == pytest.approx(first.data[0].embedding, rel=1e-6)  # base64 then float: same input
    assert first.usage.prompt_tokens == 2
    seen = [s for s in a.requests if s.path == "/v1/embeddings"]
    assert [s.json["model"] for s in seen] == ["text-embedding-3-small"] * 2  # the mapped name went upstream


async def test_completions_fail_over_from_a_failing_provider(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.set_default(server_error(502))
    host = await proxy([entry(a, model_map=LEGACY), entry(b, model_map=LEGACY)], **NO_BREAKER)
    async with host.client() as client:
        raw = await client.completions.with_raw_response.create(model="legacy", prompt="Say something.")
        answer = raw.parse()
        embedded = await client.embeddings.create(model="legacy", input="x")
    assert answer.choices[0].text == DEFAULT_ANSWER and answer.choices[0].finish_reason == "stop"
    assert answer.object == "text_completion" and answer.usage.completion_tokens == len(DEFAULT_ANSWER.split())
    assert raw.headers["x-hulumanage-provider"] == "b" and raw.headers["x-hulumanage-attempts"] == "2"
    assert len(embedded.data) == 1
    assert [s.path for s in a.requests] == ["/v1/completions", "/v1/embeddings"]
    assert [(s.path, s.json["model"]) for s in b.requests] == [("/v1/completions", "gpt-3.5-turbo-instruct"),
                                                               ("/v1/embeddings", "gpt-3.5-turbo-instruct")]


async def test_a_client_key_is_required_and_usage_is_counted(fakes, proxy, http) -> None:
    (a,) = await fakes("a", api_key="sk-provider-a")
    host = await proxy([entry(a, model_map={**EMBED, **LEGACY})], clients=CLIENTS)
    async with host.client(api_key="wrong") as client:
        with pytest.raises(openai.AuthenticationError):
            await client.embeddings.create(model="embed", input="hello")
        with pytest.raises(openai.AuthenticationError):
            await client.completions.create(model="legacy", prompt="hello")
    assert a.requests == []
    async with host.client(api_key=KEY) as client:
        embedded = await client.embeddings.create(model="embed", input="one two three")
        completed = await client.completions.create(model="legacy", prompt="Say something.")
    assert embedded.usage.prompt_tokens == 3 and completed.usage.prompt_tokens == 2
    assert all(s.headers["Authorization"] == "Bearer sk-provider-a" for s in a.requests)  # never the gateway key
    async with http.get(f"{host.url}/admin/spend") as resp:
        spend = await resp.json()
    assert spend["keys"]["team-a"]["requests"] == 2
    assert spend["keys"]["team-a"]["prompt_tokens"] == 3 + 2
    assert spend["keys"]["team-a"]["completion_tokens"] == completed.usage.completion_tokens
    async with http.get(f"{host.url}/metrics") as resp:
        text = await resp.text()
    tokens = {(s.labels["model"], s.labels["type"]): s.value for f in text_string_to_metric_families(text)
              for s in f.samples if s.name == "hulumanage_tokens_total" and s.labels.get("provider") == "a"}
    assert sum(v for (_model, kind), v in tokens.items() if kind == "prompt") == 5


async def test_a_completions_stream_is_relayed_whole_with_its_usage(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a, model_map=LEGACY)], clients=CLIENTS)  # the gate asks upstream for usage
    async with host.client(api_key=KEY) as client:
        stream = await client.completions.create(model="legacy", prompt="Say something.", stream=True,
                                                 stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        plain = await client.completions.create(model="legacy", prompt="Say something.", stream=True)
        unasked = [chunk async for chunk in plain]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == DEFAULT_ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(DEFAULT_ANSWER.split())
    assert all(c.usage is None for c in unasked)  # usage the gate asked for is not shown to a client that did not
    assert "".join(c.choices[0].text for c in unasked) == DEFAULT_ANSWER
    async with http.post(f"{host.url}/completions", json={"model": "legacy", "prompt": "hi", "stream": True},
                         headers={"Authorization": f"Bearer {KEY}"}) as resp:  # unversioned, as chat's
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        body = await resp.read()
    payloads = sse_payloads(body)
    assert payloads[-1] == b"[DONE]" and len(payloads) == len(DEFAULT_ANSWER.split()) + 2
    async with http.get(f"{host.url}/admin/spend") as resp:
        assert (await resp.json())["keys"]["team-a"]["completion_tokens"] == 3 * len(DEFAULT_ANSWER.split())


async def test_a_broken_completions_stream_ends_with_an_error_event_and_is_not_continued(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b")
    a.script(server_error(503), cut(3))  # the first request fails over before its first byte; the second breaks
    host = await proxy([entry(a), entry(b)], **NO_BREAKER)
    request = {"model": "gpt-4", "prompt": "Say something.", "stream": True}
    async with http.post(f"{host.url}/v1/completions", json=request) as resp:
        whole = sse_payloads(await resp.read())
    assert b"".join(orjson.loads(p)["choices"][0]["text"].encode() for p in whole[:-2]) == DEFAULT_ANSWER.encode()
    assert whole[-1] == b"[DONE]" and len(b.requests) == 1
    async with http.post(f"{host.url}/v1/completions", json=request) as resp:
        assert resp.status == 200
        broken = sse_payloads(await resp.read())
    assert len(broken) == 4 and [orjson.loads(p)["choices"][0]["text"] for p in broken[:3]] == ["The ", "quick ",
                                                                                                "brown "]
    error = orjson.loads(broken[-1])["error"]
    assert error["code"] == "stream_interrupted" and "/completions stream is not continued" in error["message"]
    assert b"[DONE]" not in broken and len(b.requests) == 1  # never a clean finish, never continued elsewhere


async def test_a_provider_that_does_not_serve_the_model_is_skipped(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    host = await proxy([entry(a, models=["gpt-4*"]), entry(b, models=["text-embedding-*"])])
    async with host.client() as client:
        embedded = await client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hi")
        with pytest.raises(openai.NotFoundError) as missing:
            await client.completions.create(model="davinci-002", prompt="hi")
    assert embedded.headers["x-hulumanage-provider"] == "b"
    assert a.requests == [] and [s.path for s in b.requests] == ["/v1/embeddings"]
    assert missing.value.body["code"] == "model_not_found"


async def test_the_none_approach_forwards_to_the_base_url(fakes, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (up,) = await fakes("up")
    async with run_host("--approach", "none", "--base-url", up.base_url) as host, \
            host.client(api_key="sk-user-own") as client:
        embedded = await client.embeddings.create(model="text-embedding-3-small", input="hi")
        completed = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
        stream = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi", stream=True)
        streamed = "".join([chunk.choices[0].text async for chunk in stream])
    assert len(embedded.data[0].embedding) == 8
    assert completed.choices[0].text == streamed == DEFAULT_ANSWER
    assert [s.path for s in up.requests] == ["/v1/embeddings", "/v1/completions", "/v1/completions"]
    assert {s.headers["Authorization"] for s in up.requests} == {"Bearer sk-user-own"}


async def test_the_none_approach_never_forwards_a_gateway_key(fakes, proxy, http, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    a, up = await fakes("a", "up")
    host = await proxy([entry(a)], argv=("--approach", "none", "--base-url", up.base_url), clients=CLIENTS)
    async with http.post(f"{host.url}/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"}) as resp:
        assert resp.status == 401  # no key
    async with host.client(api_key=KEY) as client:
        await client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert len(up.requests) == 1 and "Authorization" not in up.requests[0].headers and a.requests == []


async def test_other_methods_and_bad_bodies_get_openai_shaped_errors(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)])
    async with http.get(f"{host.url}/v1/embeddings") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
        assert (await resp.json())["error"]["code"] == "method_not_allowed"
    async with http.post(f"{host.url}/embeddings", json={"model": "gpt-4"}) as resp:
        assert resp.status == 400 and "'input' is required" in (await resp.json())["error"]["message"]
    async with http.post(f"{host.url}/v1/completions", json={"model": "gpt-4", "prompt": "hi",
                                                             "proxy_wrap": "moa"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_proxy_wrap"
    assert a.requests == []
    async with aiohttp.ClientSession() as session, session.post(
            f"{host.url}/v1/embeddings", json={"model": "bon&proxy-gpt-4", "input": "hi"}) as resp:
        assert resp.status == 200 and resp.headers["x-hulumanage-provider"] == "a"  # the terminal layer serves it


async def test_the_cache_skips_these_routes(fakes, proxy) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], cache={"enabled": True})
    async with host.client() as client:
        for _ in range(2):
            raw = await client.completions.with_raw_response.create(model="gpt-4", prompt="hi", temperature=0)
            assert "x-hulumanage-cache" not in raw.headers
        chat = await client.chat.completions.with_raw_response.create(
            model="gpt-4", messages=[{"role": "user", "content": "hi"}], temperature=0)
    assert chat.headers["x-hulumanage-cache"] == "miss"  # the cache is on, for chat
    assert [s.path for s in a.requests] == ["/v1/completions", "/v1/completions", "/v1/chat/completions"]
