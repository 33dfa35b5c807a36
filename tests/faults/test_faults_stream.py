"""Fault injection end to end, streaming faults: slow first token, cut, stall, malformed
events, a missing ``[DONE]``.

Before the first byte reaches the client a stream fails over like any request. After it,
the proxy continues the answer on another attempt: with an assistant prefill where the
provider supports it, else by restarting and relaying only what extends the client's
text. Either way the client's content must equal the fake's full answer exactly, with one
finish_reason; when the restarted answer diverges, the stream ends with an SSE error event
and never with ``[DONE]``. Raw aiohttp reads the exact SSE bytes where they matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from support.faults import ANSWER, FIRST_BACKOFF_CAP, SLACK, WORDS, ask, config, gaps, serves_normally
from support.helpers import USER, entry, health, raw_stream

from hulumanage.sim import cut, malformed, no_done, ok, server_error, slow_first_token, stall
from hulumanage.sim.payload import MALFORMED, Answer, sse, stream_chunks


def payloads(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order (checks every event is well framed)."""
    assert raw.endswith(b"\n\n"), raw[-80:]
    out = []
    for block in raw[:-2].split(b"\n\n"):
        assert block.startswith(b"data: "), block
        out.append(block[6:])
    return out


def chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of an SSE body (``[DONE]`` left out)."""
    return [orjson.loads(p) for p in payloads(raw) if p != b"[DONE]"]


def text_of(raw: bytes) -> str:
    """The content of choice 0 across the stream."""
    return "".join(
        (c["delta"].get("content") or "")
        for chunk in chunks(raw)
        for c in chunk.get("choices") or ()
        if c["index"] == 0
    )


def finish_reasons(raw: bytes) -> list[str]:
    """Every finish_reason relayed."""
    return [c["finish_reason"] for chunk in chunks(raw) for c in chunk.get("choices") or () if c.get("finish_reason")]


def assert_complete(raw: bytes) -> None:
    """The whole answer, exactly once, one finish_reason, and one ``[DONE]`` at the very end."""
    assert text_of(raw) == ANSWER
    assert finish_reasons(raw) == ["stop"]
    assert raw.endswith(b"data: [DONE]\n\n") and raw.count(b"[DONE]") == 1


# -- before the first byte -------------------------------------------------------------------------


async def test_a_slow_first_token_fails_over_while_nothing_was_sent(fakes, proxy, http) -> None:
    first_token = 0.3
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default(slow_first_token(5))
    host = await proxy([entry(a), entry(b)], **config(timeouts={"first_token": first_token}))
    status, raw, seconds = await raw_stream(http, host.url)
    assert status == 200
    assert_complete(raw)
    assert {c["system_fingerprint"] for c in chunks(raw)} == {"fake-b"}  # nothing of a's reached the client
    assert [c["choices"][0]["delta"].get("role") for c in chunks(raw)].count("assistant") == 1
    # a timeout is not retried on the same provider (attempts_per_provider: 2 notwithstanding)
    assert len(a.chat_requests()) == 1 and len(b.chat_requests()) == 1
    assert first_token - 0.01 <= seconds <= first_token + SLACK
    async with host.client() as client:
        await serves_normally(client, a, b)


async def test_a_first_token_just_in_time_is_not_failed_over(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(slow_first_token(0.1))
    host = await proxy([entry(a), entry(b)], **config(timeouts={"first_token": 0.5}))
    status, raw, seconds = await raw_stream(http, host.url)
    assert status == 200
    assert_complete(raw)
    assert {c["system_fingerprint"] for c in chunks(raw)} == {"fake-a"}
    assert len(a.chat_requests()) == 1 and b.chat_requests() == []
    assert seconds >= 0.09


# -- a stream cut mid-answer -----------------------------------------------------------------------


@pytest.mark.parametrize("prefill", [True, False], ids=["prefill", "restart"])
async def test_a_cut_stream_is_completed_by_the_next_provider(fakes, proxy, http, prefill: bool) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(cut(after_chunks=3))
    a.set_default(server_error(503))  # a's own retry fails too: b has to continue
    host = await proxy([entry(a), entry(b, supports_prefill=prefill)], **config())
    status, raw, seconds = await raw_stream(http, host.url)
    assert status == 200
    assert_complete(raw)  # every word exactly once
    assert [c["choices"][0]["delta"].get("role") for c in chunks(raw) if c["choices"]].count("assistant") == 1
    fingerprints = [c["system_fingerprint"] for c in chunks(raw)]
    assert fingerprints[:4] == ["fake-a"] * 4  # role chunk + 3 words from a
    assert set(fingerprints[4:]) == {"fake-b"}  # the rest from b
    sent_by_a = "".join(WORDS[:3])
    (seen,) = b.chat_requests()
    if prefill:
        # the original messages plus the partial answer as an assistant message; b sent only the rest
        assert seen.json["messages"] == [*USER, {"role": "assistant", "content": sent_by_a}]
    else:
        assert seen.json["messages"] == USER  # the original request, replayed
    assert {k: v for k, v in seen.json.items() if k != "messages"} == {"model": "gpt-4", "stream": True}
    assert [s.behaviour for s in a.chat_requests()] == ["cut", "error"]
    assert seconds < FIRST_BACKOFF_CAP + SLACK
    async with host.client() as client:
        await serves_normally(client, a, b)


async def test_a_cut_stream_is_completed_by_a_retry_on_the_same_provider(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(cut(after_chunks=2))
    host = await proxy([entry(a), entry(b)], **config())
    status, raw, _ = await raw_stream(http, host.url, stream_options={"include_usage": True})
    assert status == 200
    assert_complete(raw)
    assert {c["system_fingerprint"] for c in chunks(raw)} == {"fake-a"}
    assert [s.behaviour for s in a.chat_requests()] == ["cut", "ok"]
    assert gaps(a)[0] <= FIRST_BACKOFF_CAP + SLACK
    assert b.chat_requests() == []
    usage = [c["usage"] for c in chunks(raw) if c.get("usage")]
    assert len(usage) == 1  # one usage chunk, from the attempt that finished the answer
    async with host.client() as client:
        await serves_normally(client, a, b)


async def test_a_restarted_answer_that_diverges_ends_with_an_error_event_and_no_done(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    (b,) = await fakes("b", answer="alpha beta GAMMA delta epsilon zeta")  # differs at the third word
    a.script(cut(after_chunks=3))
    a.set_default(server_error(503))
    host = await proxy([entry(a), entry(b)], **config())
    status, raw, seconds = await raw_stream(http, host.url)
    assert status == 200  # the stream had started
    assert b"[DONE]" not in raw
    events = payloads(raw)
    last = orjson.loads(events[-1])
    assert set(last) == {"error"}
    assert last["error"]["message"] and last["error"]["code"] == "stream_interrupted"
    assert text_of(raw[: raw.rindex(b"data: ")]) == "".join(WORDS[:3])  # nothing of b's reached the client
    assert finish_reasons(raw[: raw.rindex(b"data: ")]) == []  # never a clean finish
    assert len(b.chat_requests()) == 1
    assert seconds < FIRST_BACKOFF_CAP + SLACK
    async with host.client() as client:
        await serves_normally(client, a, b)


# -- a stream that stalls ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefill", [True, False], ids=["prefill", "restart"])
async def test_a_stalled_stream_is_continued_after_the_idle_timeout(fakes, proxy, http, prefill: bool) -> None:
    idle = 0.3
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(stall(after_chunks=3))
    a.set_default(server_error(503))
    host = await proxy([entry(a), entry(b, supports_prefill=prefill)], **config(timeouts={"idle": idle}))
    status, raw, seconds = await raw_stream(http, host.url)
    assert status == 200
    assert_complete(raw)
    stalled, retried = a.chat_requests()
    (seen_b,) = b.chat_requests()
    assert retried.time - stalled.time >= idle - 0.01  # given up only after idle
    assert seen_b.time - stalled.time <= idle + FIRST_BACKOFF_CAP + SLACK
    assert idle - 0.01 <= seconds <= idle + FIRST_BACKOFF_CAP + SLACK
    if prefill:
        assert seen_b.json["messages"][-1] == {"role": "assistant", "content": "".join(WORDS[:3])}
    a.release_hangs()
    async with host.client() as client:
        await serves_normally(client, a, b)


# -- malformed events and a missing [DONE] -------------------------------------------------------------


@pytest.mark.parametrize("at", [0, 1, 3, 8], ids=["before-role", "after-role", "mid", "before-done"])
async def test_a_malformed_event_is_skipped_and_logged(fakes, proxy, http, caplog, at: int) -> None:
    # the fake *inserts* `data: {not json` at event index `at`: the whole answer still comes
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(malformed(at_chunk=at))
    host = await proxy([entry(a), entry(b)], **config())
    with caplog.at_level(logging.WARNING):
        status, raw, _ = await raw_stream(http, host.url)
    assert status == 200
    assert MALFORMED.strip() not in raw
    assert_complete(raw)
    assert {c["system_fingerprint"] for c in chunks(raw)} == {"fake-a"}
    assert len(a.chat_requests()) == 1 and b.chat_requests() == []  # not a failure: no retry
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("proxy_plugin")]
    assert len(warnings) == 1 and "malformed" in warnings[0].getMessage()
    async with host.client() as client:
        await serves_normally(client, a, b)


@pytest.mark.parametrize("usage", [True, False], ids=["with-usage", "no-usage"])
async def test_a_missing_done_is_added_promptly(fakes, proxy, http, usage: bool) -> None:
    idle = 2.0  # waiting for the idle timeout instead of the upstream's end would show
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(no_done())
    host = await proxy([entry(a), entry(b)], **config(timeouts={"idle": idle}))
    fields = {"stream_options": {"include_usage": True}} if usage else {}
    status, raw, seconds = await raw_stream(http, host.url, **fields)
    assert status == 200
    assert_complete(raw)
    assert seconds < idle / 2
    found = [c["usage"] for c in chunks(raw) if c.get("usage")]
    if usage:
        assert found == [{"prompt_tokens": 2, "completion_tokens": len(WORDS), "total_tokens": 2 + len(WORDS)}]
        assert chunks(raw)[-1]["choices"] == []  # the usage chunk is the last one, before [DONE]
    else:
        assert found == []
    assert len(a.chat_requests()) == 1 and b.chat_requests() == []
    async with host.client() as client:
        reply = await ask(client, True)  # the SDK sees a normal stream too
        assert reply.text == ANSWER and reply.finish_reasons == ["stop"]
        await serves_normally(client, a, b)


# -- an error event inside a 200 stream ------------------------------------------------------------


@contextlib.asynccontextmanager
async def sse_provider(events: list[bytes]) -> AsyncIterator[tuple[str, list[float]]]:
    """A provider ``hulumanage.sim`` cannot play: every chat request gets a 200 stream of exactly
    ``events``, then the stream ends. Yields (base URL, arrival times of the chat requests)."""
    arrivals: list[float] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        arrivals.append(time.monotonic())
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for event in events:
            await resp.write(event)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", arrivals
    finally:
        await runner.cleanup()


#: an error event as OpenAI sends one when a model is overloaded mid-stream
ERROR_EVENT = sse({"error": {"message": "The server is overloaded (simulated).", "type": "server_error", "code": None}})


def error_stream(after_words: int) -> list[bytes]:
    """The role chunk and ``after_words`` words of ANSWER, then ``ERROR_EVENT``."""
    head, _ = stream_chunks(Answer("chatcmpl-x", 0, "gpt-4", "fake-x", ANSWER, 1, 2))
    return [sse(c) for c in head[: after_words + 1]] + [ERROR_EVENT]



async def test_an_error_event_as_the_first_event_fails_over(fakes, proxy, http) -> None:
    (b,) = await fakes("b", answer=ANSWER)
    async with sse_provider([ERROR_EVENT]) as (url, arrivals):
        host = await proxy([{"name": "x", "base_url": url}, entry(b)], **config())
        status, raw, seconds = await raw_stream(http, host.url)
        assert status == 200, raw
        assert_complete(raw)
        assert {c["system_fingerprint"] for c in chunks(raw)} == {"fake-b"}
        assert len(arrivals) == 2 and len(b.chat_requests()) == 1  # transient: retried once, then b
        assert seconds < FIRST_BACKOFF_CAP + SLACK
        async with host.client() as client:
            await serves_normally(client, b)


async def test_an_error_event_mid_stream_is_continued_elsewhere(fakes, proxy, http) -> None:
    (b,) = await fakes("b", answer=ANSWER)
    async with sse_provider(error_stream(2)) as (url, arrivals):
        host = await proxy([{"name": "x", "base_url": url}, entry(b, supports_prefill=True)], **config())
        status, raw, _ = await raw_stream(http, host.url)
        assert status == 200
        assert_complete(raw)
        assert [c["system_fingerprint"] for c in chunks(raw)][:3] == ["fake-x"] * 3
        assert len(arrivals) == 2  # retried on x, which broke again
        (seen,) = b.chat_requests()
        assert seen.json["messages"][-1] == {"role": "assistant", "content": "".join(WORDS[:2])}
        view = (await health(http, host))["proxy"]["providers"]["x"]
        assert view["failures"] == 2 and view["last_error_class"] == "transient"


async def test_an_error_event_mid_stream_with_no_retry_is_continued_on_the_next_provider(fakes, proxy, http) -> None:
    (b,) = await fakes("b", answer=ANSWER)
    async with sse_provider(error_stream(2)) as (url, arrivals):
        host = await proxy(
            [{"name": "x", "base_url": url}, entry(b, supports_prefill=True)],
            **config(retries={"attempts_per_provider": 1}),
        )
        status, raw, _ = await raw_stream(http, host.url)
        assert status == 200
        assert_complete(raw)
        assert b"overloaded" not in raw  # the upstream's error event is not relayed
        assert [c["system_fingerprint"] for c in chunks(raw)][:3] == ["fake-x"] * 3
        assert len(arrivals) == 1
        (seen,) = b.chat_requests()
        assert seen.json["messages"] == [*USER, {"role": "assistant", "content": "".join(WORDS[:2])}]


# -- the client goes away ------------------------------------------------------------------------------


async def test_a_client_that_goes_away_mid_stream_frees_its_slot_and_charges_nobody(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(ok(chunk_gap=0.1))
    host = await proxy([entry(a, max_concurrent=1, slot_wait=0.05), entry(b)], **config())
    resp = await http.post(f"{host.url}/v1/chat/completions", json={"model": "gpt-4", "messages": USER, "stream": True})
    assert (await resp.content.readline()).startswith(b"data: ")
    resp.close()  # the client hangs up after the first event

    async def idle() -> bool:
        view = (await health(http, host))["proxy"]
        return view["in_flight"] == 0 and view["providers"]["a"]["in_flight"] == 0

    deadline = time.monotonic() + 2
    while not await idle():
        assert time.monotonic() < deadline, "the abandoned stream still holds its places"
        await asyncio.sleep(0.02)
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["failures"] == 0 and view["available"] is True  # the client left: not a's fault
    async with host.client() as client:
        reply = await ask(client, True)
        assert reply.fingerprints == {"fake-a"} and reply.text == ANSWER  # its only slot is free again
