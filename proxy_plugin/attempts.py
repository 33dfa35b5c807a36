"""One request's walk through the providers: candidates, retries, backoff, the final error."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import orjson

from proxy_plugin.classify import (
    Failure,
    classify_exception,
    classify_status,
    connection_level,
    describe_exception,
    error_code,
    retry_after,
)
from proxy_plugin.config import RetryConfig
from proxy_plugin.errors import ProxyError
from proxy_plugin.provider import Provider
from proxy_plugin.redact import Redactor

logger = logging.getLogger(__name__)

BUDGET_WINDOW = 10.0
MAX_ERROR_BODY = 64 * 1024


@dataclasses.dataclass(slots=True)
class Outcome:
    """What one attempt came to."""

    failure: Failure | None = None
    status: int | None = None
    detail: str = ""
    body: bytes = b""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    retry_after: float | None = None
    connection_level: bool = False
    ok: bool = False        # the attempt succeeded (the other fields describe failures)
    answer: Any = None      # a buffered attempt's whole answer
    timeout: bool = False   # the provider held the request until a timeout expired: never retried on it

    @classmethod
    def of_status(cls, status: int, body: bytes, headers: Mapping[str, str], redact: Redactor | None = None) -> Outcome:
        """The outcome of an upstream HTTP error response (``redact``: scrub provider secrets from the body first)."""
        if redact is not None:
            body = redact.bytes(body[:MAX_ERROR_BODY])
        code = error_code(body)
        detail = f"{status}" + (f" ({code})" if code else "")
        return cls(classify_status(status, body), status, detail, body[:MAX_ERROR_BODY], dict(headers),
                   retry_after(headers))

    @classmethod
    def of_exception(cls, exc: BaseException, *, timeout: str = "timeout", whole_provider: bool = True) -> Outcome | None:
        """The outcome of a transport failure (None: not one; the caller re-raises).

        ``timeout`` names what a timeout means at that point; ``whole_provider`` says
        whether a connection-level failure counts against the provider as a whole.
        """
        failure = classify_exception(exc)
        if failure is None:
            return None
        timed_out = isinstance(exc, TimeoutError)
        what = timeout if timed_out else describe_exception(exc)
        return cls(failure, None, what, connection_level=whole_provider and connection_level(exc), timeout=timed_out)


class RetryBudget:
    """Retries allowed as a share of recent requests, so an outage cannot become a retry storm.

    Over the last :data:`BUDGET_WINDOW` seconds, at most ``max(minimum, ratio x requests)``
    retries on the same provider (failing over to another is not one). Finagle's and
    Linkerd's budgets are ``ratio`` 0.2 on top of a floor of 10 retries a second; the
    default ``retries.budget_min`` (100 a window) is that floor.
    """

    def __init__(self, ratio: float, minimum: int, clock=time.monotonic) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()
        self._clock = clock

    def _trim(self, now: float) -> None:
        horizon = now - BUDGET_WINDOW
        for q in (self._requests, self._retries):
            while q and q[0] < horizon:
                q.popleft()

    def request(self) -> None:
        """Count one new request (and forget those older than the window)."""
        now = self._clock()
        self._requests.append(now)
        if self._requests[0] < now - BUDGET_WINDOW:
            self._trim(now)

    def try_spend(self) -> bool:
        """Take one retry from the budget if there is room."""
        now = self._clock()
        self._trim(now)
        if len(self._retries) >= max(self.minimum, self.ratio * len(self._requests)):
            return False
        self._retries.append(now)
        return True


class Attempts:
    """Drives one request: yields providers to try and decides on retries."""

    def __init__(
        self, plan: Sequence[Provider], model: str, retries: RetryConfig, budget: RetryBudget,
        deadline: float | None, rng: random.Random, providers: Sequence[Provider] = (),
    ) -> None:
        """``providers``: every provider of the pool, so the final error can name those the plan left out."""
        self.plan = plan
        self.providers = providers
        self.model = model
        self.retries = retries
        self.budget = budget
        self.deadline = deadline
        self.rng = rng
        self.errors: list[tuple[str, str]] = []
        self.sent = 0
        self.rate_limited: list[float | None] = []
        self.skip_models: set[str] = set()
        self.context_length: list[Outcome] = []
        self.last_provider: Provider | None = None
        self.failed_on: set[int] = set()  # indexes of the providers this request failed on (for ``repeat``)
        self.hold = 0.0  # USD the budget pacer holds for this request (the pool gives it back at the end)

    def remaining(self) -> float | None:
        """Seconds left before the request's deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    async def candidates(self) -> AsyncGenerator[tuple[Provider, str], None]:
        """Yield (provider, mapped model) holding the provider's slot and circuit permission."""
        for provider in self.plan:
            left = self.remaining()
            if left is not None and left <= 0:
                self.errors.append((provider.name, "not tried: request deadline reached"))
                continue
            mapped = provider.map_model(self.model)
            if mapped in self.skip_models:
                continue
            state = provider.state
            probes = state.acquire_circuits(mapped)
            if probes is None:
                self.errors.append((provider.name, "skipped, " + (state.why_unavailable(mapped) or "circuit open")))
                continue
            if not await state.acquire_slot():
                state.release_circuits(mapped, probes)
                self.errors.append((provider.name, f"at capacity ({provider.config.max_concurrent} in flight)"))
                continue
            if self.last_provider is not None and self.last_provider is not provider:
                self.last_provider.state.failovers += 1
            self.last_provider = provider
            began = state.begin()
            state.requests += 1
            try:
                yield provider, mapped
            finally:
                state.end(began)
                state.release_slot()
                state.release_circuits(mapped, probes)

    def record(self, provider: Provider, mapped: str, outcome: Outcome, seconds: float | None = None) -> None:
        """Note a failed attempt and charge it to the provider when it is the provider's fault.

        ``seconds``: how long the attempt took (what the failure costs in the breaker's failure
        rate); a second failure of this request on the same provider is a ``repeat`` there.
        """
        self.sent += 1
        detail = outcome.detail + provider.hint_404 if outcome.status == 404 else outcome.detail
        self.errors.append((provider.name, detail))
        failure = outcome.failure
        if failure is Failure.CONTEXT_LENGTH:
            self.skip_models.add(mapped)
            self.context_length.append(outcome)
            return
        if failure is None or not failure.counts_against_provider:
            return
        if outcome.status == 429:
            self.rate_limited.append(outcome.retry_after)
        auth = outcome.status in (401, 403)
        repeat = provider.index in self.failed_on
        self.failed_on.add(provider.index)
        provider.state.record_failure(
            mapped, failure.value, detail,
            whole_provider=outcome.connection_level or auth,
            open_for=outcome.retry_after if outcome.status == 429 and outcome.retry_after else None,
            until_health_check=auth, seconds=seconds, repeat=repeat,
        )
        logger.info("provider %s failed for model %s: %s", provider.name, mapped, detail)

    async def retry_same(self, outcome: Outcome, attempt: int, provider: Provider, mapped: str) -> bool:
        """Wait before retrying on the same provider; False means move on to the next one.

        Only quick failures are retried there (a 500, a reset, a short Retry-After): a
        provider that held the request until a timeout would double the wait.
        """
        if outcome.failure is not Failure.TRANSIENT or attempt + 1 >= self.retries.attempts_per_provider:
            return False
        if outcome.timeout:
            return False
        if outcome.retry_after is None and not provider.available(mapped):
            return False  # that failure opened its circuit: retrying would defeat it
        # (a short Retry-After opens the circuit for just the wait we are about to sit out)
        wait = outcome.retry_after
        if wait is not None:
            if wait > self.retries.retry_after_max:
                return False
        else:
            cap = min(self.retries.backoff_max, self.retries.backoff_base * (2 ** attempt))
            wait = self.rng.uniform(0, cap)
        left = self.remaining()
        if left is not None and wait >= left:
            return False
        if not self.budget.try_spend():
            logger.info("retry budget spent; failing over instead of retrying")
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return True

    def summary(self) -> str:
        """What happened at each provider: one ``name: what`` entry per provider, ``; ``-separated.

        Providers come in the order tried, then those the plan skipped (circuit open,
        unhealthy; the time is in seconds from now). Repeated attempts with the same
        result are counted: ``a: 500 (server_error) x2``; different ones are listed in
        order: ``a: timeout, 500 (server_error)``.
        """
        entries: dict[str, list[list[Any]]] = {}  # name -> [[what, times], ...] in order
        for name, what in self.errors:
            runs = entries.setdefault(name, [])
            if runs and runs[-1][0] == what:
                runs[-1][1] += 1
            else:
                runs.append([what, 1])
        planned = {id(p) for p in self.plan}
        for provider in self.providers:
            if id(provider) in planned or provider.name in entries:
                continue
            why = provider.state.why_unavailable(provider.map_model(self.model))
            entries[provider.name] = [["skipped, " + (why or "not available"), 1]]
        return "; ".join(
            f"{name}: " + ", ".join(what if times == 1 else f"{what} x{times}" for what, times in runs)
            for name, runs in entries.items()
        )

    def exhausted(self) -> ProxyError:
        """The error for a request that no provider could answer."""
        tried = self.summary() or "no provider is configured for it"
        headers: dict[str, str] = {}
        if self.sent and len(self.context_length) == self.sent:
            # no provider had a larger model: the prompt is too long, which is the caller's error
            last = self.context_length[-1]
            try:
                body = orjson.loads(last.body)
            except orjson.JSONDecodeError:
                body = None
            return ProxyError(last.status or 400, f"the prompt is too long for every model tried ({tried})",
                              "invalid_request_error", "context_length_exceeded",
                              body=body if isinstance(body, dict) else None)
        if self.sent and len(self.rate_limited) == self.sent:
            waits = [w for w in self.rate_limited if w is not None]
            if waits:
                headers["Retry-After"] = str(max(1, round(min(waits))))
            return ProxyError(429, f"every provider is rate limiting this request ({tried})", "rate_limit_error",
                              "all_providers_rate_limited", headers)
        if not self.sent:
            headers["Retry-After"] = "1"
            return ProxyError(503, f"no provider could take this request ({tried})", "server_error",
                              "no_provider_available", headers)
        return ProxyError(502, f"all providers failed for model {self.model!r} ({tried})", "upstream_error",
                          "all_providers_failed")
