"""Routing through the real server: strategies, fallback-only providers, model maps, keys, field handling.

Every test starts fake providers and the real host on 127.0.0.1 and talks to it with the
official ``openai`` SDK. Which provider answered is read from the fakes' own records and
from ``system_fingerprint`` (``fake-<name>``), which the proxy relays untouched.
"""

from __future__ import annotations

import asyncio
import collections

import openai
import pytest
from support.helpers import USER, entry, health, until

from hulumanage.sim import hang, server_error

ROUND_ROBIN = {"strategy": "round_robin", "health_check": {"enabled": False}}
FAILOVER = {"strategy": "failover", "health_check": {"enabled": False}}
ONE_ATTEMPT = {"attempts_per_provider": 1}


def served_by(completion: openai.types.chat.ChatCompletion) -> str:
    """The fake provider that produced ``completion``."""
    fingerprint = completion.system_fingerprint or ""
    assert fingerprint.startswith("fake-"), fingerprint
    return fingerprint.removeprefix("fake-")


async def ask(client: openai.AsyncOpenAI, model: str = "gpt-4", **kwargs) -> openai.types.chat.ChatCompletion:
    """One non-streaming chat request."""
    return await client.chat.completions.create(model=model, messages=USER, **kwargs)


# -- strategies -------------------------------------------------------------------------


async def test_weighted_splits_traffic_by_weight(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    host = await proxy(
        [entry(a, weight=3), entry(b, weight=1)], routing={"strategy": "weighted", "health_check": {"enabled": False}}
    )
    total = 400
    async with host.client() as client:
        for _ in range(total // 50):
            await asyncio.gather(*(ask(client) for _ in range(50)))
    got_a, got_b = len(a.chat_requests()), len(b.chat_requests())
    assert got_a + got_b == total  # each request went to exactly one provider, once
    # Expected share 0.75, standard deviation ~0.022 over 400 draws: this band is > 4 sigma wide
    # on each side, yet excludes an even split (0.5) and "always a" (1.0).
    assert 0.65 <= got_a / total <= 0.85, (got_a, got_b)


async def test_weight_zero_provider_only_serves_when_nothing_else_can(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.set_default(server_error(503))
    host = await proxy(
        [entry(a, weight=1), entry(b, weight=0)],
        routing={"strategy": "weighted", "health_check": {"enabled": False}},
        retries=ONE_ATTEMPT,
        circuit_breaker={"enabled": False},
    )
    async with host.client() as client:
        for _ in range(10):
            assert served_by(await ask(client)) == "b"
    # a was always tried first: weight 0 never outranks a positive weight
    assert len(a.chat_requests()) == 10


async def test_round_robin_rotates_strictly(fakes, proxy) -> None:
    a, b, c = await fakes("a", "b", "c")
    host = await proxy([entry(a), entry(b), entry(c)], routing=ROUND_ROBIN)
    async with host.client() as client:
        order = [served_by(await ask(client)) for _ in range(9)]
    assert order == ["a", "b", "c"] * 3


async def test_failover_strategy_always_uses_the_first(fakes, proxy) -> None:
    a, b, c = await fakes("a", "b", "c")
    host = await proxy([entry(a), entry(b), entry(c)], routing=FAILOVER)
    async with host.client() as client:
        served = [served_by(await ask(client)) for _ in range(8)]
    assert served == ["a"] * 8
    assert b.chat_requests() == [] and c.chat_requests() == []


# -- fallback-only providers ----------------------------------------------------------------


async def test_fallback_only_idle_while_primaries_serve(fakes, proxy) -> None:
    backup, a, b = await fakes("backup", "a", "b")
    # listed first, yet it must come after every primary
    host = await proxy([entry(backup, fallback_only=True), entry(a), entry(b)], routing=ROUND_ROBIN)
    async with host.client() as client:
        served = collections.Counter([served_by(await ask(client)) for _ in range(12)])
    assert served == {"a": 6, "b": 6}
    assert backup.chat_requests() == []


async def test_fallback_only_serves_when_the_primary_fails_this_request(fakes, proxy) -> None:
    a, backup = await fakes("a", "backup")
    a.script(server_error(500))
    host = await proxy([entry(a), entry(backup, fallback_only=True)], routing=FAILOVER, retries=ONE_ATTEMPT)
    async with host.client() as client:
        assert served_by(await ask(client)) == "backup"
        assert served_by(await ask(client)) == "a"  # the primary is back in front next time
    assert len(a.chat_requests()) == 2
    assert len(backup.chat_requests()) == 1


async def test_fallback_only_serves_when_the_primary_is_at_capacity(fakes, proxy) -> None:
    a, backup = await fakes("a", "backup")
    a.script(hang(5))
    host = await proxy(
        [entry(a, max_concurrent=1, slot_wait=0.05), entry(backup, fallback_only=True)], routing=FAILOVER
    )
    async with host.client() as client:
        held = asyncio.create_task(ask(client))
        await a.wait_for_requests(1, chat_only=True)
        assert served_by(await ask(client)) == "backup"
        a.release_hangs()
        assert served_by(await held) == "a"
    assert len(a.chat_requests()) == 1


async def test_fallback_only_serves_when_primaries_are_unhealthy(fakes, proxy, http) -> None:
    a, backup = await fakes("a", "backup")
    a.set_models_status(503)
    host = await proxy(
        [entry(a), entry(backup, fallback_only=True)],
        routing={"strategy": "failover", "health_check": {"enabled": True, "interval": 0.1, "timeout": 0.2}},
    )

    async def a_unhealthy() -> bool:
        return (await health(http, host))["proxy"]["providers"]["a"]["healthy"] is False

    await until(a_unhealthy)
    async with host.client() as client:
        assert served_by(await ask(client)) == "backup"
        assert a.chat_requests() == []  # not even tried while unhealthy
        a.set_models_status(200)

        async def a_healthy() -> bool:
            return (await health(http, host))["proxy"]["providers"]["a"]["healthy"] is True

        await until(a_healthy)
        assert served_by(await ask(client)) == "a"


# -- model map and keys -----------------------------------------------------------------------


async def test_model_map_is_applied_per_provider(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    host = await proxy(
        [entry(a, model_map={"gpt-4": "a-large-model"}), entry(b, model_map={"other": "b-other"})],
        routing=ROUND_ROBIN,
    )
    async with host.client() as client:
        first, second = await ask(client), await ask(client)
        unmapped = await ask(client, model="gpt-4o-mini")
    assert (served_by(first), first.model) == ("a", "a-large-model")
    assert (served_by(second), second.model) == ("b", "gpt-4")  # b has no mapping for gpt-4
    assert [s.json["model"] for s in a.chat_requests()] == ["a-large-model", "gpt-4o-mini"]
    assert [s.json["model"] for s in b.chat_requests()] == ["gpt-4"]
    assert served_by(unmapped) == "a" and unmapped.model == "gpt-4o-mini"


async def test_model_map_applies_on_failover_too(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.set_default(server_error(502))
    host = await proxy(
        [entry(a, model_map={"fast": "a-fast"}), entry(b, model_map={"fast": "b-fast"})],
        routing=FAILOVER,
        retries=ONE_ATTEMPT,
    )
    async with host.client() as client:
        reply = await ask(client, model="fast")
    assert reply.model == "b-fast"
    assert [s.json["model"] for s in a.chat_requests()] == ["a-fast"]
    assert [s.json["model"] for s in b.chat_requests()] == ["b-fast"]


async def test_each_provider_gets_its_own_key_never_the_clients(fakes, proxy) -> None:
    (a,) = await fakes("a", api_key="sk-provider-a-4f1c9e")
    (b,) = await fakes("b", api_key="sk-provider-b-77d2aa")
    (c,) = await fakes("c")  # no key configured
    host = await proxy([entry(a), entry(b), entry(c)], routing=ROUND_ROBIN)
    async with host.client(api_key="sk-client-secret-0b5e") as client:
        served = [served_by(await ask(client)) for _ in range(3)]
        stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True)
        async for _ in stream:
            pass
    assert served == ["a", "b", "c"]
    assert [s.headers["Authorization"] for s in a.chat_requests()] == ["Bearer sk-provider-a-4f1c9e"] * 2
    assert [s.headers["Authorization"] for s in b.chat_requests()] == ["Bearer sk-provider-b-77d2aa"]
    assert [s.headers.get("Authorization") for s in c.chat_requests()] == [None]
    for provider in (a, b, c):
        for seen in provider.chat_requests():
            assert "sk-client-secret-0b5e" not in repr(dict(seen.headers))


# -- what goes upstream -------------------------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "calc", "arguments": '{"x": "2+2"}'}}],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "4"},
    {"role": "user", "content": "Thanks. And 3 + 3?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calc",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
        },
    }
]
PASSED = {
    "tools": TOOLS,
    "tool_choice": "auto",
    "response_format": {"type": "json_object"},
    "n": 2,
    "seed": 7,
    "temperature": 0.25,
    "top_p": 0.9,
    "max_tokens": 64,
    "stop": ["\n\n"],
    "user": "user-1234",
    "logit_bias": {"50256": -100},
    "metadata": {"trace": "abc"},
}


async def test_host_fields_are_stripped_and_everything_else_passes_untouched(fakes, proxy) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=())  # default approach none: the proxy is chosen per request
    async with host.client() as client:
        reply = await client.chat.completions.create(
            model="gpt-4",
            messages=CONVERSATION,
            **PASSED,
            extra_body={
                "hulumanage_approach": "proxy",
                "bon_n": 3,
                "bon_temperature": 0.5,
                "vendor_extension": {"keep": True},
            },
        )
    assert len(reply.choices) == 2
    (seen,) = a.chat_requests()
    assert seen.json == {"model": "gpt-4", "messages": CONVERSATION, **PASSED, "vendor_extension": {"keep": True}}


async def test_stream_options_pass_through_on_a_stream(fakes, proxy) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)])
    async with host.client() as client:
        stream = await client.chat.completions.create(
            model="gpt-4",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
            seed=3,
            extra_body={"hulumanage_approach": "proxy"},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    (seen,) = a.chat_requests()
    assert seen.json == {
        "model": "gpt-4",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 3,
    }


# -- the three ways to select the proxy ------------------------------------------------------------


async def test_selected_by_the_server_default(fakes, proxy) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=("--approach", "proxy"))
    async with host.client() as client:
        reply = await ask(client, model="gpt-4o-mini")
    assert served_by(reply) == "a"
    assert [s.json["model"] for s in a.chat_requests()] == ["gpt-4o-mini"]


async def test_selected_by_model_prefix_and_plain_models_are_not_prefixes(fakes, proxy) -> None:
    a, direct = await fakes("a", "direct")
    host = await proxy([entry(a)], argv=("--base-url", direct.base_url))  # default approach: none
    async with host.client() as client:
        via_proxy = await ask(client, model="proxy-gpt-4")
        plain = await ask(client, model="gpt-4o-mini")
    assert served_by(via_proxy) == "a"
    assert via_proxy.model == "gpt-4"
    assert [s.json["model"] for s in a.chat_requests()] == ["gpt-4"]
    # "gpt" is no approach: gpt-4o-mini goes to the plain upstream, whole
    assert served_by(plain) == "direct"
    assert [s.json["model"] for s in direct.chat_requests()] == ["gpt-4o-mini"]


async def test_selected_per_request_with_extra_body(fakes, proxy) -> None:
    a, direct = await fakes("a", "direct")
    host = await proxy([entry(a)], argv=("--base-url", direct.base_url))
    async with host.client() as client:
        reply = await ask(client, extra_body={"hulumanage_approach": "proxy"})
        stream = await client.chat.completions.create(
            model="gpt-4", messages=USER, stream=True, extra_body={"hulumanage_approach": "proxy"}
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert served_by(reply) == "a"
    assert text == a.answer
    assert [s.json for s in a.chat_requests()] == [
        {"model": "gpt-4", "messages": USER},
        {"model": "gpt-4", "messages": USER, "stream": True},
    ]
    assert direct.chat_requests() == []


async def test_unknown_approach_is_a_400_listing_the_known_ones(fakes, proxy) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=())
    async with host.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await ask(client, extra_body={"hulumanage_approach": "proxxy"})
    message = caught.value.body["message"]
    assert "proxxy" in message
    for slug in ("bon", "moa", "none", "proxy"):
        assert slug in message
    assert a.chat_requests() == []


async def test_no_provider_sees_a_request_without_proxy_selected(fakes, proxy) -> None:
    a, direct = await fakes("a", "direct")
    host = await proxy([entry(a)], argv=("--base-url", direct.base_url))
    async with host.client() as client:
        assert served_by(await ask(client, model="gpt-4")) == "direct"
    assert a.chat_requests() == []


async def test_the_model_map_sees_the_model_without_its_prefix(fakes, proxy) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a, model_map={"gpt-4o-mini": "mapped-mini"})], argv=())
    async with host.client() as client:
        reply = await ask(client, model="proxy-gpt-4o-mini")
    assert reply.model == "mapped-mini"
    assert [s.json["model"] for s in a.chat_requests()] == ["mapped-mini"]


async def test_proxy_wrap_is_stripped_when_it_is_not_used(fakes, proxy) -> None:
    a, direct = await fakes("a", "direct")
    host = await proxy([entry(a)], argv=("--base-url", direct.base_url))  # default approach none
    async with host.client() as client:
        reply = await ask(client, extra_body={"proxy_wrap": "moa", "bon_n": 2}, seed=1)
    assert served_by(reply) == "direct"
    assert [s.json for s in direct.chat_requests()] == [{"model": "gpt-4", "messages": USER, "seed": 1}]
    assert a.chat_requests() == []


async def test_wrapped_approach_calls_reach_providers_without_host_fields(fakes, proxy) -> None:
    (a,) = await fakes("a", api_key="sk-wrapped-a-5151")
    host = await proxy([entry(a, model_map={"gpt-4": "a-gpt-4"})], argv=())
    async with host.client(api_key="sk-client-wrapped-7272") as client:
        reply = await ask(
            client, extra_body={"hulumanage_approach": "proxy", "proxy_wrap": "bon", "bon_n": 2}, temperature=0.3
        )
    assert reply.choices[0].message.content
    seen = a.chat_requests()
    assert len(seen) >= 2  # best-of-n made several upstream calls, all through the pool
    for s in seen:
        assert s.json["model"] == "a-gpt-4"
        assert not {"hulumanage_approach", "proxy_wrap", "bon_n", "bon_temperature"} & set(s.json)
        assert s.headers["Authorization"] == "Bearer sk-wrapped-a-5151"
