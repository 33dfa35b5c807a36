"""Helpers shared by the tests: the user message, provider entries, /health, polling with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from hulumanage.sim import FakeProvider
from support.harness import Host, free_port

#: what must never show on the server's stderr
NOISE = ("Unclosed", "ResourceWarning", "Traceback", "Task was destroyed", "Task exception was never retrieved")

USER = [{"role": "user", "content": "Say something."}]


def entry(provider: FakeProvider | str, **fields: Any) -> dict[str, Any]:
    """A ``providers`` list item for ``provider`` (its name, base URL and key), ``fields`` added.

    A string is a provider name whose base URL is a closed port (connection refused).
    """
    if isinstance(provider, str):
        return {"name": provider, "base_url": f"http://127.0.0.1:{free_port()}/v1", **fields}
    item: dict[str, Any] = {"name": provider.name, "base_url": provider.base_url}
    if provider.api_key is not None:
        item["api_key"] = provider.api_key
    item.update(fields)
    return item


async def health(http: aiohttp.ClientSession, host: Host) -> dict[str, Any]:
    """``GET /health`` of ``host`` as JSON."""
    async with http.get(f"{host.url}/health") as resp:
        assert resp.status == 200
        return await resp.json()


async def raw_stream(http: aiohttp.ClientSession, url: str, **fields: Any) -> tuple[int, bytes, float]:
    """POST a streaming request with raw aiohttp: (status, the whole body, seconds taken)."""
    started = time.monotonic()
    body = {"model": "gpt-4", "messages": USER, "stream": True, **fields}
    async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
        return resp.status, await resp.read(), time.monotonic() - started


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll the async ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
