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
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, Protocol

from proxy_plugin.attempts import Attempts, Outcome
from proxy_plugin.classify import Failure
from proxy_plugin.provider import Provider

if TYPE_CHECKING:
    from proxy_plugin.pool import Pool

#: What :meth:`Exchange.refused` returns to try the same provider again / move on to the next one.
RETRY = "retry"
NEXT = "next"


class Exchange(Protocol):
    """How one request talks to a provider; the dispatch loop decides which provider and when."""

    model: str

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
    async with pool.admission():
        run = pool.attempts(exchange.model)
        try:
            # closed here, not by the garbage collector: the provider's slot is back before the answer leaves
            async with contextlib.aclosing(run.candidates()) as candidates:
                async for provider, mapped in candidates:
                    exchange.start(provider)
                    attempt = 0
                    while attempt < tries and exchange.may_try():
                        outcome = await exchange.attempt(provider, mapped, run)
                        if outcome.ok:
                            if outcome.answer is not None:
                                yield outcome.answer
                                return
                            async with contextlib.aclosing(exchange.relay(provider, mapped)) as parts:
                                async for part in parts:
                                    yield part
                            broke = exchange.broke
                            if broke is None:
                                return
                            outcome = broke
                        if outcome.failure is Failure.CALLER:
                            step = exchange.refused(outcome, provider)
                            if step is NEXT:
                                break
                            if step is not RETRY:
                                yield step
                                return
                            attempt += 1
                            continue
                        run.record(provider, mapped, outcome)
                        exchange.failed(outcome)
                        if not await run.retry_same(outcome, attempt, provider, mapped):
                            break
                        attempt += 1
        finally:
            exchange.close()
        raise exchange.exhausted(run)
