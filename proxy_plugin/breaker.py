"""Circuit breakers: closed, open, half-open, kept per provider and per upstream model.

A closed circuit opens on either of two rules:

- **consecutive failures**: ``consecutive_failures`` requests in a row failed on it. A
  request's retries on the same provider (``repeat``) count in the failure rate but do
  not extend the run: they are the same request failing again, not more evidence that the
  provider is down, so the rule means the same whatever ``retries.attempts_per_provider``
  is and whether the retry budget had room;
- **failure rate**: over the last ``window`` seconds (at least ``min_requests`` outcomes),
  failures make up ``failure_rate`` of the outcomes, each failure counting as its
  ``weight`` (0 to 1; the provider state passes the time it took against the provider's
  typical answer, so a 503 in 0.15 s against answers of 1.5 s counts 0.1, a timeout 1:
  see :meth:`~proxy_plugin.provider_state.ProviderState.record_failure`).

An open circuit waits before letting one probe through: ``open_base`` doubled on each
reopening without a success, capped at ``open_max`` and jittered, and never longer than
``max_probe_gap`` (whatever opened it: failures, a ``Retry-After``, an auth failure without
health checks), so a provider that recovers gets its traffic back within about
``max_probe_gap`` of recovering however long it was down. A dead provider still sees at
most one request per gap, and that one fails over. Only a circuit held for a health
check (an auth failure while health checks run) waits for the check instead.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
FOREVER = float("inf")


class Breaker:
    """One circuit: opens on consecutive failed requests or a (weighted) failure rate, probes, closes on success."""

    __slots__ = (
        "_clock",
        "_events",
        "_rng",
        "consecutive",
        "consecutive_limit",
        "failure_rate",
        "last_failure",
        "max_probe_gap",
        "min_requests",
        "open_base",
        "open_max",
        "open_until",
        "opened",
        "openings",
        "probing",
        "state",
        "until_health_check",
        "window",
    )

    def __init__(
        self,
        *,
        consecutive_failures: int = 5,
        failure_rate: float = 0.5,
        window: float = 30.0,
        min_requests: int = 10,
        open_base: float = 5.0,
        open_max: float = 60.0,
        max_probe_gap: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.consecutive_limit = consecutive_failures
        self.failure_rate = failure_rate
        self.window = window
        self.min_requests = min_requests
        self.open_base = open_base
        self.open_max = open_max
        self.max_probe_gap = max_probe_gap
        self.state = CLOSED
        self.consecutive = 0
        self.openings = 0         # since it last closed (the backoff's exponent)
        self.opened = 0           # times it opened, in all (for /health)
        self.open_until = 0.0
        self.probing = False
        self.last_failure = 0.0
        self.until_health_check = False
        self._events: deque[list[float]] = deque()  # [second, outcomes, failures (weighted)]
        self._clock = clock
        self._rng = rng or random.Random()

    def _current(self) -> str:
        if self.state == OPEN and not self.until_health_check and self._clock() >= self.open_until:
            self.state = HALF_OPEN
            self.probing = False
        return self.state

    def available(self) -> bool:
        """Whether a request may be sent now (without taking the half-open probe)."""
        state = self._current()
        return state == CLOSED or (state == HALF_OPEN and not self.probing)

    def acquire(self) -> bool:
        """Take permission to send one request; in half-open only one probe at a time."""
        state = self._current()
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def release(self) -> None:
        """Give back a probe permission that was not used (no request was sent)."""
        if self.state == HALF_OPEN:
            self.probing = False

    def success(self) -> None:
        """Record a success: a half-open probe closes the circuit."""
        now = self._clock()
        self.consecutive = 0
        self._record(now, 0.0)
        if self.state != CLOSED:
            self._close()

    def failure(self, *, open_for: float | None = None, until_health_check: bool = False,
                weight: float = 1.0, repeat: bool = False) -> None:
        """Record a failure; open when the limits say so (or at once with ``open_for``).

        ``weight`` (0 to 1): how much of a failure it counts as in the failure rate;
        ``repeat``: the request already failed here (a retry on the same provider), so it
        does not extend the run of consecutive failures.
        """
        now = self._clock()
        if not repeat:
            self.consecutive += 1
        self.last_failure = now
        self._record(now, min(1.0, max(0.0, weight)))
        if until_health_check:
            self._open(now, FOREVER, until_health_check=True)
        elif open_for is not None:
            if self._current() != OPEN or now + open_for > self.open_until:
                self._open(now, open_for)
        elif self._current() == OPEN:
            pass  # a request that was in flight when the circuit opened: no longer open time
        elif self.state == HALF_OPEN or self._tripped():
            self._open(now, None)

    def health_check_passed(self) -> None:
        """A passing health check closes a circuit held open for an auth failure."""
        if self.until_health_check:
            self._close()

    def probe_now(self) -> None:
        """Let the next request probe an open circuit at once (the provider answered a health check)."""
        if self.state == OPEN and not self.until_health_check:
            self.open_until = min(self.open_until, self._clock())

    def force_open(self, duration: float) -> None:
        """Open for ``duration`` seconds because another replica's circuit opened (``state/circuits.py``)."""
        if self._current() == CLOSED:
            now = self._clock()
            self._open(now, duration)
            self.open_until = now + duration  # not capped: the replica that opened it probes first

    def force_close(self) -> None:
        """Close because the replica that opened it saw its probe succeed."""
        if self.state != CLOSED and not self.until_health_check:
            self._close()

    def reopens_in(self) -> float | None:
        """Seconds until an open circuit lets a probe through (0: it may now; None: when a health check passes)."""
        if self._current() != OPEN:
            return 0.0
        if self.until_health_check:
            return None
        return max(0.0, self.open_until - self._clock())

    def _tripped(self) -> bool:
        if self.consecutive >= self.consecutive_limit:
            return True
        total = failures = 0.0
        for _second, count, failed in self._events:
            total += count
            failures += failed
        if total < self.min_requests:
            return False
        return failures / total >= self.failure_rate

    def _record(self, now: float, failed: float) -> None:
        """Count an outcome (``failed``: 0 for a success, else the failure's weight) in per-second
        buckets: constant memory and cost whatever the rate."""
        events = self._events
        second = int(now)
        if events and events[-1][0] == second:
            bucket = events[-1]
            bucket[1] += 1
            bucket[2] += failed
        else:
            events.append([second, 1, failed])
            horizon = now - self.window
            while events and events[0][0] + 1 <= horizon:
                events.popleft()

    def _open(self, now: float, duration: float | None, *, until_health_check: bool = False) -> None:
        if self.state != OPEN:  # not an open circuit held open longer
            self.opened += 1
        self.openings += 1
        if duration is None:
            base = min(self.open_max, self.open_base * (2 ** (self.openings - 1)))
            duration = base * self._rng.uniform(0.8, 1.2)
        if duration != FOREVER:
            duration = min(duration, self.max_probe_gap)  # however long the outage, probe at least this often
        self.state = OPEN
        self.probing = False
        self.until_health_check = until_health_check
        self.open_until = now + duration

    def _close(self) -> None:
        self.state = CLOSED
        self.consecutive = 0
        self.openings = 0
        self.probing = False
        self.until_health_check = False
        self._events.clear()

    def snapshot(self) -> dict[str, object]:
        """A JSON-able view for ``/health``."""
        state = self._current()
        view: dict[str, object] = {"state": state, "consecutive_failures": self.consecutive, "opened": self.opened}
        if state == OPEN:
            view["reopens_in"] = None if self.until_health_check else round(max(0.0, self.open_until - self._clock()), 3)
            view["until_health_check"] = self.until_health_check
        return view
