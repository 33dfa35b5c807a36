"""Budget pacing in the live server: the global budget paces a real proxy (fake upstreams, the official SDK).

Every request here has a prompt of 1000 words and an answer of 300 (the fakes count words
as tokens), which is also what pacing assumes before it has seen an answer, so the pace
is the same from the first request on. At the prices below a typical answer costs
$0.013 from ``dear`` and $0.0013 from ``cheap``; ``failover`` puts ``dear`` first.

The virtual clock stands still unless a test moves it, and pacing spreads the requests
it has seen over at least a minute (``gate/pace.py``): k requests at one instant are a
rate of k per minute. At 12:00 UTC with a daily budget B, 12 h are left, so the pacer
expects 720 k more requests today and affords ``c* = left / (720 k)`` per request:
with B = $20, ``dear`` is first for k <= 2, ``cheap`` from k = 3, and shedding starts
near k = 22, when even ``cheap`` costs more than c*.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any

import aiohttp
import openai
import pytest
import redis.asyncio as redis
from prometheus_client.parser import text_string_to_metric_families
from support.harness import write_config
from support.helpers import entry

from proxy_plugin.gate.pace import DEFAULT_TYPICAL, TYPICAL_MEMORY, TypicalUsage

PROMPT = [{"role": "user", "content": " ".join(["word"] * 1000)}]
ANSWER = " ".join(["said"] * 300)
DEAR = {"*": {"input": 10.0, "output": 10.0}}    # $0.013 a typical answer
CHEAP = {"*": {"input": 1.0, "output": 1.0}}     # $0.0013
NOON = dt.datetime(2025, 3, 12, 12, 0, tzinfo=dt.UTC).timestamp()
ROUTING: dict[str, Any] = {"strategy": "failover", "health_check": {"enabled": False}}
PACED = "spending is paced"  # the pacer's 429; the gate's own reads "budget exceeded: the global budget"


@pytest.fixture(autouse=True)
def seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy's random draws (shedding) are the same every run."""
    monkeypatch.setenv("HULUMANAGE_PROXY_SEED", "7")


async def start(fakes, proxy, **sections: Any):
    """``dear`` and ``cheap`` behind the proxy, ``dear`` first."""
    dear, cheap = await fakes("dear", "cheap", answer=ANSWER)
    sections.setdefault("routing", ROUTING)
    host = await proxy([entry(dear, prices=DEAR), entry(cheap, prices=CHEAP)], **sections)
    return host, dear, cheap


async def ask(client: openai.AsyncOpenAI) -> str:
    """One request: who answered it, or ``paced`` / ``budget`` for the 429 that refused it."""
    try:
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4", messages=PROMPT, max_tokens=300)
    except openai.RateLimitError as exc:
        assert exc.code == "budget_exceeded"
        return "paced" if PACED in exc.message else "budget"
    return raw.headers["x-hulumanage-provider"]


async def global_budget(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/admin/spend") as resp:
        assert resp.status == 200
        (found,) = [b for b in (await resp.json())["budgets"] if b["scope"] == "global"]
        return found


async def test_spending_ahead_of_the_day_goes_to_the_cheaper_provider(fakes, proxy, http, clock) -> None:
    clock.set_wall(NOON)
    host, _, _ = await start(fakes, proxy, budget={"usd": 20.0, "period": "day"})
    async with host.client() as client:
        served = [await ask(client) for _ in range(20)]
    assert served[0] == "dear"  # within the day's pace: the strategy's choice
    assert served[4:] == ["cheap"] * 16, served  # 20 requests a minute would spend $374 today at dear's price
    spent = (await global_budget(http, host.url))["spent_usd"]
    assert spent < 1.0  # far from spent: it is the pace that moved them


async def test_when_even_the_cheapest_overruns_the_pace_some_are_shed_and_the_budget_is_never_overshot(
        fakes, proxy, http, clock) -> None:
    clock.set_wall(NOON)
    host, dear, cheap = await start(fakes, proxy, budget={"usd": 0.5, "period": "day"})
    async with host.client() as client:
        early: list[str] = []
        for _ in range(6):  # ten at once, every minute: about $1,100 a day even at cheap's price
            early += await asyncio.gather(*(ask(client) for _ in range(10)))
            clock.advance(60)
        left = await global_budget(http, host.url)
        assert "paced" in early and "budget" not in early, early
        assert set(early) <= {"paced", "cheap"}, early
        assert left["remaining_usd"] > 0.45  # shed while the budget was far from spent
        clock.set_wall(NOON + 12 * 3600 - 30)  # the day's last 30 s: the rest may go, but no more
        late: list[str] = []
        for _ in range(30):
            late += await asyncio.gather(*(ask(client) for _ in range(20)))
    last = await global_budget(http, host.url)
    assert last["reserved_usd"] == 0
    assert last["spent_usd"] <= 0.5 + 1e-9
    assert last["spent_usd"] > 0.25, (last, late)  # the end of the day let spending catch up
    assert {"paced", "budget"} & set(late)  # and then it stopped, short of the limit
    assert len(dear.chat_requests()) + len(cheap.chat_requests()) == early.count("cheap") + sum(
        s in ("dear", "cheap") for s in late)
    async with http.get(f"{host.url}/metrics") as resp:  # paced and budget 429s alike count as "budget"
        counted = {sample.labels.get("reason"): sample.value for family in
                   text_string_to_metric_families(await resp.text()) for sample in family.samples
                   if sample.name == "hulumanage_rate_limited_total"}
    assert counted.get("budget") == sum(s in ("paced", "budget") for s in early + late)


async def test_pace_budget_false_turns_pacing_off(fakes, proxy, clock) -> None:
    clock.set_wall(NOON)
    host, _, _ = await start(fakes, proxy, budget={"usd": 20.0, "period": "day"},
                             routing={**ROUTING, "pace_budget": False})
    async with host.client() as client:
        served = [await ask(client) for _ in range(30)]
    assert served == ["dear"] * 30


@pytest.mark.parametrize("budget", [None, {"usd": 20.0, "period": "total"}], ids=["no budget", "period total"])
async def test_no_budget_or_a_total_budget_is_not_paced(fakes, proxy, clock, budget) -> None:
    clock.set_wall(NOON)
    host, _, _ = await start(fakes, proxy, **({} if budget is None else {"budget": budget}))
    async with host.client() as client:
        served = [await ask(client) for _ in range(30)]
    assert served == ["dear"] * 30


async def test_a_reload_paces_against_the_new_budget(fakes, proxy, http, clock, tmp_path) -> None:
    clock.set_wall(NOON)
    host, dear, cheap = await start(fakes, proxy, budget={"usd": 20.0, "period": "day"})
    async with host.client() as client:
        served = [await ask(client) for _ in range(10)]
        assert served[-1] == "cheap"
        write_config(tmp_path / "proxy_1.yaml", [entry(dear, prices=DEAR), entry(cheap, prices=CHEAP)],
                     routing=ROUTING, budget={"usd": 10_000.0, "period": "day"})
        async with http.post(f"{host.url}/admin/reload") as resp:
            assert resp.status == 200
        assert [await ask(client) for _ in range(5)] == ["dear"] * 5
        write_config(tmp_path / "proxy_1.yaml", [entry(dear, prices=DEAR), entry(cheap, prices=CHEAP)],
                     routing=ROUTING, budget={"usd": 20.0, "period": "day"})
        async with http.post(f"{host.url}/admin/reload") as resp:
            assert resp.status == 200
        assert await ask(client) == "cheap"  # the rate went on across both reloads


async def test_a_request_is_paced_against_its_own_worst_case_not_its_own_reservation_again(
        fakes, proxy, http, clock) -> None:
    # the day's last minute, a budget that holds one dear worst case (5004 prompt-estimate tokens and
    # max_tokens 300 at $10/M: $0.053): the gate reserves it at admission; were that reservation (or a
    # generic worst case of 4 typical prompts and budget_reserve_tokens: $0.081) counted by the pacer,
    # dear would no longer fit and the request would go to cheap
    clock.set_wall(NOON + 12 * 3600 - 60)
    host, _, _ = await start(fakes, proxy, budget={"usd": 0.06, "period": "day"})
    async with host.client() as client:
        assert await ask(client) == "dear"
    assert (await global_budget(http, host.url))["spent_usd"] == pytest.approx(0.013)


def test_the_typical_usage_starts_at_the_default_and_follows_real_answers() -> None:
    usage = TypicalUsage()
    assert usage.tokens == DEFAULT_TYPICAL
    usage.observe(200, 50)  # the first answer replaces the default
    assert usage.tokens == (200, 50)
    for _ in range(TYPICAL_MEMORY * 5):
        usage.observe(400, 100)
    assert usage.tokens == pytest.approx((400, 100), rel=1e-2)  # old evidence fades


async def _reservations_gone(client: Any, prefix: str) -> None:
    """Poll Redis (deadline 5 s) until no request holds a budget reservation there: settles go in
    batches every 0.1 s, and a request sent before then would find its predecessors' reservations."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        held = 0
        for key in await client.keys(f"{prefix}resv:*"):
            held += sum(1 for field in await client.hkeys(key) if field != b"=")
        if held == 0:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{held} reservations still held in Redis"
        await asyncio.sleep(0.02)


async def test_pacing_holds_the_same_with_the_state_in_redis(redis_server, fakes, proxy, http, clock) -> None:
    """The pacer reads the global budget's spend from the gate's store: with ``state.backend: redis``,
    the shared one. The same traffic as above is paced and shed, and the spend never overshoots.

    Two differences, both the price of one round trip a request: ten requests sent at once are all
    admitted (each reserving its worst case, $0.053 at dear's price) before the pacer sheds any, so
    the tenth finds the $0.5 budget reserved and gets the gate's own 429; and settles go to Redis in
    batches, so the test waits for them between bursts as traffic spread in time would."""
    clock.set_wall(NOON)
    prefix = "pace-test:"
    state = {"backend": "redis", "redis_url": redis_server.url, "redis_timeout": 1.0, "redis_prefix": prefix}
    host, dear, cheap = await start(fakes, proxy, budget={"usd": 0.5, "period": "day"}, state=state)
    async with host.client() as client, contextlib.aclosing(redis.Redis.from_url(redis_server.url)) as store:
        early: list[str] = []
        for _ in range(6):
            early += await asyncio.gather(*(ask(client) for _ in range(10)))
            await _reservations_gone(store, prefix)
            clock.advance(60)
        assert "paced" in early and set(early) <= {"paced", "cheap", "budget"}, early
        assert early.count("budget") <= 6, early  # at most the tenth of a burst
        clock.set_wall(NOON + 12 * 3600 - 30)  # the day's last 30 s: the rest may go, but no more
        late: list[str] = []
        for _ in range(40):
            late += await asyncio.gather(*(ask(client) for _ in range(10)))
            await _reservations_gone(store, prefix)
    answered = {name: early.count(name) + late.count(name) for name in ("dear", "cheap")}
    assert len(dear.chat_requests()) == answered["dear"] and len(cheap.chat_requests()) == answered["cheap"]
    cost = answered["dear"] * 0.013 + answered["cheap"] * 0.0013  # what the answers cost, exactly
    assert 0.25 < cost <= 0.5 + 1e-9, (answered, late)  # the end of the day let spending catch up, no further
    assert {"paced", "budget"} & set(late)  # and then it stopped, short of the limit
    deadline = asyncio.get_running_loop().time() + 5.0
    while (last := await global_budget(http, host.url))["spent_usd"] != pytest.approx(cost):
        assert asyncio.get_running_loop().time() < deadline, (last, cost)  # the shared spend, read back
        await asyncio.sleep(0.05)
    assert last["reserved_usd"] == 0
