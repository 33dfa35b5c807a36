"""Streaming through the real server: events relayed as they arrive, failover before the
first byte, and a broken stream that can not be continued ends with an SSE error event.

Timing is checked against the fake's own schedule: with ``ok(chunk_gap=g)`` the fake
writes event ``i`` (0 = the role chunk) about ``i * g`` seconds after the request reached
it (``Seen.time``, the same monotonic clock as the test).
"""

from __future__ import annotations

import time

import openai
import orjson
import pytest
from support.helpers import USER, entry, health, raw_stream

from hulumanage.sim import cut, malformed, no_done, ok, reset, server_error, slow_first_token

FAILOVER = {"strategy": "failover", "health_check": {"enabled": False}}
ANSWER = "alpha beta gamma delta epsilon"
WORDS = ["alpha ", "beta ", "gamma ", "delta ", "epsilon"]


def events(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order."""
    out = []
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: "):
            out.append(block[6:])
    return out


def content(payloads: list[bytes]) -> str:
    """The text of choice 0 in SSE payloads (JSON chunks only)."""
    text = ""
    for payload in payloads:
        if payload == b"[DONE]":
            continue
        chunk = orjson.loads(payload)
        for choice in chunk.get("choices") or ():
            text += (choice.get("delta") or {}).get("content") or ""
    return text


async def test_events_are_relayed_as_they_arrive(fakes, proxy) -> None:
    gap = 0.2
    (a,) = await fakes("a", answer=ANSWER)
    a.set_default(ok(chunk_gap=gap))
    host = await proxy([entry(a)], routing=FAILOVER)
    received: list[tuple[float, str]] = []
    async with host.client() as client:
        stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append((time.monotonic(), chunk.choices[0].delta.content))
    assert [word for _, word in received] == WORDS
    (seen,) = a.chat_requests()
    # content word k is event k + 1; the fake writes event i at about seen.time + i * gap.
    first_at = received[0][0] - seen.time
    assert first_at < 3 * gap, f"first word arrived {first_at:.2f}s in: after the fake had sent event 3"
    for k, (at, _) in enumerate(received):
        # every word reaches the client before the fake writes the event two places later
        assert at - seen.time < (k + 3) * gap, (k, at - seen.time)
    # and the last word could not have been buffered with the first: it was written 4 gaps later
    assert received[-1][0] - received[0][0] > 3 * gap


async def test_stream_ends_cleanly_with_done_and_usage(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], routing=FAILOVER)
    status, raw, _ = await raw_stream(http, host.url, stream_options={"include_usage": True})
    assert status == 200
    payloads = events(raw)
    assert payloads[-1] == b"[DONE]" and payloads.count(b"[DONE]") == 1
    assert content(payloads) == ANSWER
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == len(WORDS)


@pytest.mark.parametrize("failure", ["503", "reset", "slow_first_token"])
async def test_failover_before_the_first_byte(fakes, proxy, http, failure: str) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default({"503": server_error(503), "reset": reset(), "slow_first_token": slow_first_token(5)}[failure])
    host = await proxy(
        [entry(a), entry(b)], routing=FAILOVER, timeouts={"first_token": 0.3}, retries={"attempts_per_provider": 1}
    )
    async with host.client() as client:
        stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True)
        chunks = [c async for c in stream]
    assert {c.system_fingerprint for c in chunks} == {"fake-b"}  # nothing of a's reached the client
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert len(a.chat_requests()) == 1 and len(b.chat_requests()) == 1
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["failures"] == 1 and view["last_error_class"] == "transient"


async def test_a_cut_with_no_provider_left_ends_with_an_error_event(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(cut(2))
    a.set_default(server_error(503))
    b.set_default(server_error(503))
    host = await proxy([entry(a), entry(b)], routing=FAILOVER)
    status, raw, _ = await raw_stream(http, host.url)
    assert status == 200  # the stream had started
    payloads = events(raw)
    assert b"[DONE]" not in raw
    assert content(payloads[:-1]) == "alpha beta "  # what a sent before the cut was relayed
    last = orjson.loads(payloads[-1])
    assert set(last) == {"error"}
    assert last["error"]["message"]
    for payload in payloads[:-1]:
        assert orjson.loads(payload)["choices"][0]["finish_reason"] is None  # never a clean finish
    assert len(b.chat_requests()) >= 1  # continuing elsewhere was tried


async def test_a_cut_stream_raises_in_the_sdk(fakes, proxy) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    a.script(cut(1))
    a.set_default(server_error(500))
    host = await proxy([entry(a)], routing=FAILOVER)
    got = ""
    async with host.client() as client:
        stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True)
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert got == "alpha "


@pytest.mark.parametrize("prefill", [False, True], ids=["restart", "prefill"])
async def test_a_cut_stream_is_continued_on_another_provider(fakes, proxy, http, prefill: bool) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(cut(2))
    a.set_default(server_error(503))
    host = await proxy([entry(a), entry(b, supports_prefill=prefill)], routing=FAILOVER)
    status, raw, _ = await raw_stream(http, host.url)
    assert status == 200
    payloads = events(raw)
    assert payloads[-1] == b"[DONE]"
    assert content(payloads) == ANSWER  # every word exactly once
    (seen,) = b.chat_requests()
    if prefill:
        assert seen.json["messages"] == [*USER, {"role": "assistant", "content": "alpha beta "}]
    else:
        assert seen.json["messages"] == USER


async def test_malformed_events_are_skipped_and_a_missing_done_is_added(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    a.script(malformed(2), no_done())
    host = await proxy([entry(a)], routing=FAILOVER)
    for _ in range(2):
        status, raw, _ = await raw_stream(http, host.url)
        assert status == 200
        assert b"{not json" not in raw
        payloads = events(raw)
        assert content(payloads) == ANSWER
        assert payloads[-1] == b"[DONE]" and payloads.count(b"[DONE]") == 1


async def test_stream_headers(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], routing=FAILOVER)
    async with http.post(
        f"{host.url}/v1/chat/completions", json={"model": "gpt-4", "messages": USER, "stream": True}
    ) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        await resp.read()


async def test_a_cut_answer_with_several_choices_is_not_continued(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(cut(2))
    host = await proxy([entry(a), entry(b)], routing=FAILOVER)
    status, raw, _ = await raw_stream(http, host.url, n=2)
    assert status == 200
    assert b"[DONE]" not in raw
    payloads = events(raw)
    assert set(orjson.loads(payloads[-1])) == {"error"}
    assert b.chat_requests() == []  # two interleaved choices cannot be stitched together elsewhere
