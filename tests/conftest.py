"""Shared fixtures: fake providers and a real host running the proxy in front of them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import Host, free_port, run_host, write_config

from hulumanage.sim import FakeProvider

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


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME is an empty temporary directory and no proxy config is named in the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("HULUMANAGE_PROXY_CONFIG", raising=False)
    return home


@pytest.fixture
async def fakes() -> AsyncIterator[Callable[..., Awaitable[list[FakeProvider]]]]:
    """Start fake providers by name: ``a, b = await fakes("a", "b")``; all are closed afterwards.

    Keyword arguments go to every ``FakeProvider``.
    """
    started: list[FakeProvider] = []

    async def start(*names: str, **kwargs: Any) -> list[FakeProvider]:
        out = []
        for name in names:
            provider = await FakeProvider(name, **kwargs).start()
            started.append(provider)
            out.append(provider)
        return out

    yield start
    for provider in started:
        await provider.close()


ProxyFactory = Callable[..., Awaitable[Host]]


@pytest.fixture
async def proxy(tmp_path: Path, isolated_env: Path) -> AsyncIterator[ProxyFactory]:
    """Start the real host with a proxy config: ``host = await proxy([entry(a), ...], routing=...)``.

    ``argv`` replaces the default CLI flags ``--approach proxy``; the config path is
    always passed with ``--proxy-config``. Sections are written as given (health checks
    are off unless ``routing`` says otherwise). Hosts are stopped afterwards.
    """
    stack = contextlib.AsyncExitStack()
    count = 0

    async def start(
        providers: Sequence[Mapping[str, Any]], argv: Sequence[str] = ("--approach", "proxy"), **sections: Any
    ) -> Host:
        nonlocal count
        count += 1
        path = write_config(tmp_path / f"proxy_{count}.yaml", providers, **sections)
        return await stack.enter_async_context(run_host(*argv, "--proxy-config", str(path)))

    async with stack:
        yield start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw aiohttp session, for what the SDK hides (exact bytes, malformed requests)."""
    async with aiohttp.ClientSession() as session:
        yield session


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
