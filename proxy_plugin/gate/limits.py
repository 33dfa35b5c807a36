"""Rate limits per caller: requests and tokens per minute over a sliding window log, and requests in flight.

Sliding window log, not a fixed window and not GCRA: each caller keeps the times of its
requests (and the token amounts reserved) of the last 60 seconds; a request passes when
the window holds fewer than ``rpm`` requests and ``tpm`` minus the window's tokens covers
its estimate. So no 60-second span ever holds more than ``rpm`` requests (a fixed window
lets 2x through at its boundary), and the check and the reservation are one synchronous
step: exact under any concurrency on one event loop. Memory is one entry per request
of the last minute.

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
_SWEEP_AT = 4096  # callers kept before idle ones are dropped (one per client IP under ``anonymous``)


class _Tokens:
    """Tokens reserved at ``at``; ``live`` until the window drops it."""

    __slots__ = ("amount", "at", "live")

    def __init__(self, at: float, amount: float) -> None:
        self.at, self.amount, self.live = at, amount, True


class Window:
    """One caller's last minute: request times, token reservations, requests in flight."""

    __slots__ = ("parallel", "requests", "token_sum", "tokens")

    def __init__(self) -> None:
        self.requests: collections.deque[float] = collections.deque()
        self.tokens: collections.deque[_Tokens] = collections.deque()
        self.token_sum = 0.0
        self.parallel = 0

    def prune(self, now: float) -> None:
        """Drop what left the window."""
        cutoff = now - WINDOW
        requests, tokens = self.requests, self.tokens
        while requests and requests[0] <= cutoff:
            requests.popleft()
        while tokens and tokens[0].at <= cutoff:
            gone = tokens.popleft()
            gone.live = False
            self.token_sum -= gone.amount
        if not tokens:
            self.token_sum = 0.0  # no drift from float sums

    def token_wait(self, now: float, need: float, tpm: int) -> float:
        """Seconds until ``need`` more tokens fit under ``tpm``."""
        over = self.token_sum + need - tpm
        for entry in self.tokens:
            over -= entry.amount
            if over <= 0:
                return entry.at + WINDOW - now
        return WINDOW


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``0.25s``, ``1m0s``."""
    seconds = max(0.0, seconds)
    if seconds >= 60:
        minutes = int(seconds // 60)
        return f"{minutes}m{round(seconds - minutes * 60):d}s"
    return f"{round(seconds, 3):g}s"


def _refusal(what: str, wait: float, headers: dict[str, str], reason: str) -> ProxyError:
    retry = max(1, math.ceil(wait))
    return ProxyError(429, f"rate limit exceeded: {what}; retry after {retry} s",
                      "rate_limit_error", "rate_limit_exceeded",
                      {"Retry-After": str(retry), **headers}, reason=reason)


class Held:
    """What one admitted request holds of a caller's limits: a place in flight and its token reservation."""

    __slots__ = ("tokens", "window")

    def __init__(self, window: Window, tokens: _Tokens | None) -> None:
        self.window, self.tokens = window, tokens

    def settle(self, tokens: float) -> None:
        """The request ended having used ``tokens`` (0: failed, or a cache hit): leave the flight, fix the window."""
        self.window.parallel -= 1
        held = self.tokens
        if held is not None:
            if held.live:
                self.window.token_sum += tokens - held.amount
            held.amount = tokens
            self.tokens = None


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
        for caller in [c for c, w in self.windows.items() if not w.parallel and not w.requests and not w.tokens]:
            del self.windows[caller]

    @staticmethod
    def check(window: Window, limits: Limits, estimate: float, now: float) -> dict[str, str]:
        """Raise the 429 when the request does not fit; else the ``x-ratelimit-*`` headers it will carry."""
        window.prune(now)
        headers = headers_of(window, limits, now, 1, estimate)
        rpm, tpm, parallel = limits.rpm, limits.tpm, limits.max_parallel
        if rpm is not None and len(window.requests) >= rpm:
            raise _refusal(f"{rpm} requests per minute", window.requests[0] + WINDOW - now,
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
        window.requests.append(now)
        window.parallel += 1
        tokens = None
        if limits.tpm is not None:
            tokens = _Tokens(now, estimate)
            window.tokens.append(tokens)
            window.token_sum += estimate
        return Held(window, tokens)


def headers_of(window: Window, limits: Limits, now: float, taking: int = 0, estimate: float = 0.0) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers: the requests trio when rpm is set, the tokens trio when tpm is.

    ``remaining`` counts this request in when ``taking``; ``reset`` is the time until the
    oldest request (tokens) in the window leaves it, i.e. until ``remaining`` grows.
    """
    headers: dict[str, str] = {}
    if limits.rpm is not None:
        used = len(window.requests) + taking
        headers["x-ratelimit-limit-requests"] = str(limits.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, limits.rpm - used))
        headers["x-ratelimit-reset-requests"] = _duration(window.requests[0] + WINDOW - now if window.requests
                                                          else WINDOW if taking else 0.0)
    if limits.tpm is not None:
        used_tokens = window.token_sum + (estimate if taking else 0.0)
        headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(limits.tpm - used_tokens)))
        headers["x-ratelimit-reset-tokens"] = _duration(window.tokens[0].at + WINDOW - now if window.tokens
                                                        else WINDOW if taking else 0.0)
    return headers
