"""Test harness: run the real hulumanage app on 127.0.0.1 against fake providers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import openai
import yaml
from aiohttp import web

from hulumanage.app import make_app
from hulumanage.fastsite import FastSite
from hulumanage.options import parse_args
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
async def run_host(
    *argv: str, environ: Mapping[str, str] | None = None, middlewares: Sequence[Any] = (), plugins: Sequence[object] = ()
) -> AsyncIterator[Host]:
    """Start the host with CLI flags ``argv`` on a free port; stop it afterwards (``plugins``: registered too)."""
    pm = get_plugin_manager(environ)
    for plugin in plugins:
        pm.register(plugin)
    options = parse_args(list(argv), pm)
    app = make_app(options, pm)
    app.middlewares.extend(middlewares)
    runner = web.AppRunner(app, shutdown_timeout=2, handler_cancellation=True)
    try:
        await runner.setup()  # the plugins' startup: a bad config fails here
    except BaseException:
        await runner.cleanup()  # what started before the failure (the host's HTTP session), as the server does
        raise
    port = free_port()
    site = FastSite(runner, "127.0.0.1", port, fast=options.fast_path, max_connections=options.max_connections)
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


EXE = shutil.which("hulumanage") or ""
PROCESS_TIMEOUT = 20


class ServerProcess:
    """A ``hulumanage`` subprocess on a free port; its stderr is collected as it runs."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url
        self.stderr = b""
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.stderr += chunk

    @property
    def log(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self.stderr.decode(errors="replace")

    def client(self) -> openai.AsyncOpenAI:
        """The official SDK pointed at the server (no SDK retries)."""
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key="client-key", max_retries=0, timeout=PROCESS_TIMEOUT
        )

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server."""
        self.proc.send_signal(sig)

    async def wait(self) -> int:
        """The exit status, once stderr is drained."""
        code = await asyncio.wait_for(self.proc.wait(), PROCESS_TIMEOUT)
        await asyncio.wait_for(self._reader, PROCESS_TIMEOUT)
        return code

    async def stop(self) -> int:
        """SIGTERM (unless it already exited), then the exit status."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait()

    async def logged(self, text: str, timeout: float = 5.0) -> None:
        """Wait until ``text`` shows on stderr."""
        await eventually(lambda: text in self.log, timeout)


@contextlib.asynccontextmanager
async def serving(env: Mapping[str, str]) -> AsyncIterator[Callable[..., Awaitable[ServerProcess]]]:
    """Yield ``start(*args)``, which runs ``hulumanage *args --port P`` until it answers ``/health``.

    Whatever is still running at the end is killed.
    """
    assert EXE, "the hulumanage console script is not installed (pip install -e .)"
    servers: list[ServerProcess] = []

    async def start(*args: str) -> ServerProcess:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            EXE, *args, "--port", str(port), env=dict(env),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        server = ServerProcess(proc, f"http://127.0.0.1:{port}")
        servers.append(server)
        deadline = time.monotonic() + PROCESS_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while True:
                if proc.returncode is not None:
                    await server.wait()
                    raise AssertionError(f"server exited with {proc.returncode}: {server.log}")
                try:
                    async with session.get(f"{server.url}/health") as resp:
                        if resp.status == 200:
                            return server
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "server did not answer /health in time"
                await asyncio.sleep(0.05)

    try:
        yield start
    finally:
        for server in servers:
            if server.proc.returncode is None:
                server.proc.kill()
                await server.proc.wait()
            if not server._reader.done():
                await server._reader


__all__ = ["EXE", "Host", "ServerProcess", "eventually", "free_port", "os", "run_host", "serving", "write_config"]
