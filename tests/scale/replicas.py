"""Three ``hulumanage`` processes on one Redis: the helpers the scale tests share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import openai
import yaml
from support.harness import ServerProcess, serving

KEY = "sk-scale-key"


def write(path: Path, redis_url: str, providers: Sequence[Mapping[str, Any]], **sections: Any) -> Path:
    """A proxy config whose state is in the Redis at ``redis_url`` (a bounded timeout kind to 2 busy cores)."""
    state = {"backend": "redis", "redis_url": redis_url, "redis_timeout": 1.0, "redis_prefix": "scale-test:"}
    state.update(sections.pop("state", {}))
    data: dict[str, Any] = {"providers": [dict(p) for p in providers],
                            "routing": {"strategy": "failover", "health_check": {"enabled": False}},
                            "state": state}
    data.update(sections)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def replicas(env: Mapping[str, str], config: Path, count: int = 3) -> AsyncIterator[list[ServerProcess]]:
    """``count`` replicas of the proxy on ``config``, started together; killed afterwards."""
    async with serving(env) as start:
        args = ("--approach", "proxy", "--proxy-config", str(config))
        yield list(await asyncio.gather(*(start(*args) for _ in range(count))))


def sdk(server: ServerProcess, key: str = KEY) -> openai.AsyncOpenAI:
    """The official SDK on one replica (no SDK retries)."""
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=10)


async def spread(servers: Sequence[ServerProcess], count: int, key: str = KEY,
                 **request: Any) -> list[Any]:
    """``count`` concurrent chat requests, round robin across ``servers``: each a completion or the exception."""
    clients = [sdk(s, key) for s in servers]
    request.setdefault("model", "gpt-4")
    request.setdefault("messages", [{"role": "user", "content": "Say something."}])
    try:
        return await asyncio.gather(*(clients[i % len(clients)].chat.completions.create(**request)
                                      for i in range(count)), return_exceptions=True)
    finally:
        for client in clients:
            await client.close()


async def get_json(server: ServerProcess, path: str) -> Any:
    """``GET path`` on one replica, as JSON."""
    async with aiohttp.ClientSession() as http, http.get(server.url + path) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()
