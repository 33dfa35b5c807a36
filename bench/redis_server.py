"""A ``redis-server`` for the benchmark: on a free loopback port, no persistence, stopped with the run.

The benchmark never imports from ``tests/``: this is its own small starter on
:class:`bench.procs.Process` (pinned like the other processes, its CPU time measured, its log
kept with the others). The tests' fixture (``tests/support/redis.py``) is asynchronous and can
kill and restart a server mid-test; this one only starts and stops.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procs import Process, free_port

#: why the Redis figures are missing when they are
MISSING = "redis-server is not on PATH (apt-get install redis-server)"
#: a bound kind to a busy 2-core machine: a call past it would fall back to local state (and be logged)
REDIS_TIMEOUT = 0.25
#: what the proxy logs when it stops using Redis (``proxy_plugin/state/redis.py``)
DOWN_MESSAGE = "state backend Redis unreachable"


def redis_binary() -> str | None:
    """The ``redis-server`` path, or None when it is not installed."""
    return shutil.which("redis-server")


def _ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")
    return False


def start_redis(work: Path, cores: Sequence[int] | None, name: str = "redis",
                timeout: float = 10.0) -> tuple[Process, str]:
    """``redis-server`` on a free port on 127.0.0.1, pinned to ``cores``: (process, its ``redis://`` URL)."""
    exe = redis_binary()
    if exe is None:
        raise RuntimeError(MISSING)
    port = free_port()
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    proc = Process(name, [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--daemonize", "no", "--dir", str(folder)], cores, work / f"{name}.log")
    deadline = time.monotonic() + timeout
    try:
        while not _ping(port):
            proc.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer PING within {timeout:g}s; log {proc.log}")
            time.sleep(0.02)
    except BaseException:
        proc.stop()
        raise
    return proc, f"redis://127.0.0.1:{port}/0"


def state_section(url: str, prefix: str = "bench:", backend: str = "redis") -> dict[str, Any]:
    """The proxy's ``state:`` section for the Redis at ``url`` (``backend: memory``: per-process state)."""
    if backend != "redis":
        return {"backend": backend}
    return {"backend": "redis", "redis_url": url, "redis_timeout": REDIS_TIMEOUT, "redis_prefix": prefix}


def times_down(log: Path) -> int:
    """How often a proxy (by its log) stopped using Redis: each such spell ran on per-process state."""
    try:
        return log.read_text(errors="replace").count(DOWN_MESSAGE)
    except OSError:
        return 0


def redis_warnings(log: Path, limit: int = 20) -> list[str]:
    """A proxy's log lines about Redis (why it stopped using it, failed background writes), the first ``limit``."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln.strip()[:300] for ln in lines if "Redis" in ln][:limit]
