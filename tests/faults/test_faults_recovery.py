"""Fault injection end to end, faults over time: an outage and the recovery after it, an auth
failure held until a health check passes, what opens a circuit (quick failures against slow
ones, a request's retries), the retry budget under a burst of failures, and one deadline for
all the attempts of a request.

Health checks, when on, run every 0.1 s; state changes are awaited with a deadline, never
with fixed sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import openai
import orjson
import pytest
from support.faults import ANSWER, SLACK, ask, config, serves_normally
from support.helpers import USER, entry, health, raw_stream, until

from hulumanage.sim import error, hang, ok, server_error

FAILOVER = {"strategy": "failover", "health_check": {"enabled": False}}
CHECKED = {"strategy": "failover", "health_check": {"enabled": True, "interval": 0.1, "timeout": 0.2}}


@pytest.mark.parametrize("checks", [True, False], ids=["health-checks", "circuit-only"])
async def test_a_provider_down_for_a_while_loses_traffic_then_gets_it_back(fakes, proxy, http, checks: bool) -> None:
    # with health checks every 0.1 s the check takes a out and puts it back; without them its
    # circuit does: open for 0.2 s, then 0.4, then 0.5 (jittered), one probe request each time
    outage = 0.8
    a, b = await fakes("a", "b", answer=ANSWER)
    host = await proxy(
        [entry(a), entry(b)],
        **config(
            routing=CHECKED if checks else FAILOVER,
            circuit_breaker={"open_base": 0.2, "open_max": 0.5, "consecutive_failures": 2},
        ),
    )
    async with host.client() as client:
        assert (await ask(client, False)).fingerprints == {"fake-a"}
        a.down_for(outage)
        down_at = time.monotonic()
        up_at = down_at + outage
        served: list[tuple[float, str]] = []  # (when the answer came, who answered)
        while True:
            reply = await ask(client, len(served) % 2 == 1)  # plain and streamed in turn
            assert reply.text == ANSWER  # no request fails during the outage
            (fingerprint,) = reply.fingerprints
            served.append((time.monotonic(), fingerprint))
            if fingerprint == "fake-a":
                break
            assert time.monotonic() < up_at + 3, "traffic did not come back to a"
            await asyncio.sleep(0.03)
    back_at = served[-1][0]
    assert back_at >= up_at  # never answered by a while it was down
    assert back_at - up_at <= 1.0 + SLACK  # ... and back within about a second of recovering
    during = [who for when, who in served if when < up_at]
    assert len(during) >= 10 and set(during) == {"fake-b"}
    # traffic moved away: a saw a handful of the requests sent during its outage, not all of them
    down_hits = [s for s in a.chat_requests() if down_at <= s.time < up_at]
    assert all(s.behaviour == "down" for s in down_hits)
    if checks:
        assert len(down_hits) <= 4, [round(s.time - down_at, 3) for s in down_hits]
    else:  # the first request (2 attempts) and at most 2 probes (2 attempts each)
        assert len(down_hits) <= 6, [round(s.time - down_at, 3) for s in down_hits]
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["healthy"] is True
    async with host.client() as client:
        await serves_normally(client, a, b)


async def test_a_401_keeps_the_circuit_open_until_a_health_check_passes(fakes, proxy, http) -> None:
    interval = 0.6
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(error(401, code="invalid_api_key", message="Incorrect API key provided (simulated)."))
    host = await proxy(
        [entry(a), entry(b)],
        **config(
            routing={"health_check": {"enabled": True, "interval": interval, "timeout": 0.2}},
            # a circuit opened by ordinary failures would half-open after 0.06 s at most
            circuit_breaker={"open_base": 0.05, "open_max": 0.05, "consecutive_failures": 1},
        ),
    )

    def checks() -> int:
        return sum(s.path == "/v1/models" for s in a.requests)

    async def checked(n: int) -> bool:
        return checks() >= n

    async with host.client() as client:
        await until(lambda: checked(1))
        seen = checks()
        await until(lambda: checked(seen + 1))  # right after a check: the next is `interval` away
        assert (await ask(client, False)).fingerprints == {"fake-b"}
        failed_at = a.chat_requests()[0].time
        circuit = (await health(http, host))["proxy"]["providers"]["a"]["circuits"]["*"]
        assert circuit["state"] == "open" and circuit["until_health_check"] is True
        await asyncio.sleep(0.15)  # well past open_max: a timer would have let a probe through
        assert (await ask(client, True)).fingerprints == {"fake-b"}
        assert len(a.chat_requests()) == 1

        async def back_on_a() -> bool:
            return (await ask(client, False)).fingerprints == {"fake-a"}

        await until(back_on_a, timeout=interval * 3 + SLACK)
        first_back = a.chat_requests()[1].time
        # the circuit closed because a health check passed in between, not on a timer
        assert any(failed_at < s.time < first_back for s in a.requests if s.path == "/v1/models")
        await serves_normally(client, a, b)


ANSWER_SECONDS = 0.12


@pytest.mark.parametrize(
    ("failure_seconds", "time_weighted", "opens"),
    [(0.0, True, False), (2 * ANSWER_SECONDS, True, True), (0.0, False, True)],
    ids=["quick-503s-stay", "slow-503s-open", "quick-503s-open-when-counted"],
)
async def test_the_failure_rate_weighs_a_failure_by_the_time_it_took(
    fakes, proxy, http, failure_seconds: float, time_weighted: bool, opens: bool,
) -> None:
    # a answers every other request in ANSWER_SECONDS and fails the others with a 503; half its
    # attempts fail, the failure rate's threshold. A quick 503 (it fails over at once) counts a
    # small share of a failure and a keeps its traffic; one slower than an answer counts one.
    a, b = await fakes("a", "b", answer=ANSWER)
    failed = dataclasses.replace(server_error(503), latency=failure_seconds)
    a.script(*[ok(latency=ANSWER_SECONDS), failed] * 4)
    host = await proxy(
        [entry(a), entry(b)],
        **config(
            retries={"attempts_per_provider": 1},
            circuit_breaker={"consecutive_failures": 100, "failure_rate": 0.5, "min_requests": 4, "window": 60,
                             "time_weighted": time_weighted},
        ),
    )
    async with host.client() as client:
        replies = [await ask(client, i % 2 == 1) for i in range(8)]  # plain and streamed in turn
        assert all(reply.text == ANSWER for reply in replies)  # b answers what a fails
        view = (await health(http, host))["proxy"]["providers"]["a"]
        if opens:  # opened at the 4th request (2 of 4 failed): a saw 4 of the 8
            assert len(a.chat_requests()) == 4, view
            assert view["circuits"]["gpt-4"]["opened"] == 1
        else:
            assert len(a.chat_requests()) == 8, view
            assert all(c["opened"] == 0 and c["state"] == "closed" for c in view["circuits"].values())
        assert view["failures"] == (2 if opens else 4)


async def test_a_requests_retries_on_one_provider_count_once_toward_consecutive_failures(
    fakes, proxy, http,
) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default(server_error(500))
    host = await proxy(
        [entry(a), entry(b)],
        **config(
            retries={"attempts_per_provider": 2},
            circuit_breaker={"consecutive_failures": 2, "failure_rate": 1.0, "min_requests": 1000},
        ),
    )
    async with host.client() as client:
        assert (await ask(client, False)).fingerprints == {"fake-b"}
        assert len(a.chat_requests()) == 2  # tried twice: one failed request, not two failures in a row
        circuit = (await health(http, host))["proxy"]["providers"]["a"]["circuits"]["gpt-4"]
        assert (circuit["state"], circuit["consecutive_failures"]) == ("closed", 1)
        assert (await ask(client, True)).fingerprints == {"fake-b"}
        # the second failed request opened it at its first attempt, so it was not retried there
        assert len(a.chat_requests()) == 3
        circuit = (await health(http, host))["proxy"]["providers"]["a"]["circuits"]["gpt-4"]
        assert (circuit["state"], circuit["consecutive_failures"]) == ("open", 2)


async def test_the_retry_budget_caps_retries_during_a_burst_of_failures(fakes, proxy) -> None:
    burst, budget_min = 20, 2
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default(server_error(500))
    b.set_default(server_error(500))
    host = await proxy(
        [entry(a), entry(b)],
        **config(
            retries={"attempts_per_provider": 3, "budget_ratio": 0.1, "budget_min": budget_min},
            circuit_breaker={"enabled": False},  # every request reaches both providers
        ),
    )
    async with host.client() as client:

        async def one() -> tuple[int, float]:
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as caught:
                await ask(client, False)
            return caught.value.status_code, time.monotonic() - started

        results = await asyncio.gather(*(one() for _ in range(burst)))
        assert [status for status, _ in results] == [502] * burst
        assert max(seconds for _, seconds in results) < 1.0
        attempts = len(a.chat_requests()) + len(b.chat_requests())
        # one first attempt per provider per request, plus at most max(budget_min, 10% of 20) retries;
        # without the budget it would be 3 attempts per provider: 120
        assert 2 * burst <= attempts <= 2 * burst + max(budget_min, burst // 10)
        await serves_normally(client, a, b)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_one_deadline_bounds_every_attempt_of_a_request(fakes, proxy, stream: bool) -> None:
    total = 0.5
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default(hang())
    b.set_default(hang())
    # alone, each attempt could take 2 s: 4 attempts, 8 s
    host = await proxy([entry(a), entry(b)], **config(timeouts={"request": 2, "first_token": 2, "total": total}))
    async with host.client() as client:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            await ask(client, stream)
        seconds = time.monotonic() - started
        assert total - 0.02 <= seconds <= total + SLACK
        assert caught.value.status_code in (502, 504)
        assert set(caught.value.body) >= {"message", "type", "code"}
        assert len(a.chat_requests()) == 1 and b.chat_requests() == []
        a.release_hangs()
        b.release_hangs()
        await serves_normally(client, a, b)


async def test_the_deadline_ends_a_stream_that_outlasts_it_with_an_error_event(fakes, proxy, http) -> None:
    total = 0.5
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(ok(chunk_gap=0.2))  # healthy, but the whole answer takes 1.2 s
    host = await proxy([entry(a), entry(b)], **config(timeouts={"request": 5, "idle": 1, "total": total}))
    status, raw, seconds = await raw_stream(http, host.url)
    assert status == 200
    assert total - 0.02 <= seconds <= total + SLACK
    assert b"[DONE]" not in raw and b'"finish_reason":"stop"' not in raw  # never a clean finish
    last = orjson.loads(raw.rstrip(b"\n").rsplit(b"\n\n", 1)[-1].removeprefix(b"data: "))
    assert set(last) == {"error"} and last["error"]["code"] == "stream_interrupted"
    assert b.chat_requests() == []  # no time left to continue elsewhere
    async with host.client() as client:
        await serves_normally(client, a, b)


async def test_a_deadline_that_ends_a_flowing_stream_is_not_called_a_stall_nor_charged_to_the_provider(
    fakes, proxy, http
) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    a.script(ok(chunk_gap=0.2))
    host = await proxy([entry(a)], **config(timeouts={"request": 5, "idle": 1, "total": 0.5}))
    _, raw, _ = await raw_stream(http, host.url)
    assert b"stalled" not in raw and b"deadline" in raw
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["failures"] == 0


async def test_a_failure_that_opens_the_circuit_is_not_retried_on_that_provider(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.set_default(server_error(500))
    host = await proxy(
        [entry(a), entry(b)],
        routing={"strategy": "failover", "health_check": {"enabled": False}},
        retries={"attempts_per_provider": 3, "backoff_base": 0.01, "backoff_max": 0.02},
        circuit_breaker={"consecutive_failures": 1, "open_base": 5, "open_max": 10},
    )
    async with host.client() as client:
        reply = await client.chat.completions.create(model="gpt-4", messages=USER)
    assert reply.system_fingerprint == "fake-b"
    assert len(a.chat_requests()) == 1  # the first 500 opened a's circuit: no second try against it
