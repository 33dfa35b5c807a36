"""The rate window itself (gate/limits.py): exact over any 60-second span, bounded memory at any rate."""

from __future__ import annotations

import dataclasses
import math

import pytest

from proxy_plugin.errors import ProxyError
from proxy_plugin.gate.limits import GRAIN, WINDOW, RateLimiter


@dataclasses.dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None


def admit(limiter: RateLimiter, limits: Limits, now: float, estimate: float = 10.0) -> bool:
    window = limiter.window("key:a")
    try:
        limiter.check(window, limits, estimate, now)
    except ProxyError:
        return False
    limiter.take(window, limits, estimate, now).settle(estimate / 2)
    return True


def test_no_60_second_span_ever_holds_more_than_rpm() -> None:
    limiter, limits = RateLimiter(), Limits(rpm=100)
    admitted = [i * 0.013 for i in range(20_000) if admit(limiter, limits, i * 0.013)]  # 77 a second offered
    assert len(admitted) > 400  # it keeps admitting as the window slides
    start = 0
    for end, at in enumerate(admitted):
        while admitted[start] <= at - WINDOW:
            start += 1
        assert end - start + 1 <= 100, f"{end - start + 1} requests in the 60 s ending at {at:.3f}"
    # and it is not much stricter than a log of single requests: under 1% fewer admitted
    log: list[float] = []
    for i in range(20_000):
        at = i * 0.013
        if sum(1 for t in log if t > at - WINDOW) < 100:
            log.append(at)
    assert len(admitted) >= 0.99 * len(log)


def test_a_burst_waits_for_the_newest_request_of_a_bucket_to_leave() -> None:
    limiter, limits = RateLimiter(), Limits(rpm=100)
    assert all(admit(limiter, limits, i / 1024) for i in range(100))  # 100 requests in 0.097 s: one bucket
    # 60 s after the first: 99 of them are still in the last 60 s, so a burst gets nothing
    assert not any(admit(limiter, limits, WINDOW) for _ in range(50))
    newest_leaves = WINDOW + 99 / 1024  # (times in 1/1024 s: exact in binary)
    assert not admit(limiter, limits, newest_leaves - 1 / 1024)
    assert admit(limiter, limits, newest_leaves)  # the newest of them has left: room for 100 again
    assert sum(admit(limiter, limits, newest_leaves) for _ in range(200)) == 99


def test_requests_further_apart_than_a_bucket_leave_exactly_60_s_later() -> None:
    limiter, limits = RateLimiter(), Limits(rpm=2)
    assert admit(limiter, limits, 0.0) and admit(limiter, limits, 30.0)
    window = limiter.window("key:a")
    with pytest.raises(ProxyError) as refused:
        limiter.check(window, limits, 1.0, 59.5)
    assert refused.value.headers["Retry-After"] == "1"  # 0.5 s until the first request leaves, rounded up
    assert admit(limiter, limits, 60.0)  # the first left the window at 60 s exactly
    assert not admit(limiter, limits, 89.9)
    assert admit(limiter, limits, 90.0)


def test_a_busy_caller_keeps_a_bounded_window_with_its_sums_right() -> None:
    limiter, limits = RateLimiter(), Limits(rpm=10**9, tpm=10**12)
    for i in range(120_000):  # 1,000 requests a second for two minutes
        assert admit(limiter, limits, i / 1000)
    window = limiter.window("key:a")
    window.prune(119.999)
    assert len(window.buckets) <= math.ceil(WINDOW / GRAIN) + 1
    assert 60_000 <= window.request_count <= 60_000 + GRAIN * 1000  # a request counts for 60 to 60.1 s
    assert window.token_sum == pytest.approx(5.0 * window.request_count)  # each settled to half its estimate
    assert window.token_sum == pytest.approx(sum(b.tokens for b in window.buckets))
