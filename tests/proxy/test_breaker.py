"""Unit tests of the pure parts of the proxy's reliability: the circuit breaker (a state
machine driven by an injected clock) and failure classification (pure functions).

The end-to-end behaviour they produce is tested through the real server in
``test_faults*.py``; here every transition and every boundary is checked directly, with
no sleeping.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import pytest
from support.harness import free_port

from proxy_plugin.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from proxy_plugin.classify import (
    Failure,
    classify_exception,
    classify_status,
    describe_exception,
    error_code,
    retry_after,
)


class Clock:
    """A manual monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: Clock, **kwargs: float) -> Breaker:
    """A breaker on ``clock`` with a seeded jitter; defaults: 3 consecutive failures, open 1 s..8 s."""
    options = {"consecutive_failures": 3, "open_base": 1.0, "open_max": 8.0, "min_requests": 1000, **kwargs}
    return Breaker(clock=clock, rng=random.Random(7), **options)


def state(b: Breaker) -> str:
    """The state ``/health`` would show now."""
    return b.snapshot()["state"]


def open_for(b: Breaker, clock: Clock) -> float:
    """How long an open breaker stays open from now."""
    assert state(b) == OPEN
    return b.open_until - clock()


# -- circuit breaker -----------------------------------------------------------------------------------


def test_a_new_breaker_is_closed_and_lets_everything_through() -> None:
    b = breaker(Clock())
    assert state(b) == CLOSED and b.available()
    assert all(b.acquire() for _ in range(10))  # no probe limit while closed


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert state(b) == CLOSED and b.snapshot()["consecutive_failures"] == 2
    b.failure()
    assert state(b) == OPEN
    assert not b.available() and not b.acquire()


def test_the_open_time_is_open_base_with_jitter() -> None:
    durations = []
    for seed in range(50):
        clock = Clock()
        b = Breaker(consecutive_failures=1, open_base=2.0, open_max=60, clock=clock, rng=random.Random(seed))
        b.failure()
        durations.append(open_for(b, clock))
    assert all(1.6 <= d <= 2.4 for d in durations)
    assert len({round(d, 6) for d in durations}) > 40  # jittered, so breakers do not all reopen at once


def test_after_the_open_time_one_probe_at_a_time_goes_through() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1)
    b.failure()
    clock.advance(open_for(b, clock) - 0.001)
    assert state(b) == OPEN and not b.acquire()
    clock.advance(0.002)
    assert state(b) == HALF_OPEN and b.available()
    assert b.acquire()  # the probe
    assert not b.available() and not b.acquire()  # only one at a time
    b.release()  # the probe was not sent after all
    assert b.available() and b.acquire()


def test_a_successful_probe_closes_it_and_resets_the_backoff() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1)
    b.failure()
    clock.advance(open_for(b, clock))
    assert b.acquire()
    b.success()
    assert state(b) == CLOSED and b.available() and b.openings == 0
    b.failure()
    assert open_for(b, clock) <= 1.2  # back to open_base, not doubled


def test_a_failed_probe_reopens_for_twice_as_long_up_to_open_max() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1)
    b.failure()
    durations = []
    for _ in range(6):
        duration = open_for(b, clock)
        durations.append(duration)
        clock.advance(duration)
        assert b.acquire()  # the probe
        b.failure()
    assert b.snapshot()["opened"] == 7  # once, then again after each of the six failed probes
    bases = [1, 2, 4, 8, 8, 8]  # open_base * 2^n, capped at open_max
    for duration, base in zip(durations, bases, strict=True):
        assert 0.8 * base <= duration <= 1.2 * base
    assert open_for(b, clock) <= 8 * 1.2


def test_a_failure_rate_over_the_window_opens_it() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=100, failure_rate=0.5, min_requests=4, window=10)
    for ok in (True, False, True):
        b.success() if ok else b.failure()
    assert state(b) == CLOSED  # 3 requests: below min_requests
    b.failure()
    assert state(b) == OPEN  # 2 of 4 failed


def test_a_retry_of_the_same_request_does_not_extend_the_run_of_consecutive_failures() -> None:
    b = breaker(Clock())  # opens after 3 failed requests in a row
    for _ in range(2):
        b.failure()
        b.failure(repeat=True)  # the same request, retried on this provider, failed again
    assert state(b) == CLOSED and b.snapshot()["consecutive_failures"] == 2
    b.failure()
    assert state(b) == OPEN


def test_a_repeated_failure_still_counts_in_the_failure_rate() -> None:
    b = breaker(Clock(), consecutive_failures=100, failure_rate=0.5, min_requests=4, window=10)
    b.success()
    b.success()
    b.failure()
    b.failure(repeat=True)
    assert state(b) == OPEN  # 2 of 4 failed


def test_the_failure_rate_counts_each_failure_at_its_weight() -> None:
    b = breaker(Clock(), consecutive_failures=100, failure_rate=0.5, min_requests=4, window=10)
    for _ in range(10):  # half the attempts fail, each counting a tenth: 1 failure of 20 outcomes
        b.success()
        b.failure(weight=0.1)
    assert state(b) == CLOSED  # counted one each, 10 of 20 would have opened it
    # then full failures: (1 + k) / (20 + k) reaches 0.5 at k = 18
    for _ in range(17):
        b.failure()
    assert state(b) == CLOSED
    b.failure()
    assert state(b) == OPEN


def test_a_weight_outside_0_to_1_is_clamped() -> None:
    b = breaker(Clock(), consecutive_failures=100, failure_rate=0.5, min_requests=2, window=10)
    b.success()
    b.failure(weight=-3.0)  # counts 0
    assert state(b) == CLOSED
    b.success()
    b.failure(weight=7.0)  # counts 1, not 7: 1 of 4
    assert state(b) == CLOSED
    b.failure(weight=7.0)  # 2 of 5
    assert state(b) == CLOSED
    b.failure()  # 3 of 6
    assert state(b) == OPEN


def test_the_failure_rate_forgets_requests_older_than_the_window() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=100, failure_rate=0.5, min_requests=4, window=10)
    b.failure()
    b.failure()
    b.failure()
    clock.advance(11)  # those three are out of the window
    for _ in range(3):
        b.success()
    b.failure()
    assert state(b) == CLOSED  # 1 of 4 in the window


def test_open_for_opens_at_once_for_exactly_that_long() -> None:
    clock = Clock()
    b = breaker(clock, max_probe_gap=60)  # above every wait here (a longer one is capped: see below)
    b.failure(open_for=30)  # a 429 with Retry-After: 30
    assert state(b) == OPEN and open_for(b, clock) == 30
    b.failure(open_for=10)  # a shorter one while open: no change
    b.failure(open_for=40)  # a longer one: held open longer, not opened again
    assert open_for(b, clock) == 40 and b.snapshot()["opened"] == 1
    clock.advance(10)
    assert b.snapshot()["reopens_in"] == 30
    clock.advance(30)
    assert state(b) == HALF_OPEN


def test_an_auth_failure_holds_it_open_until_a_health_check_passes() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failure(until_health_check=True)
    assert state(b) == OPEN
    assert b.snapshot() == {"state": OPEN, "consecutive_failures": 1, "opened": 1, "reopens_in": None, "until_health_check": True}
    clock.advance(1e6)
    assert state(b) == OPEN and not b.acquire()  # no timer
    b.probe_now()
    assert state(b) == OPEN  # an answered check alone does not let a request probe it
    b.health_check_passed()
    assert state(b) == CLOSED and b.acquire()


def test_a_passing_health_check_does_not_close_an_ordinary_open_circuit_but_lets_it_probe() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1)
    b.failure()
    b.health_check_passed()
    assert state(b) == OPEN
    b.probe_now()
    assert state(b) == HALF_OPEN and b.acquire()
    assert not b.acquire()


def test_probe_now_never_touches_a_closed_circuit() -> None:
    clock = Clock()
    b = breaker(clock)
    b.probe_now()
    b.health_check_passed()
    assert state(b) == CLOSED and b.acquire() and b.acquire()


def test_snapshot_reports_the_time_left_open() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failure(open_for=5)
    clock.advance(1.25)
    assert b.snapshot() == {"state": OPEN, "consecutive_failures": 1, "opened": 1, "reopens_in": 3.75, "until_health_check": False}
    clock.advance(4)
    assert b.snapshot() == {"state": HALF_OPEN, "consecutive_failures": 1, "opened": 1}
    orjson.dumps(b.snapshot())  # JSON-able for /health


def test_failures_of_requests_already_in_flight_do_not_extend_the_open_time() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=2, open_base=1.0, open_max=60)
    b.failure()
    b.failure()  # opens for about 1 s
    for _ in range(6):  # six more requests sent before it opened come back failed
        b.failure()
    assert open_for(b, clock) <= 1.2


# -- classification ----------------------------------------------------------------------------------


def body(code: str | None = None, type: str | None = None) -> bytes:
    """An OpenAI-shaped error body."""
    return orjson.dumps({"error": {"message": "m", "type": type, "param": None, "code": code}})


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses(status: int) -> None:
    assert classify_status(status, body()) is Failure.TRANSIENT
    assert Failure.TRANSIENT.counts_against_provider


@pytest.mark.parametrize("status", [401, 403, 404])
def test_provider_configuration_statuses(status: int) -> None:
    assert classify_status(status, body("invalid_api_key")) is Failure.PROVIDER_CONFIG
    assert Failure.PROVIDER_CONFIG.counts_against_provider


@pytest.mark.parametrize("code", ["context_length_exceeded", "string_above_max_length"])
def test_a_400_about_context_length_is_its_own_class(code: str) -> None:
    assert classify_status(400, body(code)) is Failure.CONTEXT_LENGTH
    assert classify_status(400, body(None, type=code)) is Failure.CONTEXT_LENGTH  # code falls back to type
    assert not Failure.CONTEXT_LENGTH.counts_against_provider


@pytest.mark.parametrize(
    ("status", "raw"),
    [
        (400, body("content_filter", "invalid_request_error")),
        (400, body("invalid_value")),
        (400, b""),
        (400, b"<html>bad request</html>"),
        (413, body()),
        (422, body("unprocessable")),
    ],
)
def test_caller_errors(status: int, raw: bytes) -> None:
    assert classify_status(status, raw) is Failure.CALLER
    assert not Failure.CALLER.counts_against_provider


def test_the_message_text_never_decides() -> None:
    text = orjson.dumps({"error": {"message": "maximum context length exceeded; timeout", "code": None}})
    assert classify_status(400, text) is Failure.CALLER


@pytest.mark.parametrize("status", [405, 409, 418, 451])
def test_other_4xx_are_bad_responses(status: int) -> None:
    assert classify_status(status, body()) is Failure.BAD_RESPONSE
    assert Failure.BAD_RESPONSE.counts_against_provider


@pytest.mark.parametrize("status", [501, 505])
def test_other_5xx_are_bad_responses_as_the_table_says(status: int) -> None:
    assert classify_status(status, body()) is Failure.BAD_RESPONSE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (body("rate_limit_exceeded", "requests"), "rate_limit_exceeded"),
        (body(None, "server_error"), "server_error"),
        (orjson.dumps({"error": {"message": "m", "code": 400}}), None),  # a number is not a code
        (orjson.dumps({"error": "just a string"}), None),
        (orjson.dumps([1, 2]), None),
        (b"{not json", None),
        (b"", None),
    ],
)
def test_error_code(raw: bytes, expected: str | None) -> None:
    assert error_code(raw) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.2", 0.2), ("30", 30.0), (" 7 ", 7.0), ("0", 0.0), ("-5", 0.0), ("soon", None), ("", None)],
)
def test_retry_after_in_seconds(value: str, expected: float | None) -> None:
    assert retry_after({"Retry-After": value}) == expected
    assert retry_after({"retry-after": value}) == expected


def test_retry_after_missing() -> None:
    assert retry_after({}) is None


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    ahead = email.utils.format_datetime(now + timedelta(seconds=90), usegmt=True)
    behind = email.utils.format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert retry_after({"Retry-After": ahead}, now=now.timestamp()) == 90
    assert retry_after({"Retry-After": behind}, now=now.timestamp()) == 0.0
    assert retry_after({"Retry-After": "Someday, 99 Foo 2030 25:61:00 GMT"}) is None


@pytest.mark.parametrize("value", ["inf", "nan", "1e400"])
def test_retry_after_rejects_values_that_are_not_finite(value: str) -> None:
    assert retry_after({"Retry-After": value}) is None


@pytest.mark.parametrize(
    ("exc", "description"),
    [
        (TimeoutError(), "timeout"),
        (aiohttp.ServerTimeoutError(), "timeout"),
        (aiohttp.ServerDisconnectedError(), "server disconnected"),
        (aiohttp.ClientPayloadError("cut"), "response cut short"),
        (ConnectionResetError(), "connection reset"),
        (aiohttp.ClientOSError(), "connection reset"),
    ],
)
def test_transport_failures_are_transient(exc: BaseException, description: str) -> None:
    assert classify_exception(exc) is Failure.TRANSIENT
    assert describe_exception(exc) == description


async def test_a_refused_connection_is_transient_and_described_as_such() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get(f"http://127.0.0.1:{free_port()}/v1/models")
    assert classify_exception(caught.value) is Failure.TRANSIENT
    assert describe_exception(caught.value) == "connection refused"


@pytest.mark.parametrize("exc", [ValueError("x"), KeyError("k"), asyncio.CancelledError()])
def test_other_exceptions_are_not_classified(exc: BaseException) -> None:
    # a bug or a cancellation must propagate, not be retried elsewhere
    assert classify_exception(exc) is None


def test_a_request_that_started_while_closed_cannot_hand_back_another_requests_probe() -> None:
    from proxy_plugin.config import parse_config
    from proxy_plugin.provider_state import ProviderState

    config = parse_config({"providers": [{"name": "a", "base_url": "http://127.0.0.1:1/v1"}]}, {})
    provider = ProviderState(config.providers[0], config.circuit_breaker)
    early = provider.acquire_circuits("m")  # sent while the circuit was closed
    assert early == (False, False)
    provider.record_failure("m", "transient", "500", whole_provider=False, open_for=0.0)  # opens, probe-able at once
    probe = provider.acquire_circuits("m")
    assert probe == (False, True)  # this request holds the one half-open probe
    provider.release_circuits("m", early)  # the early request finishes
    assert provider.acquire_circuits("m") is None  # still only one probe in flight
    provider.release_circuits("m", probe)  # the probe was cancelled: hand it back
    assert provider.acquire_circuits("m") == (False, True)


@pytest.mark.parametrize(("open_base", "open_max", "gap"), [(1.0, 8.0, 3.0), (5.0, 60.0, 10.0), (20.0, 30.0, 1.0), (1.0, 2.0, 50.0)])
def test_an_open_circuit_never_waits_longer_than_max_probe_gap_before_a_probe(open_base: float, open_max: float, gap: float) -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1, open_base=open_base, open_max=open_max, max_probe_gap=gap)
    for _ in range(12):  # a provider that fails every probe: the backoff grows, the gap stays capped
        b.failure()
        assert 0 < open_for(b, clock) <= min(gap, open_max * 1.2)
        clock.advance(open_for(b, clock))
        assert b.acquire()  # the probe
    b.failure(open_for=3600)  # a long Retry-After is capped too
    assert open_for(b, clock) == pytest.approx(gap)


def test_a_passing_health_check_lets_a_per_model_circuit_probe_at_once() -> None:
    from proxy_plugin.clock import ManualClock
    from proxy_plugin.config import CircuitBreakerConfig, ProviderConfig
    from proxy_plugin.provider_state import ProviderState

    clock = ManualClock()
    state = ProviderState(ProviderConfig(name="a", base_url="http://127.0.0.1:1/v1"),
                          CircuitBreakerConfig(consecutive_failures=1), clock=clock)
    state.record_failure("gpt-4", "transient", "500", whole_provider=False)
    assert not state.available("gpt-4")
    assert state.why_unavailable("gpt-4") is not None
    state.health_check_passed()
    assert state.available("gpt-4")  # half-open: the next request is its probe
