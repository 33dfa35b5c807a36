"""Cost and budgets end to end: cost from prices, budgets never overshot, period resets, spend across restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal

import aiohttp
import openai
import pytest
import yaml
from support.harness import serving
from support.helpers import USER, entry

from hulumanage.sim import ok

KEY = "sk-budget-key"
ANSWER = "one two three"  # 3 completion tokens; USER is 2 prompt tokens
PRICES = {"gpt-4": {"input": 1000.0, "output": 2000.0}, "*": {"input": 1.0, "output": 1.0}}


async def spend_of(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/admin/spend") as resp:
        assert resp.status == 200
        return await resp.json()


async def test_cost_matches_the_configured_prices(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    host = await proxy([entry(a, prices=PRICES, model_map={"smart": "gpt-4"}), entry(b, weight=0)],
                       clients={"keys": [{"id": "team-a", "key": KEY}]})
    async with host.client(api_key=KEY) as client:
        await client.chat.completions.create(model="smart", messages=USER)  # gpt-4 at a: 1000 / 2000 per M
        await client.chat.completions.create(model="other", messages=USER, stream=True)  # a's "*": 1 / 1 per M
    spend = await spend_of(http, host.url)
    smart = (2 * 1000 + 3 * 2000) / 1e6
    other = (2 + 3) / 1e6
    assert spend["keys"]["team-a"] == {"requests": 2, "prompt_tokens": 4, "completion_tokens": 6,
                                       "usd": pytest.approx(smart + other)}
    assert spend["providers"]["a"]["usd"] == pytest.approx(smart + other)
    assert spend["models"]["gpt-4"] == {"requests": 1, "prompt_tokens": 2, "completion_tokens": 3,
                                        "usd": pytest.approx(smart)}
    assert spend["models"]["other"]["usd"] == pytest.approx(other)
    assert spend["unpriced"] == ["b"]
    assert spend["budgets"] == []


async def test_a_budget_is_never_overshot_under_50_concurrent_requests(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    a.set_default(ok(latency=0.05))
    # worst case per request: 18 prompt-estimate tokens at 1000/M + 20 output tokens at 2000/M = 0.058 USD;
    # the real cost is 0.008: a budget of 0.58 holds 10 worst cases at once
    # the gate's reservations alone (budget pacing, on by default with a period, would shed before the limit)
    host = await proxy([entry(a, prices=PRICES)], budget={"usd": 0.58, "period": "day"},
                       routing={"strategy": "failover", "pace_budget": False, "health_check": {"enabled": False}},
                       clients={"keys": [{"id": "team-a", "key": KEY, "budget": {"usd": 100, "period": "total"}}]})
    async with host.client(api_key=KEY) as client:
        async def one() -> object:
            try:
                return await client.chat.completions.create(model="gpt-4", messages=USER, max_tokens=20)
            except openai.RateLimitError as exc:
                return exc
        for _ in range(40):  # waves of 50 concurrent requests, until a whole wave is refused
            results = await asyncio.gather(*(one() for _ in range(50)))
            refusals = [r for r in results if isinstance(r, openai.RateLimitError)]
            assert {r.code for r in refusals} <= {"budget_exceeded"}
            if len(refusals) == 50:
                break
    assert refusals and "global budget (day)" in str(refusals[0].message) and "resets at" in refusals[0].message
    spend = await spend_of(http, host.url)
    (global_budget,) = [b for b in spend["budgets"] if b["scope"] == "global"]
    assert spend["keys"]["team-a"]["usd"] <= 0.58 + 1e-9
    assert global_budget["spent_usd"] == pytest.approx(spend["keys"]["team-a"]["usd"])
    assert global_budget["spent_usd"] > 0.58 - 0.058  # not refused early: the last worst case did not fit
    assert global_budget["reserved_usd"] == 0
    assert len(a.chat_requests()) == spend["keys"]["team-a"]["requests"]
    assert [b["scope"] for b in spend["budgets"]] == ["key:team-a", "global"]


async def test_a_budget_resets_at_the_period_boundary(fakes, proxy, http, clock) -> None:
    clock.set_wall(dt.datetime(2025, 3, 31, 23, 59, 58, tzinfo=dt.UTC).timestamp())
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a, prices=PRICES)], budget_reserve_tokens=10,
                       clients={"keys": [{"id": "team-a", "key": KEY, "budget": {"usd": 0.05, "period": "month"}}]})
    async with host.client(api_key=KEY) as client:
        await client.chat.completions.create(model="gpt-4", messages=USER)  # reserves 0.038, costs 0.008
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="gpt-4", messages=USER)  # 0.008 + 0.038 fits, twice: no
            await client.chat.completions.create(model="gpt-4", messages=USER)
        assert refused.value.code == "budget_exceeded"
        assert "key:team-a budget (month)" in refused.value.message and "$0.05" in refused.value.message
        assert "resets at 2025-04-01T00:00:00Z" in refused.value.message
        assert refused.value.response.headers["Retry-After"] == "2"
        spend = await spend_of(http, host.url)
        assert spend["budgets"][0]["resets_at"] == "2025-04-01T00:00:00Z"
        clock.advance(3)  # April
        await client.chat.completions.create(model="gpt-4", messages=USER)
    spend = await spend_of(http, host.url)
    assert spend["budgets"][0] == {"scope": "key:team-a", "period": "month", "limit_usd": 0.05,
                                   "spent_usd": pytest.approx(0.008), "reserved_usd": 0,
                                   "remaining_usd": pytest.approx(0.042), "resets_at": "2025-05-01T00:00:00Z"}
    assert spend["keys"]["team-a"]["requests"] == 3  # since the counters began, not since the period did


async def test_spend_survives_a_sigterm_and_a_restart(fakes, tmp_path, env, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    state = tmp_path / "state" / "spend.sqlite3"
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump({
        "providers": [entry(a, prices=PRICES)],
        "routing": {"strategy": "failover", "health_check": {"enabled": False}},
        "clients": {"keys": [{"id": "team-a", "key": KEY, "budget": {"usd": 10, "period": "total"}}]},
        "state": {"path": str(state)},
    }))
    args = ("--approach", "proxy", "--proxy-config", str(config))
    async with serving(env) as start:
        server = await start(*args)
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as client:
            for _ in range(3):
                await client.chat.completions.create(model="gpt-4", messages=USER)
            before = await spend_of(http, server.url)
            server.signal(signal.SIGTERM)  # at once: what is still batched must be written on the way out
            assert await server.wait() == 0
        assert KEY not in server.log
        server = await start(*args)
        after = await spend_of(http, server.url)
        assert after == before
        assert after["keys"]["team-a"]["requests"] == 3
        assert after["budgets"][0]["spent_usd"] == pytest.approx(3 * 0.008)
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as client:
            await client.chat.completions.create(model="gpt-4", messages=USER)
        assert (await spend_of(http, server.url))["keys"]["team-a"]["requests"] == 4
        await server.stop()


async def test_a_composed_request_reserves_for_every_call_it_may_make(fakes, proxy) -> None:
    (a,) = await fakes("a")
    # 2 prompt tokens + 4 per message ... with max_tokens 10, one call's worst case is small; bon with 3
    # samples declares 6 calls: a budget that holds one call's worst case but not six refuses bon at once
    host = await proxy([entry(a, prices={"*": {"input": 1000.0, "output": 1000.0}})],
                       budget={"usd": 0.05, "period": "total"})
    async with host.client() as client:
        await client.chat.completions.create(model="gpt-4", messages=USER, max_tokens=10)  # one call fits
        before = len(a.chat_requests())
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="bon-gpt-4", messages=USER, max_tokens=10)
    assert caught.value.body["code"] == "budget_exceeded"
    assert len(a.chat_requests()) == before  # refused before any upstream call
