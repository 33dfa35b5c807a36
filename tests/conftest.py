"""Shared fixtures: fake providers and a real host running the proxy in front of them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.harness import Host, run_host, write_config

import proxy_plugin.plugin
from hulumanage.sim import FakeProvider
from proxy_plugin.clock import ManualClock


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


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An empty HOME, no proxy settings from the outside, resource warnings shown."""
    home = tmp_path / "home"
    home.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HULUMANAGE_")}
    environ["HOME"] = str(home)
    environ["PYTHONWARNINGS"] = "always::ResourceWarning"
    return environ


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """The virtual clock every proxy started by this test reads (``proxy_plugin.plugin.clock_factory``)."""
    manual = ManualClock()
    monkeypatch.setattr(proxy_plugin.plugin, "clock_factory", lambda: manual)
    return manual


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[Any]:
    """A real ``redis-server`` on a free port (``tests/support/redis.py``), stopped afterwards."""
    from support.redis import RedisServer, redis_binary

    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(redis_binary(), workdir)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
