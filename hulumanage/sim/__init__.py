"""Simulated OpenAI-compatible providers: real aiohttp servers on 127.0.0.1.

Used by the test-suite (scripted faults), ``hulumanage demo`` (random profiles) and
benchmarks::

    async with FakeProvider("a", api_key="k") as p:
        p.script(rate_limited(retry_after=2), ok(latency=0.1))
        client = openai.AsyncOpenAI(base_url=p.base_url, api_key="k", max_retries=0)
"""

from hulumanage.sim.behaviour import (
    FAST_CHEAP,
    FLAKY,
    KINDS,
    PROFILE_HANG_CAP,
    SLOW_RELIABLE,
    Behaviour,
    Profile,
    content_filter,
    context_length,
    cut,
    down,
    error,
    hang,
    malformed,
    no_done,
    ok,
    rate_limited,
    reset,
    server_error,
    slow_first_token,
    stall,
)
from hulumanage.sim.provider import DEFAULT_ANSWER, FakeProvider, start_fleet
from hulumanage.sim.seen import Headers, Seen

__all__ = [
    "DEFAULT_ANSWER",
    "FAST_CHEAP",
    "FLAKY",
    "KINDS",
    "PROFILE_HANG_CAP",
    "SLOW_RELIABLE",
    "Behaviour",
    "FakeProvider",
    "Headers",
    "Profile",
    "Seen",
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
    "start_fleet",
]
