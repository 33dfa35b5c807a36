"""Concurrency limits through the real server: provider slots, the global queue, timeouts.

Slots are held with ``hang()`` / ``stall()`` on a fake (released explicitly) or with
``ok(latency=...)``; the test waits for the held request to reach the fake before it
sends the next one, so nothing depends on scheduling luck.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest
from support.helpers import USER, entry, health, raw_stream, until

from hulumanage.sim import hang, ok, stall

FAILOVER = {"strategy": "failover", "health_check": {"enabled": False}}


async def ask(client: openai.AsyncOpenAI, **kwargs: Any) -> str | None:
    """The fingerprint (``fake-<name>``) of the provider that answered one request."""
    reply = await client.chat.completions.create(model="gpt-4", messages=USER, **kwargs)
    return reply.system_fingerprint


# -- per-provider slots --------------------------------------------------------------------------


async def test_a_full_provider_overflows_to_the_next(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b")
    a.script(hang(10), hang(10))
    host = await proxy([entry(a, max_concurrent=2, slot_wait=0.05), entry(b)], routing=FAILOVER)
    async with host.client() as client:
        held = [asyncio.create_task(ask(client)) for _ in range(2)]
        await a.wait_for_requests(2, chat_only=True)
        view = (await health(http, host))["proxy"]["providers"]["a"]
        assert view["in_flight"] == 2 and view["max_concurrent"] == 2
        started = time.monotonic()
        assert [await ask(client) for _ in range(3)] == ["fake-b"] * 3
        assert time.monotonic() - started < 2.0  # slot_wait is 0.05 s a request
        assert len(a.chat_requests()) == 2  # never a third in flight on a
        a.release_hangs()
        assert await asyncio.gather(*held) == ["fake-a", "fake-a"]
        # slots were given back: a serves again
        assert await ask(client) == "fake-a"


async def test_a_request_waits_slot_wait_for_a_slot_to_free(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.script(ok(latency=0.3))
    host = await proxy([entry(a, max_concurrent=1, slot_wait=5), entry(b)], routing=FAILOVER)
    async with host.client() as client:
        first = asyncio.create_task(ask(client))
        await a.wait_for_requests(1, chat_only=True)
        assert await ask(client) == "fake-a"  # waited for a's slot rather than moving on
        assert await first == "fake-a"
    assert b.chat_requests() == []
    # the second request reached a only after the first one finished
    first_seen, second_seen = a.chat_requests()
    assert second_seen.time - first_seen.time >= 0.25


async def test_streams_hold_their_slot_until_they_end(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.script(stall(1))
    host = await proxy([entry(a, max_concurrent=1, slot_wait=0.05), entry(b)], routing=FAILOVER)
    async with host.client() as client:
        stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True)
        first = await anext(aiter(stream))
        assert first.system_fingerprint == "fake-a"
        assert await ask(client) == "fake-b"  # a's only slot is taken by the open stream
        a.release_hangs()
        rest = [c async for c in stream]
        assert rest[-1].choices[0].finish_reason == "stop"
        assert await ask(client) == "fake-a"


async def test_every_provider_full_is_a_prompt_503(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.script(hang(10))
    b.script(hang(10))
    host = await proxy(
        [entry(a, max_concurrent=1, slot_wait=0.05), entry(b, max_concurrent=1, slot_wait=0.05)], routing=FAILOVER
    )
    async with host.client() as client:
        held = [asyncio.create_task(ask(client)) for _ in range(2)]
        await a.wait_for_requests(1, chat_only=True)
        await b.wait_for_requests(1, chat_only=True)
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            await ask(client)
        assert time.monotonic() - started < 2.0
        a.release_hangs()
        b.release_hangs()
        assert sorted(await asyncio.gather(*held)) == ["fake-a", "fake-b"]
    exc = caught.value
    assert exc.status_code == 503
    assert exc.response.headers.get("Retry-After")
    assert "a: at capacity" in exc.body["message"] and "b: at capacity" in exc.body["message"]


# -- the global queue -----------------------------------------------------------------------------


async def test_full_queue_is_a_503_with_retry_after(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    a.script(hang(10))
    host = await proxy([entry(a)], routing=FAILOVER, queue={"max_concurrent": 1, "timeout": 0.2})
    async with host.client() as client:
        held = asyncio.create_task(ask(client))
        await a.wait_for_requests(1, chat_only=True)
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            await ask(client)
        waited = time.monotonic() - started
        a.release_hangs()
        assert await held == "fake-a"
    assert 0.15 <= waited < 2.0  # it waited queue.timeout, no longer
    exc = caught.value
    assert exc.status_code == 503
    assert exc.response.headers["Retry-After"]
    assert "at capacity" in exc.body["message"]
    assert exc.body["code"] == "queue_full"
    assert len(a.chat_requests()) == 1  # the rejected request never went upstream
    assert (await health(http, host))["proxy"]["queue_rejected"] == 1


async def test_queue_rejects_at_once_with_zero_timeout_and_streams_count(fakes, proxy) -> None:
    (a,) = await fakes("a")
    a.script(stall(1))
    host = await proxy([entry(a)], routing=FAILOVER, queue={"max_concurrent": 1, "timeout": 0})
    async with host.client() as client:
        stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True)
        await anext(aiter(stream))
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            await ask(client)
        assert time.monotonic() - started < 1.0
        assert caught.value.status_code == 503
        a.release_hangs()
        [c async for c in stream]
        assert await ask(client) == "fake-a"  # the place was given back when the stream ended


async def test_a_queued_request_is_served_when_a_place_frees_in_time(fakes, proxy) -> None:
    (a,) = await fakes("a")
    a.script(ok(latency=0.2))
    host = await proxy([entry(a)], routing=FAILOVER, queue={"max_concurrent": 1, "timeout": 5})
    async with host.client() as client:
        first = asyncio.create_task(ask(client))
        await a.wait_for_requests(1, chat_only=True)
        assert await ask(client) == "fake-a"
        assert await first == "fake-a"


async def test_queue_bounds_requests_in_flight(fakes, proxy) -> None:
    (a,) = await fakes("a")
    a.set_default(ok(latency=0.1))
    host = await proxy([entry(a)], routing=FAILOVER, queue={"max_concurrent": 2, "timeout": 10})
    async with host.client() as client:
        assert await asyncio.gather(*(ask(client) for _ in range(6))) == ["fake-a"] * 6
    arrivals = sorted(s.time for s in a.chat_requests())
    # never more than two at a time: the 3rd request arrives only after the 1st is answered
    for i in range(2, 6):
        assert arrivals[i] - arrivals[i - 2] >= 0.09


# -- nothing waits forever -------------------------------------------------------------------------


async def test_a_hung_provider_times_out(fakes, proxy) -> None:
    (a,) = await fakes("a")
    a.set_default(hang())  # until released: only the proxy's timeout ends it
    host = await proxy([entry(a)], routing=FAILOVER, timeouts={"request": 0.3}, retries={"attempts_per_provider": 1})
    started = time.monotonic()
    async with host.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await ask(client)
    assert time.monotonic() - started < 2.0
    assert caught.value.status_code == 502
    assert "a: timeout" in caught.value.body["message"]


async def test_a_stalled_stream_ends_with_an_error_after_the_idle_timeout(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    a.set_default(stall(2))
    host = await proxy(
        [entry(a)], routing=FAILOVER, timeouts={"idle": 0.3, "request": 30}, retries={"attempts_per_provider": 1}
    )
    status, raw, seconds = await raw_stream(http, host.url)
    assert status == 200
    assert seconds < 3.0
    assert b"[DONE]" not in raw
    assert raw.rstrip().endswith(b"}")
    assert b'"error"' in raw.split(b"\n\n")[-2]


async def test_the_total_deadline_bounds_every_attempt_together(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.set_default(hang())
    b.set_default(hang())
    host = await proxy([entry(a), entry(b)], routing=FAILOVER, timeouts={"request": 10, "total": 0.4})
    started = time.monotonic()
    async with host.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await ask(client)
    assert time.monotonic() - started < 2.0
    assert caught.value.status_code in (502, 503, 504)
    assert "a: timeout" in caught.value.body["message"]


async def test_a_client_leaving_a_stream_gives_its_place_back(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=" ".join(["word"] * 200))
    a.set_default(ok(chunk_gap=0.01))
    host = await proxy([entry(a)], routing=FAILOVER, queue={"max_concurrent": 1, "timeout": 3})
    resp = await http.post(f"{host.url}/v1/chat/completions", json={"model": "gpt-4", "messages": USER, "stream": True})
    assert resp.status == 200
    await resp.content.readline()  # the stream is flowing
    resp.close()  # the client goes away mid-stream

    async def place_free() -> bool:
        return (await health(http, host))["proxy"]["in_flight"] == 0

    await until(place_free, timeout=2.0)  # well before the 2 s the whole answer takes
    async with host.client() as client:
        assert await ask(client) == "fake-a"
