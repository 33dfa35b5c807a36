"""What ``bench.run`` and ``bench.ab`` both start and measure.

- the request bodies and the proxy's generated config;
- :func:`start_upstream`: the fake upstream (``bench.upstream``) on N ports;
- :func:`start_proxy`: the real server as a subprocess, running the code of a given source
  tree (``PYTHONPATH`` and working directory set to it), and :func:`imported_from`, which
  shows which files that tree's interpreter imports;
- :class:`Meter`: one load phase with the CPU time of the gateway, the upstream and the
  cores around it;
- :func:`paired_round`: several targets one after another at concurrency 1, a few seconds
  each, for each kind of request (the paired rounds of both tools).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from bench import load
from bench.procs import Process, core_busy, free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
MODEL = "bench-model"
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
JSON_BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 32}
STREAM_BODY = {**JSON_BODY, "stream": True}
NOGAP_STREAM_BODY = {**STREAM_BODY, "model": MODEL + "-nogap"}
#: the kinds of request of the paired rounds: JSON, a stream with its events ``gap_ms`` apart, back to back
PAIRED_BODIES: dict[str, dict[str, Any]] = {"json": JSON_BODY, "stream": STREAM_BODY, "stream_nogap": NOGAP_STREAM_BODY}
#: the modules whose origin :func:`imported_from` reports
CODE_MODULES = ("hulumanage", "hulumanage.fastpath", "proxy_plugin", "proxy_plugin.plugin")


def proxy_config(ports: Sequence[int]) -> dict[str, Any]:
    """Two providers on the fake upstream, health checks on with a long interval, a generous queue."""
    return {
        "providers": [{"name": f"upstream-{i + 1}", "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "bench"}
                      for i, port in enumerate(ports)],
        "routing": {"strategy": "weighted", "health_check": {"enabled": True, "interval": 300, "timeout": 5}},
        "queue": {"max_concurrent": 4096, "timeout": 30},
        "monitoring": {"log_level": "WARNING"},
    }


#: the client key of the ``proxy-controls`` target
CONTROLS_KEY = "sk-bench-controls"


def controls_config(ports: Sequence[int], work: Path) -> dict[str, Any]:
    """:func:`proxy_config` with every gateway control on, set high enough never to reject.

    A client key with rpm, tpm and max_parallel, a budget on the key and a global one, prices on
    every provider, and the spend kept in an SQLite file under ``work`` (the default backend).
    """
    config = proxy_config(ports)
    for provider in config["providers"]:
        provider["prices"] = {MODEL: {"input": 0.15, "output": 0.60}, "*": {"input": 1.0, "output": 3.0}}
    config["clients"] = {"keys": [{"id": "bench", "key": CONTROLS_KEY, "rpm": 100_000_000, "tpm": 1_000_000_000_000,
                                   "max_parallel": 100_000, "budget": {"usd": 1e12, "period": "day"}}]}
    config["budget"] = {"usd": 1e12, "period": "month"}
    config["state"] = {"path": str(work / "controls-state.sqlite3")}
    return config


def start_upstream(work: Path, cores: Sequence[int] | None, chunks: int, gap_ms: float, ports: int = 2,
                   name: str = "upstream") -> tuple[Process, list[int]]:
    """The fake upstream on ``ports`` free ports, pinned to ``cores``: (process, its ports)."""
    proc = Process(name, [sys.executable, "-m", "bench.upstream", "--ports", ",".join("0" * ports),
                          "--chunks", str(chunks), "--gap-ms", str(gap_ms)],
                   cores, work / f"{name}.log", cwd=ROOT, stdout_pipe=True)
    assert proc.popen.stdout is not None
    line = proc.popen.stdout.readline().decode()
    if not line.startswith("READY "):
        try:
            proc.check_alive()
            raise RuntimeError(f"{name} did not start: {line!r}")
        finally:
            proc.stop()
    return proc, json.loads(line[6:])["ports"]


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that makes an interpreter import ``hulumanage`` and ``proxy_plugin`` from ``tree``.

    ``tree`` goes first on ``PYTHONPATH``, ahead of an editable install (whose finder comes
    after the path entries); the process also runs with ``tree`` as its working directory,
    which ``python -m`` and ``python -c`` put first of all on ``sys.path``.
    """
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(tree), *([rest] if rest else [])])}


def imported_from(tree: Path, modules: Sequence[str] = CODE_MODULES) -> dict[str, str]:
    """The file each of ``modules`` is imported from by an interpreter started as :func:`start_proxy` starts one."""
    code = ("import importlib, json, sys; "
            "print(json.dumps({m: importlib.import_module(m).__file__ for m in sys.argv[1:]}))")
    proc = subprocess.run([sys.executable, "-c", code, *modules], cwd=tree, env={**os.environ, **tree_env(tree)},
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"cannot import {', '.join(modules)} from {tree}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def start_proxy(work: Path, cores: Sequence[int] | None, ports: Sequence[int], tree: Path = ROOT,
                name: str = "proxy", timeout: float = 30, controls: bool = False,
                sections: Mapping[str, Any] | None = None) -> tuple[Process, int]:
    """The proxy: the real server as a subprocess running ``tree``'s code, pinned to ``cores``: (process, port).

    ``controls``: with keys, limits, budgets and prices on (:func:`controls_config`; clients send :data:`CONTROLS_KEY`).
    ``sections``: config sections added to (or replacing those of) the config.
    """
    config = work / f"{name}.yaml"
    data = controls_config(ports, work) if controls else proxy_config(ports)
    config.write_text(yaml.safe_dump({**data, **(sections or {})}, sort_keys=False))
    port = free_port()
    proc = Process(name, [sys.executable, "-m", "hulumanage", "--approach", "proxy", "--proxy-config", str(config),
                          "--port", str(port), "--log-level", "WARNING"],
                   cores, work / f"{name}.log", env=tree_env(tree), cwd=tree)
    try:
        wait_http(proc, f"http://127.0.0.1:{port}/health", timeout)
    except BaseException:
        proc.stop()
        raise
    return proc, port


@dataclasses.dataclass
class Meter:
    """Measures one load phase: its summary plus the CPU time spent around it.

    ``precise_cpu`` reads the gateway's CPU time from ``/proc/<pid>/task/*/schedstat``
    (nanoseconds) instead of ``/proc/<pid>/stat`` (clock ticks, 10 ms): for short phases.
    """

    upstream: Process
    gateway_cores: list[int] | None
    load_cores: list[int] | None
    precise_cpu: bool = False

    def _gateway_cpu(self, gateway: Process | None) -> float:
        if gateway is None:
            return 0.0
        return gateway.cpu_precise() if self.precise_cpu else gateway.cpu()

    async def measure(self, gateway: Process | None,
                      run: Callable[[], Awaitable[load.Stats] | load.Stats]) -> dict[str, Any]:
        """Run one phase; add the CPU time of the gateway and of the load side to its summary."""
        gw0 = self._gateway_cpu(gateway)
        up0 = self.upstream.cpu()
        gcore0, lcore0 = core_busy(self.gateway_cores), core_busy(self.load_cores)
        me0 = time.process_time()
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall0 = time.perf_counter()
        result = run()
        stats = await result if asyncio.iscoroutine(result) else result
        wall = time.perf_counter() - wall0
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        gcore, lcore = core_busy(self.gateway_cores) - gcore0, core_busy(self.load_cores) - lcore0
        gw = self._gateway_cpu(gateway) - gw0
        up = self.upstream.cpu() - up0
        loadgen = time.process_time() - me0 + (kids1.ru_utime - kids0.ru_utime) + (kids1.ru_stime - kids0.ru_stime)
        row = stats.summary()
        served = stats.ok + stats.errors
        row["load_core_busy"] = (up + loadgen) / wall / max(1, len(self.load_cores or [0]))
        # CPU used on the benchmark's cores by anything else (other processes, interrupts): noise
        if self.gateway_cores is not None and self.load_cores is not None:
            row["foreign_gateway_core"] = max(0.0, gcore - gw) / wall / len(self.gateway_cores)
            row["foreign_load_cores"] = max(0.0, lcore - up - loadgen) / wall / len(self.load_cores)
        else:
            cores = len(os.sched_getaffinity(0))
            row["foreign_all_cores"] = max(0.0, gcore - gw - up - loadgen) / wall / cores
        row["upstream_cpu_us_per_req"] = up / served * 1e6 if served else math.nan
        if gateway is not None:
            row["gateway_cpu_s"] = gw
            row["gateway_cpu_us_per_req"] = gw / served * 1e6 if served else math.nan
            row["gateway_core_busy"] = gw / wall
        return row


def headline(kind: str, row: Mapping[str, Any]) -> dict[str, float]:
    """The distribution a kind of request is judged by: latency for JSON, time to the first event for streams."""
    return row["latency_ms"] if kind == "json" else row["stream"]["ttfb_ms"]


async def paired_round(meter: Meter, kinds: Mapping[str, tuple[dict[str, Any], int | None]],
                       order: Sequence[tuple[str, int, Process | None]], seconds: float,
                       say: Callable[[str], None] | None = None,
                       keys: Mapping[str, str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """One round: for each kind (``name -> (body, expected events)``), every target of ``order`` in turn.

    Each target (``(name, port, its gateway process or None)``) gets ``seconds`` of closed
    loop at concurrency 1 with the Python generator, one target at a time. Returns
    ``{kind: {target name: the phase's summary}}``. ``keys``: a target's client key (by name), default ``bench``.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, (body, events) in kinds.items():
        out[kind] = {}
        for name, port, gateway in order:
            key = (keys or {}).get(name, "bench")
            target = load.Target("127.0.0.1", port, (body,), expected_events=events, api_key=key)
            out[kind][name] = await meter.measure(gateway, lambda t=target: load.closed_loop(t, 1, seconds))
            if say is not None:
                say(f"  {kind} {name}: p50 {headline(kind, out[kind][name])['p50']:.3f} ms")
    return out
