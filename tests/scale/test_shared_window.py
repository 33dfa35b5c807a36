"""The shared token window's running total (``proxy_plugin/gate/shared.py``), script by script on a real Redis.

The admission script keeps the tokens of a caller's last minute as a running total, so a
check costs what left the window since the last one, not the window's size. These tests run
the two scripts as the gate does, with a window of a fraction of a second.
"""

from __future__ import annotations

import asyncio
from typing import Any

WINDOW = 0.3
KEYS = ["t:counters", "t:rl:req:c", "t:rl:tok:c", "t:rl:toka:c", "t:rl:flyz:c"]


async def admit(script: Any, rid: str, estimate: float, tpm: float = 100) -> list[Any]:
    """One admission of caller ``c`` with only a tpm limit: [code, wait, nreq, tsum, ...]."""
    return await script(keys=KEYS, args=[rid, 1, -1, tpm, -1, estimate, WINDOW, 900, 0])


async def test_the_total_follows_reservations_settles_and_the_window(scripts: tuple[Any, Any, Any]) -> None:
    client, admit_script, settle_script = scripts
    for i in range(3):
        assert int((await admit(admit_script, f"r{i}", 30))[0]) == 0
    refused = await admit(admit_script, "r3", 30)
    assert int(refused[0]) == 2 and float(refused[3]) == 90     # 90 + 30 > 100
    assert 0 < float(refused[1]) <= WINDOW                       # until r0 leaves the window
    await settle_script(keys=[KEYS[0], KEYS[3], KEYS[4]], args=["r0", 10, 0, 0])  # r0 used 10 of its 30
    taken = await admit(admit_script, "r3", 30)
    assert int(taken[0]) == 0 and float(taken[3]) == 70
    await asyncio.sleep(WINDOW + 0.05)
    fresh = await admit(admit_script, "r4", 100)                 # everything before left the window
    assert int(fresh[0]) == 0 and float(fresh[3]) == 0
    assert float(await client.hget(KEYS[3], "=")) == 100


async def test_a_window_of_thousands_leaving_at_once(scripts: tuple[Any, Any, Any]) -> None:
    client, admit_script, _ = scripts
    count, window = 9_000, 3.0  # more than Lua's unpack takes at once, all within one window
    async with client.pipeline(transaction=False) as pipe:
        for i in range(count):
            await admit_script(keys=KEYS, args=[f"r{i}", 1, -1, 1e9, -1, 2, window, 900, 0], client=pipe)
        replies = await pipe.execute()
    assert float(replies[-1][3]) == 2 * (count - 1)  # none had left the window yet
    await asyncio.sleep(window + 0.05)
    reply = await admit_script(keys=KEYS, args=["last", 1, -1, 1e9, -1, 5, window, 900, 0])
    assert int(reply[0]) == 0 and float(reply[3]) == 0
    assert await client.hlen(KEYS[3]) == 2  # "last" and the total


async def test_a_window_written_without_a_total_is_summed_once(scripts: tuple[Any, Any, Any]) -> None:
    client, admit_script, _ = scripts
    seconds, micros = await client.time()
    now = seconds + micros / 1e6
    for i, amount in enumerate((20, 30)):  # as the script wrote them before it kept a total
        await client.zadd(KEYS[2], {f"old{i}": now})
        await client.hset(KEYS[3], f"old{i}", amount)
    reply = await admit_script(keys=KEYS, args=["new", 1, -1, 100, -1, 40, 5.0, 900, 0])
    assert int(reply[0]) == 0 and float(reply[3]) == 50
    assert float(await client.hget(KEYS[3], "=")) == 90
