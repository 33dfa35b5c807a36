"""The response cache, end to end: the real server, the SDK, fake providers that count what reaches them.

Time (TTL, LRU) moves through a ``ManualClock`` given to the proxy (``proxy_plugin.plugin.clock_factory``).
Client keys are not on this branch's base: per-client namespaces are checked through the gate's own
Ticket API with clients of different key ids; end to end, every client shares one namespace.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from support.helpers import USER, entry

from hulumanage.gate import GateRequest
from hulumanage.sim import cut, error, server_error
from proxy_plugin.approach import RUNTIME
from proxy_plugin.clock import ManualClock
from proxy_plugin.gate import Client

ANSWER = "alpha beta gamma delta epsilon zeta"
CACHE = {"enabled": True}
ONE_TRY = {"attempts_per_provider": 1}


async def post(http: Any, host: Any, body: dict[str, Any] | bytes, **headers: str) -> tuple[int, bytes, Any]:
    """POST a chat request with raw aiohttp: (status, body, headers)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(f"{host.url}/v1/chat/completions", data=data,
                         headers={"Content-Type": "application/json", **headers}) as resp:
        return resp.status, await resp.read(), resp.headers


def chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON events of an SSE body, ``[DONE]`` left out."""
    events = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    return [orjson.loads(e) for e in events if e != b"[DONE]"]


def text(raw: bytes) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks(raw) if c["choices"])


def finishes(raw: bytes) -> list[str]:
    return [c["choices"][0]["finish_reason"] for c in chunks(raw) if c["choices"] and c["choices"][0]["finish_reason"]]


def ask(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4", "messages": USER, "temperature": 0, **fields}


async def test_a_repeated_request_is_answered_from_the_cache_identically_with_nothing_sent_upstream(
    fakes, proxy, caplog: pytest.LogCaptureFixture,
) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache=CACHE)
    caplog.set_level(logging.INFO, logger="hulumanage.access")
    async with host.client() as client:
        first = await client.chat.completions.with_raw_response.create(model="gpt-4", messages=USER, temperature=0)
        again = await client.chat.completions.with_raw_response.create(model="gpt-4", messages=USER, temperature=0)
    assert first.headers["x-hulumanage-cache"] == "miss" and again.headers["x-hulumanage-cache"] == "hit"
    assert again.parse().model_dump() == first.parse().model_dump()  # same id, text, usage
    assert again.parse().choices[0].message.content == ANSWER
    assert len(a.chat_requests()) == 1  # the hit sent nothing upstream
    assert "x-hulumanage-provider" not in again.headers and "x-hulumanage-attempts" not in again.headers
    logged = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "hulumanage.access"]
    assert [line["cache"] for line in logged] == ["miss", "hit"]


@pytest.mark.parametrize("front", [(), ("--no-fast-path",)], ids=["fast-path", "aiohttp"])
@pytest.mark.parametrize("filled_by", ["stream", "json"])
async def test_streams_and_json_answers_are_served_from_one_entry(fakes, proxy, http, front, filled_by) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front), cache=CACHE)
    status, original, headers = await post(http, host, ask(stream=filled_by == "stream"))
    assert status == 200 and headers["x-hulumanage-cache"] == "miss"
    original_id = (chunks(original)[0] if filled_by == "stream" else orjson.loads(original))["id"]

    # a non-streaming hit
    status, body, headers = await post(http, host, ask())
    assert status == 200 and headers["x-hulumanage-cache"] == "hit"
    completion = orjson.loads(body)
    if filled_by == "json":
        assert body == original  # the very bytes
    assert completion["id"] == original_id and completion["object"] == "chat.completion"
    message = completion["choices"][0]["message"]
    assert (message["role"], message["content"], message.get("refusal")) == ("assistant", ANSWER, None)
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] == 6  # known even when the filling stream did not ask

    # a streaming hit, with and without usage
    for usage in (False, True):
        fields: dict[str, Any] = {"stream_options": {"include_usage": True}} if usage else {}
        status, raw, headers = await post(http, host, ask(stream=True, **fields))
        assert status == 200 and headers["x-hulumanage-cache"] == "hit"
        assert headers["Content-Type"].startswith("text/event-stream")
        assert raw.endswith(b"data: [DONE]\n\n")
        assert text(raw) == ANSWER and finishes(raw) == ["stop"]
        assert {c["id"] for c in chunks(raw)} == {original_id}
        assert [c["usage"]["total_tokens"] for c in chunks(raw) if c.get("usage")] == ([6 + 2] if usage else [])
    assert len(a.chat_requests()) == 1


async def test_the_sdk_reads_a_replayed_stream_like_the_original(fakes, proxy) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache=CACHE)
    async with host.client() as client:
        texts, reasons = [], []
        for _ in range(2):
            stream = await client.chat.completions.create(model="gpt-4", messages=USER, temperature=0, stream=True,
                                                          n=2)
            parts: dict[int, str] = {0: "", 1: ""}
            done: dict[int, str] = {}
            async for chunk in stream:
                for choice in chunk.choices:
                    parts[choice.index] += choice.delta.content or ""
                    if choice.finish_reason:
                        done[choice.index] = choice.finish_reason
            texts.append(parts)
            reasons.append(done)
    assert texts[0] == texts[1] == {0: ANSWER, 1: ANSWER}
    assert reasons[0] == reasons[1] == {0: "stop", 1: "stop"}
    assert len(a.chat_requests()) == 1


async def test_errors_are_never_cached(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache=CACHE, retries=ONE_TRY)
    for stream in (False, True):
        for failure, status in ((server_error(500), 502), (error(400, code="bad_thing", message="no"), 400)):
            a.script(failure)
            answered, _, headers = await post(http, host, ask(stream=stream))
            assert answered == status and headers["x-hulumanage-cache"] == "miss"
            answered, _, headers = await post(http, host, ask(stream=stream))
            assert answered == 200 and headers["x-hulumanage-cache"] == "miss"  # the error was not kept
            assert (await post(http, host, ask(stream=not stream)))[2]["x-hulumanage-cache"] == "hit"
            async with http.post(f"{host.url}/admin/clear-cache") as resp:
                assert resp.status == 200
    assert len(a.chat_requests()) == 8


async def test_a_stream_continued_after_a_cut_is_not_cached(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(cut(after_chunks=2))
    host = await proxy([entry(a), entry(b)], cache=CACHE)
    status, raw, headers = await post(http, host, ask(stream=True))
    assert status == 200 and text(raw) == ANSWER and finishes(raw) == ["stop"]  # the client got it whole
    assert len(a.chat_requests()) + len(b.chat_requests()) == 2  # it was continued
    status, body, headers = await post(http, host, ask())
    assert headers["x-hulumanage-cache"] == "miss"  # the continued answer was not stored
    status, body, headers = await post(http, host, ask(stream=True))
    assert headers["x-hulumanage-cache"] == "hit" and text(body) == ANSWER  # the clean one was


async def test_a_stream_that_broke_is_not_cached(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    a.script(cut(after_chunks=2))
    host = await proxy([entry(a)], cache=CACHE, retries=ONE_TRY)
    status, raw, _ = await post(http, host, ask(stream=True))
    assert status == 200 and b"[DONE]" not in raw and b'"error"' in raw
    status, body, headers = await post(http, host, ask())
    assert status == 200 and headers["x-hulumanage-cache"] == "miss"
    assert orjson.loads(body)["choices"][0]["message"]["content"] == ANSWER


async def test_no_cache_skips_the_lookup_and_refreshes_the_entry_and_no_store_skips_both(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache=CACHE)
    ids = []
    for cache_control, expected in (("", "miss"), ("no-cache", "bypass"), ("", "hit"), ("No-Store", "bypass"),
                                    ("max-age=0, no-store", "bypass"), ("", "hit")):
        headers = {"Cache-Control": cache_control} if cache_control else {}
        status, body, answered = await post(http, host, ask(), **headers)
        assert status == 200 and answered["x-hulumanage-cache"] == expected, cache_control
        ids.append(orjson.loads(body)["id"])
    assert ids[1] != ids[0] and ids[2] == ids[1]  # no-cache went upstream; its answer replaced the entry
    assert ids[3] != ids[2] and ids[4] != ids[3] and ids[5] == ids[1]  # no-store answers were never kept
    assert len(a.chat_requests()) == 4
    # no-store on an empty cache stores nothing either
    status, _, answered = await post(http, host, ask(seed=1), **{"Cache-Control": "no-store"})
    status, _, answered = await post(http, host, ask(seed=1))
    assert answered["x-hulumanage-cache"] == "miss"


async def test_entries_expire_after_the_ttl(fakes, proxy, http, clock: ManualClock) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache={"enabled": True, "ttl": 60})
    assert (await post(http, host, ask()))[2]["x-hulumanage-cache"] == "miss"
    clock.advance(59)
    assert (await post(http, host, ask()))[2]["x-hulumanage-cache"] == "hit"
    clock.advance(1)
    assert (await post(http, host, ask()))[2]["x-hulumanage-cache"] == "miss"
    assert len(a.chat_requests()) == 2


async def test_the_least_recently_used_entry_goes_first(fakes, proxy, http, clock: ManualClock) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache={"enabled": True, "max_entries": 2})

    async def result(seed: int) -> str:
        return (await post(http, host, ask(seed=seed)))[2]["x-hulumanage-cache"]

    assert [await result(1), await result(2), await result(1)] == ["miss", "miss", "hit"]  # 1 is now the newest
    assert await result(3) == "miss"  # evicts 2
    assert [await result(1), await result(3), await result(2)] == ["hit", "hit", "miss"]


async def test_what_is_cacheable_depends_on_temperature_and_seed(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache={"enabled": True, "max_temperature": 0.3})
    cases = [
        ({}, ["bypass", "bypass"]),                        # absent: 1.0
        ({"temperature": 0.3}, ["miss", "hit"]),
        ({"temperature": 0.31}, ["bypass", "bypass"]),
        ({"temperature": 1.2, "seed": 7}, ["miss", "hit"]),
        ({"temperature": 0.0, "n": 2}, ["miss", "hit"]),
    ]
    for fields, expected in cases:
        body = {"model": "gpt-4", "messages": USER, **fields}
        got = [(await post(http, host, body))[2]["x-hulumanage-cache"] for _ in range(2)]
        assert got == expected, fields
    hit = orjson.loads((await post(http, host, {"model": "gpt-4", "messages": USER, "temperature": 0.0, "n": 2}))[1])
    assert len(hit["choices"]) == 2


async def test_a_disabled_cache_says_nothing_and_caches_nothing(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)])
    for _ in range(2):
        status, _, headers = await post(http, host, ask())
        assert status == 200 and "x-hulumanage-cache" not in headers
    assert len(a.chat_requests()) == 2


async def test_the_key_ignores_json_key_order_and_stream_fields_but_not_answer_changing_fields(
    fakes, proxy, http,
) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache=CACHE)
    first = b'{"model": "gpt-4", "temperature": 0, "messages": [{"role": "user", "content": "Hi", "name": "x"}]}'
    reordered = b'{"messages": [{"name": "x", "content": "Hi", "role": "user"}], "temperature": 0, "model": "gpt-4"}'
    assert (await post(http, host, first))[2]["x-hulumanage-cache"] == "miss"
    assert (await post(http, host, reordered))[2]["x-hulumanage-cache"] == "hit"
    base = {"model": "gpt-4", "temperature": 0, "messages": [{"role": "user", "content": "Hi", "name": "x"}]}
    same = [{"user": "someone"}, {"stream": True, "stream_options": {"include_usage": True}}, {"stream": False}]
    for fields in same:
        assert (await post(http, host, {**base, **fields}))[2]["x-hulumanage-cache"] == "hit", fields
    different = [{"model": "gpt-4o-mini"}, {"max_tokens": 5}, {"top_p": 0.5}, {"stop": ["x"]}, {"n": 2},
                 {"logit_bias": {"1": 1}}, {"response_format": {"type": "json_object"}}, {"seed": 3},
                 {"messages": [{"role": "user", "content": "Hi!", "name": "x"}]}, {"temperature": 0.1}]
    for fields in different:
        assert (await post(http, host, {**base, **fields}))[2]["x-hulumanage-cache"] == "miss", fields
    assert len(a.chat_requests()) == 1 + len(different)


async def test_the_approach_chain_and_its_parameters_are_part_of_the_key(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache=CACHE)
    results = []
    for model, fields in (("gpt-4", {}), ("bon-gpt-4", {"bon_n": 2}), ("bon-gpt-4", {"bon_n": 3}),
                          ("gpt-4", {"hulumanage_approach": "bon", "bon_n": 2}), ("bon-gpt-4", {"bon_n": 3})):
        status, _, headers = await post(http, host, ask(model=model, **fields))
        assert status == 200
        results.append(headers["x-hulumanage-cache"])
    # the same chain named by a prefix or by hulumanage_approach is one entry; bon_n is in the key
    assert results == ["miss", "miss", "miss", "hit", "hit"]


async def test_answers_over_max_entry_bytes_are_not_stored(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache={"enabled": True, "max_entry_bytes": 200})
    for stream in (False, True, False):
        assert (await post(http, host, ask(stream=stream)))[2]["x-hulumanage-cache"] == "miss"


async def test_clear_cache_empties_it_and_says_how_many(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache=CACHE)
    for seed in (1, 2):
        await post(http, host, ask(seed=seed))
    async with http.post(f"{host.url}/admin/clear-cache") as resp:
        assert resp.status == 200
        assert await resp.json() == {"message": "Cache cleared successfully", "entries_cleared": 2}
    assert (await post(http, host, ask(seed=1)))[2]["x-hulumanage-cache"] == "miss"
    async with http.post(f"{host.url}/admin/clear-cache") as resp:
        assert (await resp.json())["entries_cleared"] == 1


async def test_clear_cache_follows_the_admin_rule(fakes, proxy, http, monkeypatch: pytest.MonkeyPatch) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache=CACHE)
    url = f"{host.url}/admin/clear-cache"
    await post(http, host, ask())
    # without a token: loopback only, never from a page of another site, never under another host name
    for headers, status, code in (({"Origin": "https://evil.example"}, 403, "forbidden"),
                                  ({"Origin": "null"}, 403, "forbidden"),
                                  ({"Host": "evil.example"}, 421, "misdirected_request")):
        async with http.post(url, headers=headers) as resp:
            assert resp.status == status and (await resp.json())["error"]["code"] == code
    monkeypatch.setenv("HULUMANAGE_ADMIN_TOKEN", "s3cret")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        async with http.post(url, headers=headers) as resp:
            assert resp.status == 403
    assert (await post(http, host, ask()))[2]["x-hulumanage-cache"] == "hit"  # nothing was cleared
    async with http.post(url, headers={"Authorization": "Bearer s3cret"}) as resp:
        assert resp.status == 200 and (await resp.json())["entries_cleared"] == 1


# -- through the gate's Ticket API: what end-to-end fakes cannot produce here -----------------------


def request(body: dict[str, Any], stream: bool = False) -> GateRequest:
    return GateRequest(body, ("proxy",), stream, "127.0.0.1", "rid", "")


def filled(gate: Any, client: Client, answer: dict[str, Any], usd: float = 0.0) -> Any:
    """Admit a request, give the ticket ``answer`` as the host would, finish it: the ticket."""
    ticket = gate.admit(client, request(ask()))
    assert ticket.tap is not None
    ticket.usd = usd
    ticket.tap(orjson.dumps(answer))
    ticket.finish(200, True, None, 0.01)
    return ticket


def completion(finish: str, tool_calls: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if tool_calls else "hi"}
    if tool_calls:
        message["tool_calls"] = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1'}}]
    return {"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}]}


@pytest.mark.parametrize(("finish", "tool_calls", "stored"), [
    ("stop", False, True), ("length", False, True), ("tool_calls", True, True),
    ("length", True, False), (None, False, False), ("content_filter", False, False),
])
async def test_only_whole_answers_are_stored_and_a_tool_call_cut_by_length_is_not(
    fakes, proxy, finish, tool_calls, stored,
) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], cache=CACHE)
    gate = host.app[RUNTIME].gate
    anonymous = gate.authenticate(None, "127.0.0.1")
    filled(gate, anonymous, completion(finish, tool_calls))
    again = gate.admit(anonymous, request(ask()))
    assert again.cache == ("hit" if stored else "miss")
    if stored:
        assert orjson.loads(again.answer.body)["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("per_client", [True, False])
async def test_each_client_key_has_its_own_namespace_unless_per_client_is_off(fakes, proxy, per_client) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], cache={"enabled": True, "per_client": per_client})
    gate = host.app[RUNTIME].gate
    alice, bob = Client("alice", "10.0.0.1", key=object()), Client("bob", "10.0.0.1", key=object())
    filled(gate, alice, completion("stop"), usd=0.25)
    hit = gate.admit(alice, request(ask()))
    assert hit.cache == "hit" and hit.saved_usd == 0.25 and hit.usd == 0.0  # a hit costs nothing; its saving counts
    assert hit.headers()["x-hulumanage-cache"] == "hit" and hit.log_fields()["cache"] == "hit"
    assert gate.admit(bob, request(ask())).cache == ("miss" if per_client else "hit")
    # anonymous callers (no keys) share one namespace, apart from every key's
    anonymous = [gate.authenticate(None, ip) for ip in ("127.0.0.1", "10.9.9.9")]
    assert [gate.admit(c, request(ask())).cache for c in anonymous] == (["miss"] * 2 if per_client else ["hit"] * 2)
