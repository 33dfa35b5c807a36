"""The response cache across replicas, and replicas on a Redis that dies and comes back (issue 17)."""

from __future__ import annotations

import time

import aiohttp
import openai
from replicas import KEY, get_json, replicas, sdk, spread, write
from support.helpers import USER, entry

LIMITED = "sk-scale-limited"


async def test_a_cache_entry_filled_through_one_replica_is_a_hit_at_another(fakes, redis_server, tmp_path,
                                                                            env) -> None:
    (a,) = await fakes("a", answer="one two three")
    config = write(tmp_path / "proxy.yaml", redis_server.url, [entry(a)], cache={"enabled": True, "ttl": 60})
    async with replicas(env, config, count=2) as (one, two):
        async with sdk(one) as client:
            first = await client.chat.completions.with_raw_response.create(model="gpt-4", messages=USER,
                                                                           temperature=0)
        assert first.headers["x-hulumanage-cache"] == "miss"
        deadline = time.monotonic() + 1.0
        async with sdk(two) as client:
            while True:
                again = await client.chat.completions.with_raw_response.create(model="gpt-4", messages=USER,
                                                                               temperature=0)
                if again.headers["x-hulumanage-cache"] == "hit" or time.monotonic() > deadline:
                    break
        assert again.headers["x-hulumanage-cache"] == "hit"
        assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
        assert len(a.chat_requests()) == 1


async def up_everywhere(servers, up: bool, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        views = [(await get_json(s, "/health"))["proxy"]["state"] for s in servers]
        if all(v["up"] is up for v in views):
            return
        assert time.monotonic() < deadline, views


async def metric(server) -> str:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
        return await resp.text()


async def test_redis_killed_mid_run_local_serves_then_shares_again(fakes, redis_server, tmp_path, env) -> None:
    (a,) = await fakes("a", answer="one two three")
    config = write(tmp_path / "proxy.yaml", redis_server.url, [entry(a)],
                   clients={"keys": [{"id": "team", "key": KEY, "rpm": 1000},
                                     {"id": "limited", "key": LIMITED, "rpm": 6}]},
                   state={"redis_timeout": 0.25, "on_redis_down": "local"})  # 0.25: a suite on 2 busy cores
    async with replicas(env, config) as servers:
        assert all(not isinstance(r, BaseException) for r in await spread(servers, 9))
        assert "hulumanage_state_backend_up 1.0" in await metric(servers[0])
        await redis_server.kill()
        started = time.monotonic()
        results = await spread(servers, 30)
        assert all(not isinstance(r, BaseException) for r in results), [r for r in results
                                                                          if isinstance(r, BaseException)][:2]
        assert time.monotonic() - started < 3.0  # no request waited on a dead Redis past its timeout
        await up_everywhere(servers, False)
        assert "hulumanage_state_backend_up 0.0" in await metric(servers[1])
        for server in servers:
            assert server.log.count("state backend Redis unreachable") == 1  # logged once
        await redis_server.start()
        await up_everywhere(servers, True)
        results = await spread(servers, 12, key=LIMITED)  # shared again: 6 across the three, not 6 each
        assert sum(not isinstance(r, BaseException) for r in results) == 6, [s.log[-600:] for s in servers]
        # what was settled locally meanwhile reached Redis (this Redis restarted empty: what it held is gone)
        deadline = time.monotonic() + 2.0
        while (await get_json(servers[0], "/admin/spend"))["keys"]["team"]["requests"] < 30:
            assert time.monotonic() < deadline


async def test_redis_down_under_closed_refuses_with_503(fakes, redis_server, tmp_path, env) -> None:
    (a,) = await fakes("a")
    config = write(tmp_path / "proxy.yaml", redis_server.url, [entry(a)],
                   clients={"keys": [{"id": "team", "key": KEY, "rpm": 1000}]},
                   state={"redis_timeout": 0.25, "on_redis_down": "closed"})  # 0.25: 2 busy cores
    async with replicas(env, config, count=1) as servers:
        assert all(not isinstance(r, BaseException) for r in await spread(servers, 2))
        await redis_server.kill()
        started = time.monotonic()
        results = await spread(servers, 6)
        assert time.monotonic() - started < 3.0
        assert all(isinstance(r, openai.InternalServerError) and r.status_code == 503
                   and r.code == "state_backend_unavailable" for r in results), results
        await redis_server.start()
        await up_everywhere(servers, True)
        assert all(not isinstance(r, BaseException) for r in await spread(servers, 2))
