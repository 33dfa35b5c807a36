"""The one dispatch loop: admission, candidates, attempts, retries and the final error, for every request.

A request is an :class:`Exchange`, buffered (a JSON answer, :mod:`proxy_plugin.buffered`)
or streamed (SSE relayed event by event, :mod:`proxy_plugin.streaming`). The loop
below is the same for both, and the only place that walks providers: each attempt
returns an :class:`~proxy_plugin.attempts.Outcome`, and the loop decides what follows
(hand the answer back, relay the stream, return the caller's error, retry on the same
provider, fail over, give up). Whatever must apply to every upstream attempt (limits,
budgets, metrics) hooks in here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Protocol

from proxy_plugin.attempts import Attempts, Outcome
from proxy_plugin.classify import Failure
from proxy_plugin.errors import ProxyError
from proxy_plugin.provider import Provider

if TYPE_CHECKING:
    from proxy_plugin.pool import Pool

logger = logging.getLogger(__name__)

#: What :meth:`Exchange.refused` returns to try the same provider again / move on to the next one.
RETRY = "retry"
NEXT = "next"


class Observer(Protocol):
    """Who hears about every upstream attempt of a request (the request gate's ticket)."""

    wants_usage: bool  # ask streams for their usage (``stream_options.include_usage``) even if the client did not

    def attempting(self) -> None:
        """An upstream attempt starts."""

    def answering(self, provider: str, model: str) -> None:
        """This provider answers (a whole answer, or a stream whose first event is in), before the client sees it."""

    def attempted(self, provider: str, model: str, outcome: Outcome, seconds: float) -> None:
        """One upstream attempt ended (``outcome.ok``: it answered), after ``seconds``."""

    def record(self, provider: str, model: str, usage: dict[str, Any]) -> None:
        """An answer's token usage, as the provider reported it."""

    def refused(self, reason: str) -> None:
        """The pool refused the request before any attempt (``budget``: budget pacing shed it)."""


class Exchange(Protocol):
    """How one request talks to a provider; the dispatch loop decides which provider and when."""

    model: str
    observer: Observer | None

    @property
    def body(self) -> dict[str, Any] | None:
        """The request as the client sent it (None: not known, as in the simulator)."""

    def start(self, provider: Provider) -> None:
        """A new provider is about to be tried."""

    def may_try(self) -> bool:
        """Whether another attempt can still help (a stream that cannot be continued: no)."""

    async def attempt(self, provider: Provider, mapped: str, run: Attempts) -> Outcome:
        """One upstream attempt up to the point of no return.

        ``ok`` with an ``answer``: the whole answer (buffered). ``ok`` without: a
        stream is open and :meth:`relay` delivers it. Otherwise a failure.
        """

    def relay(self, provider: Provider, mapped: str) -> AsyncGenerator[Any, None]:
        """Deliver an open stream; afterwards ``broke`` is None (complete) or the failure."""

    broke: Outcome | None

    def refused(self, outcome: Outcome, provider: Provider) -> Any:
        """The provider says the request is the caller's fault: an answer to return, ``RETRY`` or ``NEXT``.

        May raise the error the client gets.
        """

    def failed(self, outcome: Outcome) -> None:
        """An attempt failed through the provider (already recorded against it)."""

    def exhausted(self, run: Attempts) -> Exception:
        """The error for a request no provider could answer."""

    def close(self) -> None:
        """Release whatever an attempt left open (idempotent)."""


async def dispatch(pool: Pool, exchange: Exchange) -> AsyncGenerator[Any, None]:
    """Serve ``exchange`` from ``pool``: yields the answer (buffered) or the SSE parts (streamed).

    Raises the error the client should see when no provider can answer.
    """
    tries = pool.config.retries.attempts_per_provider
    observer = exchange.observer
    clock = pool.clock.monotonic
    async with pool.admission():
        try:
            run = pool.attempts(exchange.model, exchange.body)
        except ProxyError as exc:
            if observer is not None and exc.reason is not None:
                observer.refused(exc.reason)
            raise
        try:
            # closed here, not by the garbage collector: the provider's slot is back before the answer leaves
            async with contextlib.aclosing(run.candidates()) as candidates:
                async for provider, mapped in candidates:
                    exchange.start(provider)
                    attempt = 0
                    while attempt < tries and exchange.may_try():
                        if observer is not None:
                            observer.attempting()
                            began = time.perf_counter()
                        started = clock()
                        outcome = await exchange.attempt(provider, mapped, run)
                        seconds = clock() - started  # to the answer, or a stream's first event
                        if outcome.ok and observer is not None:
                            observer.answering(provider.name, mapped)
                        if outcome.ok and outcome.answer is None:  # a stream is open: relay it
                            async with contextlib.aclosing(exchange.relay(provider, mapped)) as parts:
                                async for part in parts:
                                    yield part
                            outcome = exchange.broke or outcome
                        pool.observe(provider, mapped, outcome, seconds)  # routing signals, learning strategies
                        if observer is not None:
                            observer.attempted(provider.name, mapped, outcome, time.perf_counter() - began)
                        if logger.isEnabledFor(logging.DEBUG):
                            _log_attempt(provider.name, mapped, outcome, time.perf_counter() - began)
                        if outcome.ok:
                            if outcome.answer is not None:
                                yield outcome.answer
                            return
                        if outcome.failure is Failure.CALLER:
                            step = exchange.refused(outcome, provider)
                            if step is NEXT:
                                break
                            if step is not RETRY:
                                yield step
                                return
                            attempt += 1
                            continue
                        run.record(provider, mapped, outcome, clock() - started)  # to the failure, a break included
                        exchange.failed(outcome)
                        if not await run.retry_same(outcome, attempt, provider, mapped):
                            break
                        attempt += 1
        finally:
            exchange.close()
            pool.finish(run)
        raise exchange.exhausted(run)


def _log_attempt(provider: str, model: str, outcome: Outcome, seconds: float) -> None:
    """DEBUG: who answered and how long it took (or how the attempt failed), beside the routing plan."""
    took = f" in {seconds * 1000:.1f} ms"
    if outcome.ok:
        logger.debug("answered model=%s provider=%s%s", model, provider, took)
    else:
        failure = outcome.failure.value if outcome.failure is not None else "-"
        logger.debug("attempt failed model=%s provider=%s class=%s (%s)%s", model, provider, failure, outcome.detail, took)
