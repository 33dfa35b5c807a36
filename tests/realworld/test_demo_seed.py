"""``hulumanage demo --seed N``: the same numbers on every run with the same seed, other numbers with another."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

from support.harness import EXE

ROW = re.compile(r"^(?P<name>[\w-]+)\s+(?P<counts>\d+\s+\d+\s+\d+\s+\d+)\s", re.MULTILINE)
CLIENT = re.compile(r"^client: (\d+/\d+) succeeded", re.MULTILINE)
#: the traffic block: client requests and upstream attempts apart, first picks and who answered
TRAFFIC = re.compile(r"^(client requests: .*|  [\w-]+\s+first pick .*)$", re.MULTILINE)


async def demo(env: Mapping[str, str], seed: int) -> str:
    """``hulumanage demo --requests 60 --seed SEED``'s stdout (it must exit 0)."""
    assert EXE, "the hulumanage console script is not installed (pip install -e .)"
    proc = await asyncio.create_subprocess_exec(EXE, "demo", "--requests", "60", "--seed", str(seed), env=dict(env),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, out.decode() + err.decode()
    return out.decode()


def numbers(out: str) -> tuple[list[str], list[str], list[str]]:
    """What must repeat: each provider's counts, the client's tally, the traffic lines (no latency in them)."""
    rows = [f"{m['name']} {' '.join(m['counts'].split())}" for m in ROW.finditer(out)]
    assert len(rows) == 3, out
    traffic = TRAFFIC.findall(out)
    assert len(traffic) == 4, out
    return rows, CLIENT.findall(out), traffic


async def test_the_same_seed_gives_the_same_numbers_and_another_seed_others(env: dict[str, str]) -> None:
    first, second, other = await asyncio.gather(demo(env, 7), demo(env, 7), demo(env, 8))
    assert numbers(first) == numbers(second), first + second
    assert numbers(first)[0] != numbers(other)[0], first + other
    rows, client, traffic = numbers(first)
    assert client == ["60/60"]
    attempts = int(re.search(r"upstream attempts: (\d+)", traffic[0])[1])  # type: ignore[index]
    assert attempts == sum(int(r.split()[2]) for r in rows)  # the table's requests are upstream attempts
    assert "(weight 2/6 = 33% expected)" in first and "failed here and moved on" in first
    assert "taken over from a provider that failed" in first
