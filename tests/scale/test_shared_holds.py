"""Requests in flight and budget reservations in Redis (``proxy_plugin/gate/shared.py``), script by script.

Both are kept so that an admission never reads every request in flight or every reservation:
places in flight in a sorted set by deadline (counted), reservations in a hash with their
running total and a sorted set of deadlines. These tests run the two scripts as the gate does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

LIMITS = ["h:counters", "h:rl:req:c", "h:rl:tok:c", "h:rl:toka:c", "h:rl:flyz:c"]
BUDGET = ["h:resv:b", "h:resd:b"]


async def admit(script: Any, rid: str, parallel: int = -1, usd: float | None = None, limit: float = 1.0,
                ttl: int = 900) -> int:
    """One admission of caller ``c`` (max ``parallel`` in flight), reserving ``usd`` of budget ``b``: its code."""
    budget = [] if usd is None else ["b", repr(usd), repr(limit)]
    reply = await script(keys=LIMITS + (BUDGET if usd is not None else []),
                         args=[rid, 1, -1, -1, parallel, 10, 60, ttl, 1 if usd is not None else 0, *budget])
    return int(reply[0])


async def settle(script: Any, rid: str, usd: float = 0.0, budget: bool = False) -> None:
    keys = [LIMITS[0], LIMITS[3], LIMITS[4], *(BUDGET if budget else [])]
    await script(keys=keys, args=[rid, -1, usd, 1 if budget else 0, *(["b"] if budget else [])])


async def test_requests_in_flight_are_counted_and_leave_when_settled(scripts: tuple[Any, Any, Any]) -> None:
    client, admit_script, settle_script = scripts
    assert [await admit(admit_script, f"r{i}", parallel=2) for i in range(3)] == [0, 0, 3]
    await settle(settle_script, "r0")
    assert await admit(admit_script, "r3", parallel=2) == 0
    assert await client.zcard(LIMITS[4]) == 2


async def test_a_budget_counts_what_is_held_and_what_settled(scripts: tuple[Any, Any, Any]) -> None:
    client, admit_script, settle_script = scripts
    assert [await admit(admit_script, f"r{i}", usd=0.4) for i in range(3)] == [0, 0, 4]  # 0.8 held, 0.4 more: over
    await settle(settle_script, "r0", usd=0.1, budget=True)  # r0 cost 0.1 of its 0.4
    assert float(await client.hget(LIMITS[0], "b")) == pytest.approx(0.1)
    assert float(await client.hget(BUDGET[0], "=")) == pytest.approx(0.4)
    assert await admit(admit_script, "r3", usd=0.4) == 0      # 0.1 spent + 0.4 held + 0.4 fits in 1.0
    assert await admit(admit_script, "r4", usd=0.4) == 4
    for rid in ("r1", "r3"):
        await settle(settle_script, rid, usd=0.0, budget=True)  # failed: nothing spent
    assert float(await client.hget(BUDGET[0], "=")) == 0       # nothing held, no drift
    assert await client.hlen(BUDGET[0]) == 1 and await client.zcard(BUDGET[1]) == 0


async def test_holds_of_a_replica_that_never_settles_expire(scripts: tuple[Any, Any, Any]) -> None:
    client, admit_script, _ = scripts
    assert await admit(admit_script, "lost", parallel=1, usd=0.9, ttl=1) == 0
    assert await admit(admit_script, "next", parallel=1, usd=0.5) == 3  # its place in flight is still taken
    await asyncio.sleep(1.05)  # the lost request's deadline (the shortest TTL Redis takes: a second)
    assert await admit(admit_script, "next", parallel=1, usd=0.5) == 0  # place and reservation freed
    assert float(await client.hget(BUDGET[0], "=")) == pytest.approx(0.5)
    assert await client.hget(BUDGET[0], "lost") is None


async def test_many_held_at_once_sum_right(scripts: tuple[Any, Any, Any]) -> None:
    client, admit_script, settle_script = scripts
    async with client.pipeline(transaction=False) as pipe:
        for i in range(500):
            await admit_script(keys=LIMITS + BUDGET, args=[f"r{i}", 1, -1, -1, -1, 10, 60, 900, 1, "b", "0.001", "1"],
                               client=pipe)
        assert all(int(r[0]) == 0 for r in await pipe.execute())
    for i in range(0, 500, 2):
        await settle(settle_script, f"r{i}", usd=0.0005, budget=True)
    assert float(await client.hget(BUDGET[0], "=")) == pytest.approx(0.25)
    assert float(await client.hget(LIMITS[0], "b")) == pytest.approx(0.125)
    # 0.125 spent + 0.25 held: 0.63 more would pass 1.0, 0.6 fits
    assert await admit(admit_script, "big", usd=0.63) == 4
    assert await admit(admit_script, "fits", usd=0.6) == 0
