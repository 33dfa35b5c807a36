"""The processes of a benchmark run: start, pin to cores, wait until ready, measure, stop.

CPU time and memory come from ``/proc/<pid>/stat`` (or, to the nanosecond,
``/proc/<pid>/task/*/schedstat``) and ``/proc/<pid>/status`` of the process and every
descendant (a gateway that forks workers is measured whole).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plan_cores(pin: bool) -> tuple[list[int] | None, list[int] | None, str]:
    """(gateway cores, load-side cores, a sentence saying so).

    With two or more usable cores and ``taskset`` installed: the gateway gets the first
    core alone, the upstream and the load generator share the others.
    """
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cores = list(range(os.cpu_count() or 1))
    if not pin:
        return None, None, f"not pinned (--no-pin); {len(cores)} cores shared by every process"
    if len(cores) < 2:
        return None, None, f"not pinned: only {len(cores)} usable core"
    if shutil.which("taskset") is None:
        return None, None, "not pinned: taskset is not installed"
    gateway, load = cores[:1], cores[1:]
    return gateway, load, (
        f"gateway pinned with `taskset -c {gateway[0]}` (one core); upstream and load generator "
        f"pinned to core{'s' if len(load) > 1 else ''} {','.join(map(str, load))}"
    )


def pinned(cmd: Sequence[str], cores: Sequence[int] | None) -> list[str]:
    """``cmd`` run under ``taskset -c CORES`` when ``cores`` is given (taskset execs: same pid)."""
    if not cores:
        return list(cmd)
    return ["taskset", "-c", ",".join(map(str, cores)), *cmd]


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (direct children first)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def task_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid``'s live threads from ``/proc/<pid>/task/*/schedstat`` (nanoseconds; 0 when gone).

    Finer than :func:`cpu_seconds` (clock ticks, 10 ms) for short phases; the time of
    threads that have already exited is not in it.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def core_busy(cores: Sequence[int] | None) -> float:
    """Busy CPU seconds so far (user, nice, system, irq, softirq, steal) of ``cores`` (None: all)."""
    wanted = None if cores is None else {f"cpu{c}" for c in cores}
    total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu"):
                    break
                name, *fields = line.split()
                if (wanted is None and name == "cpu") or (wanted is not None and name in wanted):
                    v = [int(x) for x in fields]
                    total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    except OSError:
        return 0.0
    return total / CLOCK_TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid`` in kB."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in out:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


class Process:
    """A benchmark process: the upstream or a gateway."""

    def __init__(self, name: str, cmd: Sequence[str], cores: Sequence[int] | None, log: Path,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None, stdout_pipe: bool = False) -> None:
        self.name = name
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            pinned(cmd, cores), stdout=subprocess.PIPE if stdout_pipe else self._log_file, stderr=self._log_file,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The process id (taskset execs the command, so it is the command's own)."""
        return self.popen.pid

    def pids(self) -> list[int]:
        """The process and its descendants."""
        return [self.pid, *children(self.pid)]

    def cpu(self) -> float:
        """CPU seconds used so far by the process and its descendants."""
        return sum(cpu_seconds(p) for p in self.pids())

    def cpu_precise(self) -> float:
        """The same as :meth:`cpu` to the nanosecond, from the live threads' ``schedstat``."""
        return sum(task_cpu_seconds(p) for p in self.pids())

    def memory_mb(self) -> dict[str, float]:
        """RSS now and peak RSS (summed over the process tree) in MB."""
        rss = hwm = 0
        for pid in self.pids():
            m = memory_kb(pid)
            rss += m["VmRSS"]
            hwm += m["VmHWM"]
        return {"rss_mb": rss / 1024.0, "peak_rss_mb": hwm / 1024.0}

    def check_alive(self) -> None:
        """Raise with the tail of the log when the process has exited."""
        if self.popen.poll() is not None:
            self._log_file.flush()
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with status {self.popen.returncode}; log {self.log}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log_file.close()


def wait_http(proc: Process, url: str, timeout: float, body: bytes | None = None,
              headers: Mapping[str, str] | None = None) -> None:
    """Poll ``url`` (a POST when ``body`` is given) until it answers 200."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        proc.check_alive()
        request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method="POST" if body else "GET")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                if resp.status == 200:
                    resp.read()
                    return
                last = f"status {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"status {exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url} within {timeout:g}s ({last}); log {proc.log}")
