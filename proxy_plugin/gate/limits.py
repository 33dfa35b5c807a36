"""Rate limits per caller: requests and tokens per minute over a sliding window, and requests in flight.

A sliding window log kept in 0.1-second buckets, not a fixed window and not GCRA: each
caller keeps, for the last 60 seconds, how many requests (and tokens reserved) arrived in
each tenth of a second. A request passes when the window holds fewer than ``rpm``
requests and ``tpm`` minus the window's tokens covers its estimate. A bucket leaves the
window only when its newest request is 60 seconds old, so a request is counted for 60 to
60.1 seconds: no 60-second span ever holds more than ``rpm`` requests (a fixed window
lets 2x through at its boundary), and requests further apart than a tenth of a second
are counted exactly as a log of single requests would. The check and the reservation are
one synchronous step: exact under any concurrency on one event loop. Memory is at most
600 buckets per caller, whatever the rate (a plain log keeps an entry per request).

Tokens are reserved at the estimate (:mod:`proxy_plugin.gate.estimate`) and settled to
the real usage when the request ends (:meth:`Held.settle`); a failed request settles to 0.
State lives as long as the runtime (a reload keeps the windows; the limits are read from
the configuration of each request). Time is the runtime's clock (``monotonic``).
"""

from __future__ import annotations

import collections
import math
from typing import Protocol

from proxy_plugin.errors import ProxyError


class Limits(Protocol):
    """A caller's limits (a client key's section, or ``clients.anonymous``); None: no such limit."""

    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...
    @property
    def max_parallel(self) -> int | None: ...

WINDOW = 60.0
GRAIN = 0.1       # seconds of requests one bucket holds
_SWEEP_AT = 4096  # callers kept before idle ones are dropped (one per client IP under ``anonymous``)


class Bucket:
    """The requests of one tenth of a second: how many, the tokens they hold, the newest one's time."""

    __slots__ = ("first", "last", "live", "requests", "tokens")

    def __init__(self, at: float) -> None:
        self.first = self.last = at
        self.requests = 0
        self.tokens = 0.0
        self.live = True  # False once the window dropped it


class Window:
    """One caller's last minute: its buckets, their sums, requests in flight."""

    __slots__ = ("buckets", "parallel", "request_count", "token_sum")

    def __init__(self) -> None:
        self.buckets: collections.deque[Bucket] = collections.deque()
        self.request_count = 0
        self.token_sum = 0.0
        self.parallel = 0

    def prune(self, now: float) -> None:
        """Drop the buckets whose newest request left the window."""
        cutoff = now - WINDOW
        buckets = self.buckets
        while buckets and buckets[0].last <= cutoff:
            gone = buckets.popleft()
            gone.live = False
            self.request_count -= gone.requests
            self.token_sum -= gone.tokens
        if not buckets:
            self.request_count, self.token_sum = 0, 0.0  # no drift from float sums

    def bucket(self, now: float) -> Bucket:
        """The bucket a request arriving at ``now`` joins."""
        buckets = self.buckets
        if buckets:
            newest = buckets[-1]
            if now < newest.first + GRAIN:
                newest.last = max(newest.last, now)
                return newest
        newest = Bucket(now)
        buckets.append(newest)
        return newest

    def reset(self) -> float:
        """When the oldest bucket leaves the window (``remaining`` grows then); call after :meth:`prune`."""
        return self.buckets[0].last + WINDOW if self.buckets else 0.0

    def token_wait(self, now: float, need: float, tpm: int) -> float:
        """Seconds until ``need`` more tokens fit under ``tpm``."""
        over = self.token_sum + need - tpm
        for bucket in self.buckets:
            over -= bucket.tokens
            if over <= 0:
                return bucket.last + WINDOW - now
        return WINDOW


_DURATIONS: dict[int, str] = {}  # by milliseconds: answers close in time share their reset texts


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``0.25s``, ``1m0s`` (to the millisecond)."""
    ms = round(seconds * 1000) if seconds > 0 else 0
    text = _DURATIONS.get(ms)
    if text is None:
        if len(_DURATIONS) >= 1024:
            _DURATIONS.clear()
        if ms >= 60_000:
            minutes = ms // 60_000
            text = f"{minutes}m{round((ms - minutes * 60_000) / 1000):d}s"
        else:
            text = f"{ms / 1000:g}s"
        _DURATIONS[ms] = text
    return text


def _refusal(what: str, wait: float, headers: dict[str, str], reason: str) -> ProxyError:
    retry = max(1, math.ceil(wait))
    return ProxyError(429, f"rate limit exceeded: {what}; retry after {retry} s",
                      "rate_limit_error", "rate_limit_exceeded",
                      {"Retry-After": str(retry), **headers}, reason=reason)


class Held:
    """What one admitted request holds of a caller's limits: a place in flight and its token reservation."""

    __slots__ = ("bucket", "tokens", "window")

    def __init__(self, window: Window, bucket: Bucket | None, tokens: float) -> None:
        self.window, self.bucket, self.tokens = window, bucket, tokens

    def settle(self, tokens: float) -> None:
        """The request ended having used ``tokens`` (0: failed, or a cache hit): leave the flight, fix the window."""
        self.window.parallel -= 1
        bucket = self.bucket
        if bucket is not None:
            if bucket.live:
                change = tokens - self.tokens
                bucket.tokens += change
                self.window.token_sum += change
            self.bucket = None


class RateLimiter:
    """Every caller's window (callers are ``key:<id>`` or ``ip:<address>``)."""

    def __init__(self) -> None:
        self.windows: dict[str, Window] = {}

    def window(self, caller: str) -> Window:
        """The caller's window (made on first use; idle ones swept when there are many)."""
        window = self.windows.get(caller)
        if window is None:
            if len(self.windows) >= _SWEEP_AT:
                self._sweep()
            window = self.windows[caller] = Window()
        return window

    def _sweep(self) -> None:
        for caller in [c for c, w in self.windows.items() if not w.parallel and not w.buckets]:
            del self.windows[caller]

    @staticmethod
    def check(window: Window, limits: Limits, estimate: float, now: float) -> dict[str, str]:
        """Raise the 429 when the request does not fit; else the ``x-ratelimit-*`` headers it will carry."""
        window.prune(now)
        headers = headers_of(window, limits, now, 1, estimate)
        rpm, tpm, parallel = limits.rpm, limits.tpm, limits.max_parallel
        if rpm is not None and window.request_count >= rpm:
            raise _refusal(f"{rpm} requests per minute", window.reset() - now,
                           headers_of(window, limits, now), "rpm")
        if tpm is not None and window.token_sum + estimate > tpm:
            if estimate > tpm:
                raise _refusal(f"this request may use {estimate:.0f} tokens (prompt estimate plus max_tokens), "
                               f"more than the {tpm} tokens per minute allowed; lower max_tokens", WINDOW,
                               headers_of(window, limits, now), "tpm")
            raise _refusal(f"{tpm} tokens per minute", window.token_wait(now, estimate, tpm),
                           headers_of(window, limits, now), "tpm")
        if parallel is not None and window.parallel >= parallel:
            raise _refusal(f"{parallel} requests in parallel", 1.0, headers_of(window, limits, now), "parallel")
        return headers

    @staticmethod
    def take(window: Window, limits: Limits, estimate: float, now: float) -> Held:
        """Count the request in (after :meth:`check`, with no ``await`` in between)."""
        bucket = window.bucket(now)
        bucket.requests += 1
        window.request_count += 1
        window.parallel += 1
        if limits.tpm is None:
            return Held(window, None, 0.0)
        bucket.tokens += estimate
        window.token_sum += estimate
        return Held(window, bucket, estimate)


def headers_of(window: Window, limits: Limits, now: float, taking: int = 0, estimate: float = 0.0) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers (:func:`rate_headers`) from this process's view of ``window``.

    ``remaining`` counts this request in when ``taking``; ``reset`` is the time until the
    oldest request (tokens) in the window leaves it, i.e. until ``remaining`` grows.
    """
    return rate_headers(limits, window.request_count + taking, window.token_sum + (estimate if taking else 0.0),
                        window.reset() - now if window.buckets else WINDOW if taking else 0.0,
                        _token_reset(window) - now if window.token_sum > 0 else WINDOW if taking else 0.0)


def rate_headers(limits: Limits, requests: int, tokens: float, requests_reset: float,
                 tokens_reset: float) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers: the requests trio when rpm is set, the tokens trio when tpm is.

    ``requests`` and ``tokens``: what the window holds (this request counted in when it is
    taken); the resets: seconds until ``remaining`` grows. The shared (Redis) window's
    headers are made here too, from the admission script's figures.
    """
    headers: dict[str, str] = {}
    rpm, tpm = limits.rpm, limits.tpm
    if rpm is not None:
        left = rpm - requests
        headers["x-ratelimit-limit-requests"] = str(rpm)
        headers["x-ratelimit-remaining-requests"] = str(left) if left > 0 else "0"
        headers["x-ratelimit-reset-requests"] = _duration(requests_reset)
    if tpm is not None:
        left_tokens = math.floor(tpm - tokens)
        headers["x-ratelimit-limit-tokens"] = str(tpm)
        headers["x-ratelimit-remaining-tokens"] = str(left_tokens) if left_tokens > 0 else "0"
        headers["x-ratelimit-reset-tokens"] = _duration(tokens_reset)
    return headers


def _token_reset(window: Window) -> float:
    """When the oldest bucket holding tokens leaves the window."""
    for bucket in window.buckets:
        if bucket.tokens > 0:
            return bucket.last + WINDOW
    return 0.0
