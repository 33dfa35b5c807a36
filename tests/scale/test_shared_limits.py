"""Rate limits and budgets across three replicas on one real Redis (issue 17)."""

from __future__ import annotations

import time

import openai
import pytest
from replicas import KEY, get_json, replicas, sdk, spread, write
from support.helpers import entry

from hulumanage.sim import ok

PRICES = {"*": {"input": 1000.0, "output": 2000.0}}   # USD per million tokens


async def test_rpm_30_across_three_replicas_gives_exactly_30_answers(fakes, redis_server, tmp_path, env) -> None:
    (a,) = await fakes("a", answer="one two three")
    config = write(tmp_path / "proxy.yaml", redis_server.url, [entry(a)],
                   clients={"keys": [{"id": "team", "key": KEY, "rpm": 30}]})
    async with replicas(env, config) as servers:
        results = await spread(servers, 90)
        answered = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(answered) == 30, [r for r in results if isinstance(r, BaseException)
                                     and not isinstance(r, openai.RateLimitError)][:3]
        assert len(refused) == 60
        assert refused[0].response.headers["x-ratelimit-remaining-requests"] == "0"
        assert "30 requests per minute" in refused[0].message
        for server in servers:
            assert "unreachable" not in server.log  # never fell back to per-process windows


async def test_tpm_across_three_replicas_within_one_request(fakes, redis_server, tmp_path, env) -> None:
    (a,) = await fakes("a", answer="one two three")
    config = write(tmp_path / "proxy.yaml", redis_server.url, [entry(a)],
                   clients={"keys": [{"id": "team", "key": KEY, "tpm": 200}]})
    async with replicas(env, config) as servers:
        async with sdk(servers[0]) as client:
            first = await client.chat.completions.with_raw_response.create(
                model="gpt-4", messages=[{"role": "user", "content": "Say something."}], max_tokens=10)
        estimate = 200 - int(first.headers["x-ratelimit-remaining-tokens"])  # what one request reserves
        used = first.parse().usage.total_tokens                                # what it settled to
        a.set_default(ok(latency=0.5))  # every admission below happens before any of them settles
        results = await spread(servers, 45, max_tokens=10)
        answered = [r for r in results if not isinstance(r, BaseException)]
        assert all(isinstance(r, openai.RateLimitError) for r in results if isinstance(r, BaseException))
        assert len(answered) == (200 - used) // estimate


async def test_a_budget_is_never_overshot_across_replicas(fakes, redis_server, tmp_path, env) -> None:
    (a,) = await fakes("a", answer="one two three")
    config = write(tmp_path / "proxy.yaml", redis_server.url, [entry(a, prices=PRICES)],
                   clients={"keys": [{"id": "team", "key": KEY, "budget": {"usd": 0.1, "period": "total"}}]})
    async with replicas(env, config) as servers:
        results = await spread(servers, 60, max_tokens=3)
        answered = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(answered) + len(refused) == 60 and answered and refused
        assert all(r.code == "budget_exceeded" for r in refused)
        cost = sum(r.usage.prompt_tokens * 1000 + r.usage.completion_tokens * 2000 for r in answered) / 1e6
        assert cost <= 0.1 + 1e-9
        deadline = time.monotonic() + 2.0  # settled spend reaches every replica within a second
        while True:
            views = [await get_json(s, "/admin/spend") for s in servers]
            spent = [v["budgets"][0]["spent_usd"] for v in views]
            if all(s == pytest.approx(cost) for s in spent) and all(
                    v["keys"]["team"]["requests"] == len(answered) for v in views):
                break
            assert time.monotonic() < deadline, (spent, cost)
