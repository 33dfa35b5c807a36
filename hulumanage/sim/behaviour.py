"""What a simulated provider does with one chat request: behaviours and random profiles.

A :class:`Behaviour` is a small frozen value; build one with the factory functions
(:func:`ok`, :func:`error`, :func:`reset`, :func:`hang`, ...) rather than by hand.
A :class:`Profile` draws a behaviour per request from a seeded ``random.Random``
(used by the demo and by benchmarks).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping

__all__ = [
    "FAST_CHEAP",
    "FLAKY",
    "KINDS",
    "PROFILE_HANG_CAP",
    "SLOW_RELIABLE",
    "Behaviour",
    "Profile",
    "content_filter",
    "context_length",
    "cut",
    "down",
    "error",
    "hang",
    "malformed",
    "no_done",
    "ok",
    "rate_limited",
    "reset",
    "server_error",
    "slow_first_token",
    "stall",
]

#: Every behaviour kind; ``Behaviour.name`` is one of these.
KINDS = frozenset({"ok", "error", "reset", "hang", "slow_first_token", "cut", "stall", "malformed", "no_done", "down"})

#: How long a hang drawn from a :class:`Profile` lasts at most, in seconds.
PROFILE_HANG_CAP = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class Behaviour:
    """How a provider answers one chat request.

    ``name`` is the kind (see :data:`KINDS`) and is what ``Seen.behaviour`` records.
    The other fields are read only by the kinds they concern:

    - ``latency``: delay before the response starts (every kind that answers);
    - ``content``: the answer text instead of the provider's ``answer``;
    - ``chunk_gap``: delay between streamed chunks;
    - ``status``/``code``/``message``/``error_type``/``retry_after``/``headers``: ``error``;
    - ``seconds``: cap of a ``hang`` (None = until released), first-token delay of
      ``slow_first_token``, duration of ``down``;
    - ``chunks``: content chunks sent before ``cut``/``stall``; event index of ``malformed``.
    """

    name: str = "ok"
    latency: float = 0.0
    content: str | None = None
    chunk_gap: float = 0.0
    status: int = 200
    code: str | None = None
    message: str | None = None
    error_type: str | None = None
    retry_after: float | str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float | None = None
    chunks: int = 0

    def __post_init__(self) -> None:
        """Reject unknown kinds and negative numbers early, where the test builds them."""
        if self.name not in KINDS:
            raise ValueError(f"unknown behaviour {self.name!r}; known: {', '.join(sorted(KINDS))}")
        if self.latency < 0 or self.chunk_gap < 0 or self.chunks < 0:
            raise ValueError("latency, chunk_gap and chunks must not be negative")
        if self.seconds is not None and self.seconds < 0:
            raise ValueError("seconds must not be negative")


def ok(latency: float = 0.0, content: str | None = None, chunk_gap: float = 0.0) -> Behaviour:
    """A normal answer after ``latency`` seconds, streamed chunks ``chunk_gap`` apart."""
    return Behaviour("ok", latency=latency, content=content, chunk_gap=chunk_gap)


def error(
    status: int,
    code: str | None = None,
    message: str | None = None,
    type: str | None = None,
    retry_after: float | str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Behaviour:
    """An OpenAI-shaped error ``{"error": {"message", "type", "param", "code"}}`` with ``status``.

    ``retry_after`` (seconds, or an HTTP-date string) is sent as ``Retry-After``;
    ``headers`` are added to the response as they are.
    """
    if not 400 <= status <= 599:
        raise ValueError(f"an error status must be 4xx or 5xx, got {status}")
    return Behaviour(
        "error",
        status=status,
        code=code,
        message=message,
        error_type=type,
        retry_after=retry_after,
        headers=tuple((headers or {}).items()),
    )


def rate_limited(retry_after: float | str | None = None) -> Behaviour:
    """429 ``rate_limit_exceeded``, optionally with ``Retry-After``."""
    return error(
        429,
        code="rate_limit_exceeded",
        message="Rate limit reached (simulated).",
        type="requests",
        retry_after=retry_after,
    )


def server_error(status: int = 500) -> Behaviour:
    """A 5xx ``server_error``."""
    return error(status, message=f"The server had an error (simulated {status}).", type="server_error")


def context_length() -> Behaviour:
    """400 ``context_length_exceeded`` (a client error: must not be failed over)."""
    return error(
        400,
        code="context_length_exceeded",
        message="This model's maximum context length is 8192 tokens (simulated).",
        type="invalid_request_error",
    )


def content_filter() -> Behaviour:
    """400 ``content_filter`` as Azure OpenAI answers it."""
    return error(
        400,
        code="content_filter",
        message="The response was filtered due to the prompt triggering content management policy.",
        type="invalid_request_error",
    )


def reset() -> Behaviour:
    """Close the TCP connection before sending any header."""
    return Behaviour("reset")


def hang(seconds: float | None = None) -> Behaviour:
    """Accept and never answer, until ``release_hangs()``, ``close()`` or ``seconds`` (then answer)."""
    return Behaviour("hang", seconds=seconds)


def slow_first_token(delay: float) -> Behaviour:
    """Streaming: headers at once, the first data event after ``delay`` (non-streaming: a delay)."""
    return Behaviour("slow_first_token", seconds=delay)


def cut(after_chunks: int) -> Behaviour:
    """Streaming: role chunk plus ``after_chunks`` content chunks, then drop the connection.

    Non-streaming: the status line and headers are sent, then the connection drops
    before the body.
    """
    return Behaviour("cut", chunks=after_chunks)


def stall(after_chunks: int) -> Behaviour:
    """Streaming: role chunk plus ``after_chunks`` content chunks, then silence until released.

    After ``release_hangs()`` the stream goes on to a normal end. Non-streaming: a hang.
    """
    return Behaviour("stall", chunks=after_chunks)


def malformed(at_chunk: int) -> Behaviour:
    """Streaming: insert the event ``data: {not json`` at event index ``at_chunk`` (0 = role chunk).

    The stream then continues normally, so the whole answer still arrives.
    Non-streaming: a 200 whose body is ``{not json``.
    """
    return Behaviour("malformed", chunks=at_chunk)


def no_done() -> Behaviour:
    """Streaming: a complete answer (finish_reason, usage if asked) but no ``data: [DONE]``."""
    return Behaviour("no_done")


def down(seconds: float) -> Behaviour:
    """The provider answers 503 to everything (chat and /models) for ``seconds``.

    The outage starts when ``set_default(down(s))`` is called, or when a scripted
    ``down(s)`` reaches its request (that request gets the first 503). Same as
    ``FakeProvider.down_for(seconds)``.
    """
    return Behaviour("down", seconds=seconds)


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    """Random behaviour for the demo: per request, an error, a hang, or an ok answer.

    ``latency`` is the (min, max) seconds of an ok answer; ``error_rate`` is the chance
    of a 503; ``hang_rate`` the chance of a hang capped at :data:`PROFILE_HANG_CAP`.
    """

    latency: tuple[float, float] = (0.0, 0.0)
    error_rate: float = 0.0
    hang_rate: float = 0.0
    chunk_gap: float = 0.0

    def __post_init__(self) -> None:
        """Validate the ranges and rates."""
        low, high = self.latency
        if not 0 <= low <= high:
            raise ValueError(f"latency must be (min, max) with 0 <= min <= max, got {self.latency}")
        if self.error_rate < 0 or self.hang_rate < 0 or self.error_rate + self.hang_rate > 1:
            raise ValueError("error_rate and hang_rate must be >= 0 and sum to at most 1")
        if self.chunk_gap < 0:
            raise ValueError("chunk_gap must not be negative")

    def pick(self, rng: random.Random) -> Behaviour:
        """Draw the behaviour of one request from ``rng``."""
        roll = rng.random()
        if roll < self.error_rate:
            return server_error(503)
        if roll < self.error_rate + self.hang_rate:
            return hang(PROFILE_HANG_CAP)
        return ok(latency=rng.uniform(*self.latency), chunk_gap=self.chunk_gap)


#: A quick provider: 20-60 ms, never fails.
FAST_CHEAP = Profile(latency=(0.02, 0.06))
#: A slow provider: 150-350 ms, never fails.
SLOW_RELIABLE = Profile(latency=(0.15, 0.35))
#: A flaky provider: 30-100 ms, 25 % 503s, 5 % hangs.
FLAKY = Profile(latency=(0.03, 0.1), error_rate=0.25, hang_rate=0.05)
