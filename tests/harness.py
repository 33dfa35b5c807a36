"""Test harness: run the real hulumanage app on 127.0.0.1 against fake providers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import openai
import yaml
from aiohttp import web

from hulumanage.app import make_app
from hulumanage.cli import parse_args
from hulumanage.plugins import get_plugin_manager


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, providers: Sequence[Mapping[str, Any]], **sections: Any) -> Path:
    """Write a proxy YAML file; health checks are off unless a test asks for them."""
    data: dict[str, Any] = {"providers": [dict(p) for p in providers]}
    sections.setdefault("routing", {"strategy": "failover", "health_check": {"enabled": False}})
    data.update(sections)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Host:
    """A running hulumanage server: ``url``, ``client()``, ``app``."""

    def __init__(self, app: web.Application, runner: web.AppRunner, port: int) -> None:
        self.app = app
        self.runner = runner
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def client(self, api_key: str = "client-key", **kwargs: Any) -> openai.AsyncOpenAI:
        """The official SDK pointed at this server (no SDK retries: the proxy does them)."""
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 20)
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key, **kwargs)


@contextlib.asynccontextmanager
async def run_host(*argv: str, environ: Mapping[str, str] | None = None) -> AsyncIterator[Host]:
    """Start the host with CLI flags ``argv`` on a free port; stop it afterwards."""
    pm = get_plugin_manager(environ)
    options = parse_args(list(argv), pm)
    app = make_app(options, pm)
    runner = web.AppRunner(app, shutdown_timeout=2, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Host(app, runner, port)
    finally:
        await runner.cleanup()


async def eventually(check: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    """Poll ``check`` until true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


__all__ = ["Host", "eventually", "free_port", "run_host", "write_config", "os"]
