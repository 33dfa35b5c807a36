"""Fault injection end to end: one test per fault a provider can throw at the proxy.

Every test scripts simulated providers (``hulumanage.sim.FakeProvider``, real servers on
127.0.0.1), sends requests through the real host with the official SDK (raw aiohttp where
the exact SSE bytes matter), and checks what a user would see:

- what the client got: the complete answer, or a clean OpenAI-shaped error;
- how many attempts each fake saw, and how far apart (``Seen.time`` is the fake's
  ``time.monotonic()`` at arrival: the same clock as the test's);
- the time bounds the configuration promises;
- that the server serves normally once the fault is over.

The configuration is short and explicit (see ``RETRIES`` / ``TIMEOUTS``) so every bound is
a fraction of a second; ``SLACK`` is the scheduling margin allowed on top of a bound.
Streaming faults are in ``test_faults_stream.py``; faults over time (an outage, an auth
failure, the retry budget, the deadline) in ``test_faults_recovery.py``; graceful stop and
reload in ``test_faults_lifecycle.py``.
"""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime, timedelta

import openai
import orjson
import pytest
from support.faults import (
    ANSWER,
    FIRST_BACKOFF_CAP,
    RETRIES,
    SLACK,
    STREAM,
    USAGE,
    ask,
    config,
    gaps,
    serves_normally,
    usage_of,
)
from support.helpers import USER, entry, health

from hulumanage.sim import (
    content_filter,
    context_length,
    hang,
    ok,
    rate_limited,
    reset,
    server_error,
)

# -- 5xx ---------------------------------------------------------------------------------------------


@STREAM
async def test_500_once_is_retried_on_the_same_provider_after_a_short_backoff(fakes, proxy, stream: bool) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(server_error(500))
    host = await proxy([entry(a), entry(b)], **config())
    async with host.client() as client:
        reply = await ask(client, stream)
        assert (reply.text, reply.fingerprints, reply.finish_reasons) == (ANSWER, {"fake-a"}, ["stop"])
        assert [s.behaviour for s in a.chat_requests()] == ["error", "ok"]
        (gap,) = gaps(a)
        assert 0 <= gap <= FIRST_BACKOFF_CAP + SLACK
        assert b.chat_requests() == []  # no failover
        assert reply.seconds < FIRST_BACKOFF_CAP + SLACK
        await serves_normally(client, a, b)


async def test_the_backoff_before_a_retry_is_jittered_within_its_cap(fakes, proxy) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    # every request needs a retry: lift the retry budget; and half the attempts fail: with its
    # circuit on, a's failure rate would take it out
    host = await proxy([entry(a), entry(b)], **config(retries={"budget_min": 100}, circuit_breaker={"enabled": False}))
    samples = []
    async with host.client() as client:
        for _ in range(12):
            a.script(server_error(500))
            before = len(a.chat_requests())
            assert (await ask(client, False)).fingerprints == {"fake-a"}
            first, second = a.chat_requests()[before:]
            samples.append(second.time - first.time)
    assert max(samples) <= FIRST_BACKOFF_CAP + SLACK
    # full jitter: uniform over [0, cap], so neither a constant nor always near the cap
    # (all 12 above 0.6 * cap by chance: 0.4 ** 12, about 2e-5)
    assert min(samples) < 0.6 * FIRST_BACKOFF_CAP + 0.01
    assert max(samples) - min(samples) > 0.01
    assert b.chat_requests() == []


@STREAM
async def test_503_persistent_is_tried_attempts_per_provider_times_then_fails_over(fakes, proxy, http, stream) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default(server_error(503))
    host = await proxy([entry(a), entry(b)], **config())
    async with host.client() as client:
        reply = await ask(client, stream)
        assert (reply.text, reply.fingerprints) == (ANSWER, {"fake-b"})
        assert [s.behaviour for s in a.chat_requests()] == ["error", "error"]
        (gap,) = gaps(a)
        assert gap <= FIRST_BACKOFF_CAP + SLACK
        (seen_b,) = b.chat_requests()
        assert seen_b.time >= a.chat_requests()[-1].time  # b only after a's last attempt
        assert reply.seconds < FIRST_BACKOFF_CAP + SLACK
        view = (await health(http, host))["proxy"]["providers"]
        assert view["a"]["failures"] == 2 and "503" in view["a"]["last_error"]
        assert view["b"]["failures"] == 0
        await serves_normally(client, a, b)


# -- 429 ---------------------------------------------------------------------------------------------


@STREAM
async def test_429_with_a_short_retry_after_waits_that_long_then_retries_the_same_provider(
    fakes, proxy, stream: bool
) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(rate_limited(retry_after=0.2))
    host = await proxy([entry(a), entry(b)], **config())
    async with host.client() as client:
        reply = await ask(client, stream)
        assert (reply.text, reply.fingerprints) == (ANSWER, {"fake-a"})
        (gap,) = gaps(a)
        assert 0.19 <= gap <= 0.2 + SLACK  # Retry-After honoured, not the 0.05 s backoff
        assert b.chat_requests() == []
        await serves_normally(client, a, b)


@STREAM
async def test_429_with_a_long_retry_after_fails_over_at_once_and_opens_the_circuit(
    fakes, proxy, http, stream: bool
) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(rate_limited(retry_after=30))
    # max_probe_gap above the Retry-After: it is honoured whole (with the default 10 s, the gap caps it)
    host = await proxy([entry(a), entry(b)], **config(), circuit_breaker={"max_probe_gap": 60})
    async with host.client() as client:
        reply = await ask(client, stream)
        assert (reply.text, reply.fingerprints) == (ANSWER, {"fake-b"})
        assert reply.seconds < SLACK  # no waiting on a
        assert len(a.chat_requests()) == 1  # 30 s is past retry_after_max: not retried
        circuit = (await health(http, host))["proxy"]["providers"]["a"]["circuits"]["gpt-4"]
        assert circuit["state"] == "open"
        assert 25 < circuit["reopens_in"] <= 30
        # the open circuit keeps a out of the plan: the next requests go straight to b
        await serves_normally(client, a, b)
        assert len(a.chat_requests()) == 1


@STREAM
async def test_429_without_retry_after_backs_off_once_then_fails_over(fakes, proxy, stream: bool) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default(rate_limited())
    host = await proxy([entry(a), entry(b)], **config())
    async with host.client() as client:
        reply = await ask(client, stream)
        assert (reply.text, reply.fingerprints) == (ANSWER, {"fake-b"})
        assert len(a.chat_requests()) == 2 and len(b.chat_requests()) == 1
        (gap,) = gaps(a)
        assert gap <= FIRST_BACKOFF_CAP + SLACK
        await serves_normally(client, a, b)


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date ``seconds_from_now`` away (whole seconds, as the format allows)."""
    return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


async def test_429_with_an_http_date_retry_after_far_ahead_fails_over_and_opens_the_circuit(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(rate_limited(retry_after=http_date(30)))
    host = await proxy([entry(a), entry(b)], **config(), circuit_breaker={"max_probe_gap": 60})
    async with host.client() as client:
        reply = await ask(client, False)
        assert reply.fingerprints == {"fake-b"} and reply.seconds < SLACK
        assert len(a.chat_requests()) == 1  # the date was understood: not a backoff retry
        circuit = (await health(http, host))["proxy"]["providers"]["a"]["circuits"]["gpt-4"]
        assert circuit["state"] == "open" and 27 < circuit["reopens_in"] <= 31
        await serves_normally(client, a, b)


async def test_429_with_an_http_date_retry_after_in_the_past_retries_at_once(fakes, proxy) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(rate_limited(retry_after=http_date(-60)))
    host = await proxy([entry(a), entry(b)], **config())
    async with host.client() as client:
        reply = await ask(client, False)
        assert reply.fingerprints == {"fake-a"}
        (gap,) = gaps(a)
        assert gap < SLACK
        assert b.chat_requests() == []
        await serves_normally(client, a, b)


# -- transport faults --------------------------------------------------------------------------------


@STREAM
async def test_a_reset_before_headers_is_retried_on_the_same_provider(fakes, proxy, stream: bool) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(reset())
    host = await proxy([entry(a), entry(b)], **config())
    async with host.client() as client:
        reply = await ask(client, stream)
        assert (reply.text, reply.fingerprints, reply.finish_reasons) == (ANSWER, {"fake-a"}, ["stop"])
        assert [s.behaviour for s in a.chat_requests()] == ["reset", "ok"]
        assert gaps(a)[0] <= FIRST_BACKOFF_CAP + SLACK
        assert b.chat_requests() == []
        await serves_normally(client, a, b)


@STREAM
async def test_resets_every_time_fail_over_with_the_answer_complete(fakes, proxy, http, stream: bool) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default(reset())
    host = await proxy([entry(a), entry(b)], **config())
    async with host.client() as client:
        reply = await ask(client, stream)
        assert (reply.text, reply.fingerprints, reply.finish_reasons) == (ANSWER, {"fake-b"}, ["stop"])
        assert len(a.chat_requests()) == 2 and len(b.chat_requests()) == 1
        assert reply.seconds < FIRST_BACKOFF_CAP + SLACK
        view = (await health(http, host))["proxy"]["providers"]["a"]
        assert view["last_error_class"] == "transient" and view["failures"] == 2
        await serves_normally(client, a, b)


@STREAM
async def test_a_timeout_moves_on_to_the_next_provider_at_once(fakes, proxy, stream: bool) -> None:
    # non-streaming requests are bounded by timeouts.request, streams by timeouts.first_token; a
    # provider that accepted the request and sent nothing in time is not tried again (that would
    # double the wait), even with attempts_per_provider: 2: the next provider gets the request
    bound = 0.3
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default(hang())
    over = {"timeouts": {"request": bound, "first_token": bound}} if not stream else {}
    host = await proxy([entry(a), entry(b)], **config(**over))
    assert RETRIES["attempts_per_provider"] == 2
    async with host.client() as client:
        reply = await ask(client, stream)
        assert (reply.text, reply.fingerprints, reply.finish_reasons) == (ANSWER, {"fake-b"}, ["stop"])
        assert len(a.chat_requests()) == 1 and len(b.chat_requests()) == 1
        assert b.chat_requests()[0].time - a.chat_requests()[0].time >= bound - 0.01
        assert bound - 0.01 <= reply.seconds <= bound + SLACK  # one timeout, not two
        a.release_hangs()
        await serves_normally(client, a, b)


@STREAM
async def test_a_timeout_alone_bounds_a_hang_when_first_token_is_longer(fakes, proxy, stream: bool) -> None:
    # timeouts.request bounds a stream too, when it is the shorter of the two
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default(hang())
    host = await proxy(
        [entry(a), entry(b)],
        **config(timeouts={"request": 0.3, "first_token": 5}, retries={"attempts_per_provider": 1}),
    )
    async with host.client() as client:
        reply = await ask(client, stream)
        assert reply.fingerprints == {"fake-b"} and reply.text == ANSWER
        assert 0.29 <= reply.seconds <= 0.3 + SLACK
        a.release_hangs()
        await serves_normally(client, a, b)


# -- client errors -------------------------------------------------------------------------------------


@STREAM
async def test_context_length_fails_over_to_a_provider_with_another_model_only(fakes, proxy, http, stream) -> None:
    a, same, bigger = await fakes("a", "same", "bigger", answer=ANSWER)
    a.set_default(context_length())
    host = await proxy(
        [entry(a), entry(same), entry(bigger, model_map={"gpt-4": "gpt-4-32k"})],
        **config(circuit_breaker={"consecutive_failures": 1}),
    )
    async with host.client() as client:
        reply = await ask(client, stream, **USAGE[stream])
        assert (reply.text, reply.fingerprints) == (ANSWER, {"fake-bigger"})
        assert reply.model == "gpt-4-32k"  # reported by the provider that answered
        assert len(a.chat_requests()) == 1  # a client error: not retried
        assert same.chat_requests() == []  # same model as a: it would fail the same way
        assert [s.json["model"] for s in bigger.chat_requests()] == ["gpt-4-32k"]
        providers = (await health(http, host))["proxy"]["providers"]
        for name in ("a", "same", "bigger"):
            view = providers[name]
            assert view["failures"] == 0 and view["healthy"] is True and view["available"] is True, name
            assert all(c["state"] == "closed" for c in view["circuits"].values()), (name, view["circuits"])
        # not marked: with consecutive_failures 1, a failure would have opened a's circuit
        a.set_default(ok())
        assert (await ask(client, stream)).fingerprints == {"fake-a"}
        await serves_normally(client, a, same, bigger)


@STREAM
async def test_content_filter_is_returned_as_is_without_retry_or_failover(fakes, proxy, http, stream) -> None:
    a, b = await fakes("a", "b")
    fault = content_filter()
    a.script(fault)
    host = await proxy([entry(a), entry(b)], **config())
    async with host.client() as client:
        started = time.monotonic()
        with pytest.raises(openai.BadRequestError) as caught:
            await ask(client, stream)
        assert time.monotonic() - started < SLACK
        exc = caught.value
        assert exc.status_code == 400
        assert exc.body["message"] == fault.message
        assert exc.body["code"] == "content_filter"
        assert exc.body["type"] == "invalid_request_error"
        assert len(a.chat_requests()) == 1
        assert b.chat_requests() == []
        view = (await health(http, host))["proxy"]["providers"]["a"]
        assert view["failures"] == 0 and view["available"] is True
        await serves_normally(client, a, b)
        assert len(b.chat_requests()) == 0  # a still first in line: it was not marked


# -- what the response reports ---------------------------------------------------------------------


@STREAM
async def test_the_response_reports_the_model_and_usage_of_the_provider_that_answered(
    fakes, proxy, stream: bool
) -> None:
    (a,) = await fakes("a", answer="a would have said this")
    (b,) = await fakes("b", answer=ANSWER)
    a.set_default(server_error(503))
    host = await proxy([entry(a, model_map={"gpt-4": "a-model"}), entry(b, model_map={"gpt-4": "b-model"})], **config())
    async with host.client() as client:
        reply = await ask(client, stream, **USAGE[stream])
        assert reply.fingerprints == {"fake-b"}
        assert reply.model == "b-model"
        assert reply.usage == usage_of(ANSWER)
        assert [s.json["model"] for s in a.chat_requests()] == ["a-model", "a-model"]
        await serves_normally(client, a, b)


# -- raw checks the SDK would hide -----------------------------------------------------------------


async def test_errors_are_openai_shaped_with_the_right_status(fakes, proxy, http) -> None:
    """Every provider failing: a 502 whose JSON body is ``{"error": {message, type, code}}``."""
    a, b = await fakes("a", "b")
    a.set_default(server_error(500))
    b.set_default(reset())
    host = await proxy([entry(a), entry(b)], **config())
    async with http.post(f"{host.url}/v1/chat/completions", json={"model": "gpt-4", "messages": USER}) as resp:
        assert resp.status == 502
        assert resp.headers["Content-Type"].startswith("application/json")
        body = orjson.loads(await resp.read())
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"])
    assert "a: 500" in body["error"]["message"] and "b: " in body["error"]["message"]
    assert len(a.chat_requests()) == 2 and len(b.chat_requests()) == 2
    async with host.client() as client:
        await serves_normally(client, a, b)
