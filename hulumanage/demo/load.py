"""The demo's client side: requests through the host with the openai SDK, and a progress line."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TextIO

import openai
from openai.types.chat import ChatCompletionMessageParam

#: Seconds between two redraws of the progress line on a terminal.
REDRAW_EVERY = 0.1
#: Progress lines printed when stderr is not a terminal: at these fractions of the run.
PLAIN_MARKS = (0.25, 0.5, 0.75, 1.0)
BAR_WIDTH = 24
#: The longest a request holds the next one back while it is on its way to a provider (s).
PACE_TIMEOUT = 2.0


class Progress:
    """A one-line progress display: redrawn with ``\\r`` on a terminal, a few plain lines otherwise."""

    def __init__(self, total: int, out: TextIO | None = None, tty: bool | None = None) -> None:
        """Show progress of ``total`` requests on ``out`` (default stderr)."""
        self.total = total
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.done = 0
        self.failed = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._marks = [m for m in PLAIN_MARKS]

    def line(self) -> str:
        """The progress text, e.g. ``[######------]  150/300 requests  0 failed  2.1 s``."""
        filled = round(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        elapsed = time.monotonic() - self._started
        width = len(str(self.total))
        return f"[{bar}] {self.done:>{width}}/{self.total} requests  {self.failed} failed  {elapsed:.1f} s"

    def advance(self, ok: bool) -> None:
        """Count one finished request and redraw when it is time."""
        self.done += 1
        self.failed += not ok
        if self.tty:
            now = time.monotonic()
            if now - self._drawn >= REDRAW_EVERY or self.done == self.total:
                self._drawn = now
                self.out.write("\r" + self.line())
                self.out.flush()
            return
        while self._marks and self.done >= self._marks[0] * self.total:
            self._marks.pop(0)
            self.out.write(self.line() + "\n")
            self.out.flush()

    def close(self) -> None:
        """End the progress line."""
        if self.tty:
            self.out.write("\r" + self.line() + "\n")
            self.out.flush()


@dataclasses.dataclass(slots=True)
class LoadResult:
    """What the client saw: latencies of answered requests and the errors of the others."""

    sent: int = 0
    streamed: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def succeeded(self) -> int:
        """Requests answered with a complete, non-empty answer."""
        return len(self.latencies)

    @property
    def success_rate(self) -> float:
        """Share of requests answered (1.0 when none were sent)."""
        return self.succeeded / self.sent if self.sent else 1.0


def describe_error(exc: openai.APIError) -> str:
    """A short, secret-free name for a client-side failure, e.g. ``502 all_providers_failed``."""
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "code", None)
    if status is not None:
        return f"{status} {code}" if code else str(status)
    return type(exc).__name__


async def _one(client: openai.AsyncOpenAI, model: str, index: int, stream: bool) -> str:
    """Send request ``index`` and return the answer text (streamed answers are assembled)."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": f"Demo request {index}: say something short."}]
    if not stream:
        completion = await client.chat.completions.create(model=model, messages=messages)
        return completion.choices[0].message.content or ""
    parts: list[str] = []
    response = await client.chat.completions.create(model=model, messages=messages, stream=True)
    async with response:
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


async def send_requests(
    client: openai.AsyncOpenAI,
    model: str,
    total: int,
    concurrency: int,
    rng: random.Random,
    progress: Progress,
    reached: Callable[[int], Awaitable[object]] | None = None,
) -> LoadResult:
    """Send ``total`` requests, about half of them streaming, ``concurrency`` at a time.

    ``reached(index)``, when given, completes once request ``index`` has reached a provider:
    each request is then sent only after the one before it got there, so the proxy routes them
    in index order (its seeded draws meet the same requests on every run) while ``concurrency``
    are still in flight.
    """
    plan = [rng.random() < 0.5 for _ in range(total)]
    result = LoadResult(sent=total, streamed=sum(plan))
    queue = iter(enumerate(plan))
    started = time.monotonic()
    in_order = asyncio.Lock()

    async def send(index: int, stream: bool) -> str:
        """Send request ``index``; with ``reached``, hold the next one back until this one is at a provider."""
        if reached is None:
            return await _one(client, model, index, stream)
        async with in_order:
            sent = asyncio.ensure_future(_one(client, model, index, stream))
            there = asyncio.ensure_future(reached(index))
            await asyncio.wait({sent, there}, timeout=PACE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            there.cancel()
        return await sent

    async def worker() -> None:
        for index, stream in queue:
            t0 = time.monotonic()
            try:
                text = await send(index, stream)
            except openai.APIError as exc:
                result.errors[describe_error(exc)] += 1
                progress.advance(ok=False)
                continue
            if text:
                result.latencies.append(time.monotonic() - t0)
            else:
                result.errors["empty answer"] += 1
            progress.advance(ok=bool(text))

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, total)))))
    progress.close()
    result.seconds = time.monotonic() - started
    return result
