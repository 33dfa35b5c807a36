"""Circuits and health checks across three replicas on one real Redis (issue 17)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from replicas import get_json, replicas, sdk, write
from support.helpers import USER, entry
from support.upstream import serving


async def test_a_failing_provider_is_avoided_by_all_within_1s_and_probed_by_one(fakes, redis_server, tmp_path,
                                                                              env) -> None:
    seen = {"chat": 0, "models": 0}

    async def failing(request: web.Request) -> web.Response:
        kind = "models" if request.path.endswith("/models") else "chat"
        seen[kind] += 1
        return web.json_response({"error": {"message": "down", "type": "server_error"}},
                                 status=503 if kind == "models" else 500)

    (b,) = await fakes("b")
    async with serving(failing) as url:
        config = write(tmp_path / "proxy.yaml", redis_server.url,
                       [{"name": "a", "base_url": url + "/v1", "api_key": "k"}, entry(b)],
                       routing={"strategy": "failover", "health_check": {"enabled": False}},
                       circuit_breaker={"consecutive_failures": 1, "open_base": 30, "max_probe_gap": 30})
        async with replicas(env, config) as (one, two, three):
            async with sdk(one, "none") as client:
                await client.chat.completions.create(model="gpt-4", messages=USER)  # a fails, b answers
            assert seen["chat"] == 1
            opened = time.monotonic()
            while True:
                views = [(await get_json(s, "/health"))["proxy"]["providers"]["a"] for s in (two, three)]
                if all(any(c["state"] == "open" for c in v["circuits"].values()) for v in views):
                    break
                assert time.monotonic() - opened < 1.0, views
            for server in (two, three):
                async with sdk(server, "none") as client:
                    answer = await client.chat.completions.with_raw_response.create(model="gpt-4", messages=USER)
                assert answer.headers["x-hulumanage-provider"] == "b"
            assert seen["chat"] == 1  # nobody else sent a itself


async def test_one_replica_probes_each_provider_at_a_time(redis_server, tmp_path, env) -> None:
    probes: list[float] = []

    async def models(request: web.Request) -> web.Response:
        probes.append(time.monotonic())
        return web.json_response({"object": "list", "data": [{"id": "gpt-4", "object": "model"}]})

    async with serving(models) as url:
        config = write(tmp_path / "proxy.yaml", redis_server.url, [{"name": "a", "base_url": url + "/v1"}],
                       routing={"strategy": "failover", "health_check": {"enabled": True, "interval": 0.3}})
        async with replicas(env, config):
            probes.clear()
            await asyncio.sleep(1.5)  # five intervals: three replicas probing each would be about 15
            assert 3 <= len(probes) <= 7, len(probes)
