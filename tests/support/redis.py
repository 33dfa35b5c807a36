"""A real ``redis-server`` for the tests: started on a free port in a temporary directory, stopped afterwards.

No fakeredis and no mock of the client: the shared-state tests run against the server the
deployment runs. Without ``redis-server`` installed they fail under CI (``CI=true``, where
``.ci/run`` installs it) and skip elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from support.harness import free_port

START_TIMEOUT = 10.0


def redis_binary() -> str:
    """The ``redis-server`` path; fails the test in CI, skips it elsewhere, when it is not installed."""
    exe = shutil.which("redis-server")
    if exe is None:
        message = "redis-server is not installed (apt-get install redis-server; .ci/run does it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return exe


class RedisServer:
    """One ``redis-server`` process: ``url``, ``start()``, ``kill()`` (mid-run), ``start()`` again on the same port."""

    def __init__(self, exe: str, workdir: Path) -> None:
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it and wait until it answers a PING."""
        self.proc = await asyncio.create_subprocess_exec(
            self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(self.workdir), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                line = await reader.readline()
                writer.close()
                await writer.wait_closed()
                if line.startswith(b"+PONG"):
                    return
            except OSError:
                pass
            assert self.proc.returncode is None, "redis-server exited at startup"
            assert time.monotonic() < deadline, "redis-server did not answer in time"
            await asyncio.sleep(0.02)

    async def kill(self) -> None:
        """Kill it at once (SIGKILL): what a crash or a lost network looks like."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None
