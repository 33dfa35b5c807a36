"""What the pool learns about one provider at run time: health, circuits, slots, latency, counters.

A :class:`ProviderState` is kept apart from the provider's configuration so that a
reload can carry it over: the runtime keys states by provider name and hands the same
state to the new pool when that provider's configuration (its own section, its
resolved timeouts, the circuit breaker and monitoring settings) is unchanged. A
provider whose configuration changed starts with a fresh state. So reloading cannot
close an open circuit or forget a provider's latency.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any

from proxy_plugin.breaker import CLOSED, HALF_OPEN, Breaker
from proxy_plugin.clock import SYSTEM, Clock
from proxy_plugin.config import CircuitBreakerConfig, MonitoringConfig, ProviderConfig
from proxy_plugin.routing.signals import Signals

LATENCY_SAMPLES = 200
#: (provider, model) signals kept per provider; models come from clients, so the table is bounded
MAX_SIGNALS = 256


class ProviderState:
    """The mutable run-time state of one provider, shared by every pool that serves it."""

    def __init__(
        self, config: ProviderConfig, breakers: CircuitBreakerConfig, monitoring: MonitoringConfig | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.clock = clock
        #: whether active health checks run (set by the pool serving it): an auth failure then
        #: holds the circuit until a check passes, else it reopens for a probe like any other
        self.health_checks = True
        self.track_latency = monitoring.track_latency if monitoring else True
        self.track_errors = monitoring.track_errors if monitoring else True
        self.healthy = True
        self.last_error: str | None = None
        self.last_error_class: str | None = None
        self.last_failure = 0.0
        self.last_check: float | None = None
        self.check_failures = 0
        self.check_passes = 0
        self.models: tuple[str, ...] = ()
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.failovers = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.ewma: float | None = None
        #: the peak-EWMA's time constant (``routing.ewma_decay``, set by the pool serving it)
        self.ewma_decay = 10.0
        self._signals: dict[str, Signals] = {}
        #: what the circuits' jitter draws from (the pool's generator, so a seeded run repeats; None: fresh)
        self.rng: random.Random | None = None
        self._outstanding: dict[int, float] = {}  # attempt id -> start, oldest first
        self._next_attempt = 0
        self.max_concurrent = config.max_concurrent
        self.slot_wait = config.slot_wait
        self._breaker_config = breakers
        self._breakers: dict[str | None, Breaker] = {}
        limit = config.max_concurrent
        self._slots = asyncio.Semaphore(limit) if limit else None

    # -- circuits ------------------------------------------------------------------

    def breaker(self, model: str | None) -> Breaker:
        """The circuit for ``model`` on this provider (None: the provider as a whole)."""
        breaker = self._breakers.get(model)
        if breaker is None:
            c = self._breaker_config
            breaker = Breaker(
                consecutive_failures=c.consecutive_failures, failure_rate=c.failure_rate, window=c.window,
                min_requests=c.min_requests, open_base=c.open_base, open_max=c.open_max,
                max_probe_gap=c.max_probe_gap, clock=self.clock.monotonic, rng=self.rng,
            )
            self._breakers[model] = breaker
        return breaker

    def available(self, model: str) -> bool:
        """Healthy, and neither the provider's nor the model's circuit is open."""
        if not self.healthy:
            return False
        if not self._breaker_config.enabled:
            return True
        model_breaker = self._breakers.get(model)
        return self.breaker(None).available() and (model_breaker is None or model_breaker.available())

    def acquire_circuits(self, model: str) -> tuple[bool, bool] | None:
        """Take permission from both circuits (half-open allows one probe).

        Returns None when refused, else which circuits gave their one probe to this
        request, so that only this request can hand those probes back.
        """
        if not self._breaker_config.enabled:
            return (False, False)
        whole = self.breaker(None)
        if not whole.acquire():
            return None
        whole_probe = whole.state == HALF_OPEN
        per_model = self.breaker(model)
        if not per_model.acquire():
            if whole_probe:
                whole.release()
            return None
        return (whole_probe, per_model.state == HALF_OPEN)

    def release_circuits(self, model: str, probes: tuple[bool, bool]) -> None:
        """Hand back the probes this request took and did not settle (cancelled or unsent)."""
        whole_probe, model_probe = probes
        if whole_probe:
            self.breaker(None).release()
        if model_probe:
            self.breaker(model).release()

    # -- concurrency slots ---------------------------------------------------------

    async def acquire_slot(self) -> bool:
        """Take a concurrency slot, waiting up to ``slot_wait``; False when still full."""
        slots = self._slots
        if slots is None:
            return True
        if not slots.locked():
            await slots.acquire()
            return True
        try:
            async with asyncio.timeout(self.slot_wait):
                await slots.acquire()
        except TimeoutError:
            return False
        return True

    def release_slot(self) -> None:
        """Give back a concurrency slot."""
        if self._slots is not None:
            self._slots.release()

    def begin(self) -> int:
        """An attempt starts here: counted in flight, its start time kept (returns its id for :meth:`end`)."""
        self.in_flight += 1
        self._next_attempt += 1
        self._outstanding[self._next_attempt] = self.clock.monotonic()
        return self._next_attempt

    def end(self, attempt: int) -> None:
        """The attempt ``attempt`` is over."""
        self.in_flight -= 1
        self._outstanding.pop(attempt, None)

    def oldest_outstanding(self, now: float) -> float:
        """Seconds the oldest attempt in flight has waited (0: none): a latency sample in progress."""
        for started in self._outstanding.values():
            return now - started
        return 0.0

    @property
    def load(self) -> float:
        """Share of capacity in use (in-flight requests when unlimited)."""
        limit = self.max_concurrent
        return self.in_flight / limit if limit else float(self.in_flight)

    # -- outcomes ------------------------------------------------------------------

    def signals(self, model: str) -> Signals:
        """Latency and success signals for ``model`` (the provider's name for it) on this provider."""
        signals = self._signals.get(model)
        if signals is None:
            if len(self._signals) >= MAX_SIGNALS:
                del self._signals[next(iter(self._signals))]
            signals = self._signals[model] = Signals(self.ewma_decay)
        return signals

    def observe(self, model: str, ok: bool, seconds: float, penalty: bool) -> None:
        """One attempt for ``model`` ended after ``seconds`` (``penalty``: a failure that is the provider's fault)."""
        self.signals(model).observe(ok, seconds, self.clock.monotonic(), penalty)

    def record_success(self, model: str, latency: float) -> None:
        """A successful attempt: latency stats, circuits closed."""
        if self.track_latency:
            self.latencies.append(latency)
        self.ewma = latency if self.ewma is None else 0.8 * self.ewma + 0.2 * latency
        if self._breaker_config.enabled:
            self.breaker(None).success()
            self.breaker(model).success()

    def record_failure(
        self, model: str, error_class: str, detail: str, *, whole_provider: bool,
        open_for: float | None = None, until_health_check: bool = False,
        seconds: float | None = None, repeat: bool = False,
    ) -> None:
        """A failed attempt that is the provider's fault.

        ``until_health_check`` (an auth failure) holds the circuit open until a health
        check passes when checks run; without them it opens for ``open_max`` (within
        ``max_probe_gap``) and the next probe tells. ``seconds``: how long the attempt took
        (its weight in the failure rate, :meth:`failure_weight`); ``repeat``: the request
        already failed on this provider (a retry), which does not extend the run of
        consecutive failures.
        """
        self.last_failure = self.clock.monotonic()
        if self.track_errors:
            self.failures += 1
            self.last_error_class = error_class
            self.last_error = detail
        if not self._breaker_config.enabled:
            return
        if until_health_check and not self.health_checks:
            until_health_check = False
            open_for = self._breaker_config.open_max
        weight = self.failure_weight(model, seconds)
        if whole_provider:
            self.breaker(None).failure(open_for=open_for, until_health_check=until_health_check,
                                       weight=weight, repeat=repeat)
            if open_for is not None and not until_health_check:
                self.breaker(model).failure(open_for=open_for, weight=weight, repeat=repeat)
        else:
            self.breaker(model).failure(open_for=open_for, until_health_check=until_health_check,
                                        weight=weight, repeat=repeat)

    def failure_weight(self, model: str, seconds: float | None) -> float:
        """How much of a failure an attempt that failed after ``seconds`` counts as in the failure rate.

        With ``circuit_breaker.time_weighted`` (the default), the time it wasted against
        the time the provider's answers for ``model`` take (the mean over the routing
        signals' slow window, as the dispatch loop measures both: to the answer, or to a
        stream's first event), at most 1: a quick 503 that fails over at once costs the
        caller little, a timeout or a slow error as much as an answer. Without answers to
        compare with, or without the time, a failure counts 1, as it always does when
        ``time_weighted`` is off.
        """
        if seconds is None or not self._breaker_config.time_weighted:
            return 1.0
        typical = self.signals(model).success.answer_seconds(self.clock.monotonic())
        if typical is None:
            return 1.0
        return min(1.0, max(0.0, seconds) / typical)

    def health_check_passed(self) -> None:
        """Active check passed: auth-held circuits close, and every open circuit (per model too) may probe now.

        A passing ``/models`` does not prove a model answers, so a per-model circuit is not
        closed outright: the next request for it is its probe.
        """
        for breaker in self._breakers.values():
            breaker.health_check_passed()
            breaker.probe_now()

    def circuits_open(self) -> int:
        """How many of this provider's circuits (the whole provider's, each model's) are not closed."""
        return sum(breaker.snapshot()["state"] != CLOSED for breaker in self._breakers.values())

    def why_unavailable(self, model: str) -> str | None:
        """Why a request for ``model`` would skip this provider now (None: it would not), for error messages."""
        if not self.healthy:
            return "unhealthy (failing health checks)"
        if not self._breaker_config.enabled:
            return None
        waits = []
        for breaker in (self._breakers.get(None), self._breakers.get(model)):
            if breaker is not None and not breaker.available():
                waits.append(breaker.reopens_in())
        if not waits:
            return None
        if None in waits:
            return "circuit open until a health check passes"
        wait = max(w for w in waits if w is not None)
        if wait <= 0:
            return "circuit half-open (a probe is in flight)"
        return f"circuit open until {wait:.1f}s from now"

    def snapshot(self) -> dict[str, Any]:
        """The run-time part of ``/health``'s view of this provider (JSON-able, secret-free)."""
        lat = sorted(self.latencies)
        return {
            "healthy": self.healthy,
            "available": self.healthy and (not self._breaker_config.enabled or self.breaker(None).available()),
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "failovers": self.failovers,
            "last_error_class": self.last_error_class,
            "last_error": self.last_error,
            "latency_ms": {
                "p50": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
                "p95": round(lat[min(len(lat) - 1, int(len(lat) * 0.95))] * 1000, 1) if lat else None,
                "samples": len(lat),
            },
            "circuits": {("*" if k is None else k): b.snapshot() for k, b in self._breakers.items()},
        }
