"""The benchmark driver: every figure in one run, direct to the upstream and through the gateways.

    python -m bench.run            # full run, a few minutes; writes bench/results/
    python -m bench.run --smoke    # every phase for a fraction of a second (CI keeps it working)

What runs: the fake upstream (``bench.upstream``, two ports), the proxy as a real
subprocess (``python -m hulumanage --approach proxy --proxy-config <generated>``),
optionally LiteLLM's proxy from a separate virtualenv (``--litellm-venv``), and the load
generator in this process (or ``wrk`` for the fixed-concurrency non-streaming phases).
With two cores the gateway is pinned to core 0 alone and everything else to core 1.

For each target (``direct``, ``proxy``, ``litellm``), in order:

1. memory (gateways only): RSS fresh, after 10k and after 100k requests (3 JSON : 1 stream);
2. non-streaming at fixed concurrency 1, 16, 64 (``wrk`` when installed);
3. non-streaming at fixed rates (open loop; a rate above the target's own maximum is skipped);
4. streaming at fixed concurrency: TTFB, inter-chunk delay, events per stream and per HTTP chunk;

then direct and proxy alternating in short rounds at concurrency 1 (JSON and streams), so
that the added latency and TTFB overhead are also measured seconds apart, not minutes.

Each phase records the gateway's CPU time (``/proc/<pid>/stat``), so CPU per request is
measured, not estimated. Results: ``results.json``, ``report.md`` and ``overhead.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from bench import load, redis_target
from bench.procs import Process, free_port, plan_cores, wait_http
from bench.redis_server import MISSING, REDIS_TIMEOUT, redis_binary, start_redis, state_section, times_down
from bench.report import write_report
from bench.stack import (
    CONTROLS_KEY,
    JSON_BODY,
    MODEL,
    NOGAP_STREAM_BODY,
    ROOT,
    STREAM_BODY,
    Meter,
    headline,
    paired_round,
    start_proxy,
    start_upstream,
)
from hulumanage.loop import install_uvloop

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long and how hard each phase runs."""

    duration: float = 10.0
    warmup: float = 2.0
    concurrencies: tuple[int, ...] = (1, 16, 64)
    rates: tuple[int, ...] = (100, 500, 1000)
    stream_concurrencies: tuple[int, ...] = (1, 16, 64)
    chunks: int = 16
    gap_ms: float = 2.0
    memory_marks: tuple[int, ...] = (10_000, 100_000)
    litellm_memory_marks: tuple[int, ...] = (2_000, 10_000)
    memory_concurrency: int = 64
    paired_rounds: int = 8          # direct and proxy alternating at concurrency 1
    paired_seconds: float = 2.5     # per target and kind in each round


FULL = Settings()
SMOKE = Settings(duration=0.5, warmup=0.2, rates=(100,), stream_concurrencies=(1, 16), chunks=4,
                 memory_marks=(500, 2_000), litellm_memory_marks=(200, 500), paired_rounds=2, paired_seconds=0.3)


def litellm_config(ports: Sequence[int]) -> dict[str, Any]:
    """The same two upstream deployments for LiteLLM's proxy (both model names)."""
    models = []
    for name in (MODEL, MODEL + "-nogap"):
        for port in ports:
            models.append({"model_name": name, "litellm_params": {
                "model": f"openai/{name}", "api_base": f"http://127.0.0.1:{port}/v1", "api_key": "bench"}})
    return {"model_list": models, "litellm_settings": {"set_verbose": False, "telemetry": False}}


LITELLM_LOG_CONFIG = {
    "version": 1, "disable_existing_loggers": False,
    "loggers": {name: {"level": "WARNING"} for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "LiteLLM",
                                                         "LiteLLM Proxy", "LiteLLM Router")},
}


class Bench:
    """One benchmark run: processes, phases, results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = SMOKE if args.smoke else FULL
        if args.duration is not None:
            self.settings = dataclasses.replace(self.settings, duration=args.duration)
        self.out: Path = args.out
        self.work = Path(tempfile.mkdtemp(prefix="hulumanage-bench-"))
        self.gateway_cores, self.load_cores, self.pinning = plan_cores(not args.no_pin)
        self.cores = len(os.sched_getaffinity(0))
        self.engine = self._engine(args.engine)
        self.upstream: Process | None = None
        self.meter: Meter | None = None
        self.ports: list[int] = []
        self.log: list[str] = []

    def _engine(self, wanted: str) -> str:
        if wanted == "auto":
            return "wrk" if load.wrk_path() else "python"
        if wanted == "wrk" and load.wrk_path() is None:
            raise SystemExit("--engine wrk: wrk is not installed (apt-get install wrk), or use --engine python")
        return wanted

    def say(self, message: str) -> None:
        """Progress on stderr."""
        if not self.args.quiet:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    # -- processes -------------------------------------------------------------------

    def start_upstream(self) -> None:
        """The fake upstream on two ports, on the load side's cores."""
        s = self.settings
        self.upstream, self.ports = start_upstream(self.work, self.load_cores, s.chunks, s.gap_ms)
        self.meter = Meter(self.upstream, self.gateway_cores, self.load_cores)

    def start_cross_core_upstream(self) -> tuple[Process, int]:
        """A second upstream pinned to the gateway's core: the direct path across cores, as the proxy's is."""
        s = self.settings
        proc, ports = start_upstream(self.work, self.gateway_cores, s.chunks, s.gap_ms, ports=1, name="upstream-xcore")
        return proc, ports[0]

    async def bench_cross_core(self) -> dict[str, Any]:
        """Direct at concurrency 1 with the upstream on the gateway's core (client and upstream on two cores).

        The proxy path crosses cores four times a request, the direct one not at all: this row
        shows what crossing costs on this machine without any proxy (wake-ups, inter-core interrupts).
        """
        s = self.settings
        proc, port = self.start_cross_core_upstream()
        out: dict[str, Any] = {"target": "direct-xcore", "closed": [], "rates": [], "stream": [], "skipped": []}
        try:
            json_target = load.Target("127.0.0.1", port, (JSON_BODY,))
            stream_target = load.Target("127.0.0.1", port, (STREAM_BODY,), expected_events=s.chunks + 2)
            await load.closed_loop(json_target, 1, s.warmup)
            if self.engine == "wrk":
                row = await self.measured(proc, lambda: load.run_wrk(json_target, 1, s.duration))
            else:
                row = await self.measured(proc, lambda: load.closed_loop(json_target, 1, s.duration))
            row["concurrency"] = 1
            out["closed"].append(row)
            row = await self.measured(proc, lambda: load.closed_loop(stream_target, 1, s.duration))
            # measured as if this upstream were the gateway (so "other CPU" on its core is right); no gateway here
            for r in (out["closed"][0], row):
                for key in ("load_core_busy", "upstream_cpu_us_per_req", "gateway_cpu_s", "gateway_cpu_us_per_req",
                            "gateway_core_busy"):
                    r.pop(key, None)
            row["concurrency"] = 1
            out["stream"].append(row)
            out["max_rps"] = out["closed"][0]["rps"]
            self.say(f"direct across cores: c=1: p50 {out['closed'][0]['latency_ms']['p50']:.3f} ms, "
                     f"p99 {out['closed'][0]['latency_ms']['p99']:.3f} ms")
        finally:
            proc.stop()
        return out

    async def bench_paired(self, proxy_port: int, controls_port: int | None = None,
                           redis_port: int | None = None) -> dict[str, Any]:
        """Direct and proxy at concurrency 1 in short alternating rounds (Python generator for both).

        The phases above measure direct and proxy minutes apart; on a shared VM the machine's
        speed drifts by more than the proxy's overhead in that time. Here each round measures
        both within seconds, the order alternating, and the figure is the proxy's minus the
        direct one's in the same round: the median over the rounds is the paired figure.
        With ``controls_port``, the proxy with every gateway control on runs in the same rounds,
        and ``controls`` holds its figures minus the plain proxy's (what the controls add).
        With ``redis_port`` too, the same controls with their state in Redis join the rounds, and
        ``redis`` holds their figures minus the in-memory controls' (what Redis adds).
        """
        s = self.settings
        assert self.meter is not None
        kinds = {"json": (JSON_BODY, None), "stream": (STREAM_BODY, s.chunks + 2)}
        out: dict[str, Any] = {"rounds": s.paired_rounds, "seconds": s.paired_seconds,
                               "json": {"added_p50": [], "added_p99": []},
                               "stream": {"added_p50": [], "added_p99": []}}
        order: list[tuple[str, int, Process | None]] = [("direct", self.ports[0], None), ("proxy", proxy_port, None)]
        if controls_port is not None:
            order.append(("proxy-controls", controls_port, None))
            out["controls"] = {kind: {"added_p50": [], "added_p99": []} for kind in kinds}
        if controls_port is not None and redis_port is not None:
            order.append((redis_target.NAME, redis_port, None))
            out["redis"] = {kind: {"added_p50": [], "added_p99": []} for kind in kinds}
        for i in range(s.paired_rounds):
            rows = await paired_round(self.meter, kinds, order if i % 2 == 0 else order[::-1], s.paired_seconds,
                                      keys={"proxy-controls": CONTROLS_KEY, redis_target.NAME: CONTROLS_KEY})
            for kind in kinds:
                proxy, direct = headline(kind, rows[kind]["proxy"]), headline(kind, rows[kind]["direct"])
                for pct in ("p50", "p99"):
                    out[kind][f"added_{pct}"].append(proxy[pct] - direct[pct])
                if controls_port is not None:
                    controlled = headline(kind, rows[kind]["proxy-controls"])
                    for pct in ("p50", "p99"):
                        out["controls"][kind][f"added_{pct}"].append(controlled[pct] - proxy[pct])
                if "redis" in out:
                    shared = headline(kind, rows[kind][redis_target.NAME])
                    for pct in ("p50", "p99"):
                        out["redis"][kind][f"added_{pct}"].append(shared[pct] - controlled[pct])
            self.say(f"paired round {i + 1}/{s.paired_rounds}: added p50 {out['json']['added_p50'][-1]:.3f} ms, "
                     f"TTFB overhead p50 {out['stream']['added_p50'][-1]:.3f} ms"
                     + (f", Redis adds p50 {out['redis']['json']['added_p50'][-1]:.3f} ms" if "redis" in out else ""))
        return out

    def start_proxy(self) -> tuple[Process, int]:
        """The proxy: the real server as a subprocess, pinned to the gateway core."""
        return start_proxy(self.work, self.gateway_cores, self.ports)

    def start_litellm(self, venv: Path) -> tuple[Process, int, str]:
        """LiteLLM's proxy from its own virtualenv, with the same two deployments."""
        config = self.work / "litellm.yaml"
        config.write_text(yaml.safe_dump(litellm_config(self.ports), sort_keys=False))
        log_config = self.work / "litellm-logging.json"
        log_config.write_text(json.dumps(LITELLM_LOG_CONFIG))
        port = free_port()
        key = "sk-" + secrets.token_hex(32)
        proc = Process("litellm", [str(venv / "bin" / "litellm"), "--config", str(config), "--port", str(port),
                                   "--num_workers", "1", "--log_config", str(log_config)],
                       self.gateway_cores, self.work / "litellm.log", cwd=self.work,
                       env={"LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
        body = json.dumps(JSON_BODY).encode()
        wait_http(proc, f"http://127.0.0.1:{port}/v1/chat/completions", 180, body,
                  {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        return proc, port, key

    # -- measuring -------------------------------------------------------------------

    async def measured(self, gateway: Process | None, run: Callable[[], Awaitable[load.Stats] | load.Stats]) -> dict[str, Any]:
        """Run one phase; add the CPU time of the gateway and of the load side to its summary."""
        assert self.meter is not None
        return await self.meter.measure(gateway, run)

    async def memory_phase(self, gateway: Process, host: str, port: int, key: str, marks: Sequence[int]) -> dict[str, Any]:
        """RSS of a fresh gateway, then after each mark of requests (3 JSON : 1 stream, no gap)."""
        target = load.Target(host, port, (JSON_BODY, JSON_BODY, JSON_BODY, NOGAP_STREAM_BODY), api_key=key)
        points = [{"requests": 0, **gateway.memory_mb()}]
        done = errors = 0
        cpu = 0.0
        elapsed = 0.0
        for mark in marks:
            row = await self.measured(gateway, lambda n=mark - done: load.closed_loop(
                target, self.settings.memory_concurrency, total=n, keep_samples=False))
            done = mark
            errors += row["errors"]
            cpu += row["gateway_cpu_s"]
            elapsed += row["elapsed_s"]
            points.append({"requests": mark, **gateway.memory_mb()})
            self.say(f"  memory after {mark} requests: {points[-1]['rss_mb']:.1f} MB RSS")
        return {"points": points, "errors": errors, "rps": done / elapsed if elapsed else math.nan,
                "gateway_cpu_us_per_req": cpu / done * 1e6 if done else math.nan,
                "growth_mb": points[-1]["rss_mb"] - points[-2]["rss_mb"]}

    async def bench_target(self, name: str, port: int, gateway: Process | None, key: str = "bench") -> dict[str, Any]:
        """Every phase against one target."""
        s = self.settings
        host = "127.0.0.1"
        json_target = load.Target(host, port, (JSON_BODY,), api_key=key)
        # another gateway may reshape a stream (drop the role chunk, add a usage chunk): only [DONE] is checked
        expected = None if name == "litellm" else s.chunks + 2
        stream_target = load.Target(host, port, (STREAM_BODY,), expected_events=expected, api_key=key)
        out: dict[str, Any] = {"target": name, "closed": [], "rates": [], "stream": [], "skipped": []}
        if gateway is not None:
            marks = s.litellm_memory_marks if name == "litellm" else s.memory_marks
            self.say(f"{name}: memory, {marks[-1]} requests")
            out["memory"] = await self.memory_phase(gateway, host, port, key, marks)
        await load.closed_loop(json_target, 16, s.warmup)
        for c in s.concurrencies:
            if self.engine == "wrk":
                row = await self.measured(gateway, lambda c=c: load.run_wrk(json_target, c, s.duration))
            else:
                row = await self.measured(gateway, lambda c=c: load.closed_loop(json_target, c, s.duration))
            row["concurrency"] = c
            out["closed"].append(row)
            self.say(f"{name}: c={c}: {row['rps']:.0f} req/s, p50 {row['latency_ms']['p50']:.3f} ms, "
                     f"p99 {row['latency_ms']['p99']:.3f} ms, errors {row['errors']}")
        best = max(r["rps"] for r in out["closed"])
        out["max_rps"] = best
        if name == "direct" and self.engine == "wrk":
            row = await self.measured(None, lambda: load.closed_loop(json_target, max(s.concurrencies), s.duration))
            row["concurrency"] = max(s.concurrencies)
            out["python_generator"] = row
            self.say(f"{name}: python generator at c={row['concurrency']}: {row['rps']:.0f} req/s")
        for rate in s.rates:
            if rate > 0.9 * best:
                out["skipped"].append(f"rate {rate} req/s: above 90% of its maximum throughput ({best:.0f} req/s)")
                continue
            row = await self.measured(gateway, lambda r=rate: load.open_loop(json_target, r, s.duration))
            row["rate"] = rate
            out["rates"].append(row)
            self.say(f"{name}: rate {rate}: p50 {row['latency_ms']['p50']:.3f} ms, p99 {row['latency_ms']['p99']:.3f} ms")
        await load.closed_loop(stream_target, 4, min(s.warmup, 1.0))
        for c in s.stream_concurrencies:
            row = await self.measured(gateway, lambda c=c: load.closed_loop(stream_target, c, s.duration))
            row["concurrency"] = c
            out["stream"].append(row)
            st = row["stream"]
            self.say(f"{name}: stream c={c}: TTFB p50 {st['ttfb_ms']['p50']:.3f} ms, inter-chunk p50 "
                     f"{st['inter_chunk_ms']['p50']:.3f} ms, events/stream {st['events_per_stream']:.1f}")
        # the same stream with its events back to back: the first-event path without the idle waits
        # between events (an idle vCPU on this VM is slow to wake, see bench/README.md)
        nogap_target = load.Target(host, port, (NOGAP_STREAM_BODY,), expected_events=expected, api_key=key)
        await load.closed_loop(nogap_target, 1, min(s.warmup, 1.0))
        row = await self.measured(gateway, lambda: load.closed_loop(nogap_target, 1, s.duration))
        row["concurrency"] = 1
        row["gap_ms"] = 0.0
        out["stream_nogap"] = [row]
        self.say(f"{name}: stream c=1, no gap: TTFB p50 {row['stream']['ttfb_ms']['p50']:.3f} ms")
        if gateway is not None:
            out["final_memory"] = gateway.memory_mb()
        return out

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Start the processes, benchmark each target, stop everything."""
        if self.load_cores:
            os.sched_setaffinity(0, self.load_cores)
        self.say(f"engine {self.engine}; {self.pinning}")
        results: dict[str, Any] = {"environment": self.environment(), "settings": dataclasses.asdict(self.settings),
                                   "targets": {}, "notes": []}
        started = time.monotonic()
        self.start_upstream()
        try:
            results["targets"]["direct"] = await self.bench_target("direct", self.ports[0], None)
            if self.gateway_cores:
                results["targets"]["direct-xcore"] = await self.bench_cross_core()
            proxy, port = self.start_proxy()
            profiler = self.start_profiler(proxy)
            controlled: Process | None = None
            stack: tuple[Process, Process, int] | None = None
            try:
                results["targets"]["proxy"] = await self.bench_target("proxy", port, proxy)
                # the same proxy with keys, limits, budgets and prices on (issue 13), measured and paired
                controlled, controls_port = start_proxy(self.work, self.gateway_cores, self.ports,
                                                        name="proxy-controls", controls=True)
                results["targets"]["proxy-controls"] = await self.bench_target("proxy-controls", controls_port,
                                                                               controlled, key=CONTROLS_KEY)
                # the same controls with their state in Redis (issue 17), when redis-server is installed
                stack = await self.start_redis_target(results)
                results["paired"] = await self.bench_paired(port, controls_port, stack[2] if stack else None)
                if stack:
                    await self.bench_redis(results, stack, controlled, controls_port)
            finally:
                if stack is not None:
                    stack[1].stop()
                    stack[0].stop()
                if controlled is not None:
                    controlled.stop()
                proxy.stop()
                if profiler is not None:  # py-spy writes its flame graph when the profiled process exits
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        profiler.popen.wait(30)
                    profiler.stop()
                    results["notes"].append(f"profiled with py-spy: {self.out / 'profile-proxy.svg'}; "
                                            "the figures of a profiled run are not the reference ones")
            await self.maybe_litellm(results)
        finally:
            assert self.upstream is not None
            self.upstream.stop()
        results["duration_s"] = time.monotonic() - started
        return results

    async def start_redis_target(self, results: dict[str, Any]) -> tuple[Process, Process, int] | None:
        """(``redis-server``, the proxy with the controls' state in it, its port); None without redis-server (noted)."""
        if redis_binary() is None:
            results["redis"] = {"skipped": MISSING}
            results["notes"].append(f"Redis target not measured: {MISSING}")
            self.say(f"skipping the Redis target: {MISSING}")
            return None
        redis, url = start_redis(self.work, self.load_cores)
        try:
            shared, port = start_proxy(self.work, self.gateway_cores, self.ports, name=redis_target.NAME,
                                       controls=True, sections={"state": state_section(url)})
        except BaseException:
            redis.stop()
            raise
        self.say(f"{redis_target.NAME}: controls with their state in Redis at {url}")
        return redis, shared, port

    async def bench_redis(self, results: dict[str, Any], stack: tuple[Process, Process, int],
                          controlled: Process, controls_port: int) -> None:
        """Throughput of the in-memory and the Redis controls, alternating; the paired latency is in ``paired``."""
        s = self.settings
        assert self.meter is not None
        redis, shared, shared_port = stack
        targets = [(redis_target.BASE, controls_port, controlled, CONTROLS_KEY),
                   (redis_target.NAME, shared_port, shared, CONTROLS_KEY)]
        for _name, port, _gateway, key in targets:
            await load.closed_loop(load.Target("127.0.0.1", port, (JSON_BODY,), api_key=key), 16, s.warmup)
        throughput = await redis_target.throughput_rounds(self.meter, targets, redis, s.paired_rounds,
                                                          s.paired_seconds, say=self.say)
        results["redis"] = {"paired": results["paired"]["redis"], "throughput": throughput,
                            "redis_timeout": REDIS_TIMEOUT, "times_down": times_down(shared.log)}

    async def maybe_litellm(self, results: dict[str, Any]) -> None:
        """The LiteLLM comparison, when ``--litellm-venv`` names a virtualenv with it installed."""
        venv = self.args.litellm_venv
        if venv is None:
            results["notes"].append("LiteLLM not compared: no --litellm-venv given")
            return
        if not (venv / "bin" / "litellm").exists():
            results["notes"].append(f"LiteLLM not compared: {venv}/bin/litellm does not exist")
            self.say(f"skipping LiteLLM: {venv}/bin/litellm does not exist")
            return
        version = litellm_version(venv)
        results["environment"]["litellm"] = version
        self.say(f"starting LiteLLM {version} (takes a while)")
        proc, port, key = self.start_litellm(venv)
        try:
            results["targets"]["litellm"] = await self.bench_target("litellm", port, proc, key)
        finally:
            proc.stop()

    def start_profiler(self, proxy: Process) -> Process | None:
        """py-spy on the proxy for the whole proxy target (``--profile``)."""
        if not self.args.profile:
            return None
        if shutil.which("py-spy") is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        self.out.mkdir(parents=True, exist_ok=True)
        return Process("py-spy", ["py-spy", "record", "--nonblocking", "--rate", "200", "--pid", str(proxy.pid),
                                  "--output", str(self.out / "profile-proxy.svg")],
                       self.load_cores, self.work / "py-spy.log")

    def environment(self) -> dict[str, Any]:
        """What the figures were measured on."""
        cpu = ""
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
        except OSError:
            pass
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False)
        return {
            "python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cores": self.cores, "pinning": self.pinning, "engine": self.engine,
            "uvloop": importlib.util.find_spec("uvloop") is not None,
            "wrk": load.wrk_path() is not None, "commit": commit.stdout.strip() or None,
            "mode": "smoke" if self.args.smoke else "full",
            "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        }


def litellm_version(venv: Path) -> str:
    """The version of litellm installed in ``venv``."""
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown version"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="Measure what the proxy costs per request.")
    parser.add_argument("--smoke", action="store_true", help="every phase for a fraction of a second (CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    parser.add_argument("--engine", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator for fixed-concurrency non-streaming phases (default: wrk when installed)")
    parser.add_argument("--litellm-venv", type=Path, default=None, metavar="PATH",
                        help="a virtualenv with litellm[proxy] installed: compare with LiteLLM's proxy")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measured phase (default 10; smoke 0.5)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--profile", action="store_true", help="record a py-spy flame graph of the proxy")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    args = parse_args(argv)
    install_uvloop()
    bench = Bench(args)
    try:
        results = asyncio.run(bench.run())
    except BaseException:
        print(f"[bench] failed; the processes' logs are in {bench.work}", file=sys.stderr)
        raise
    shutil.rmtree(bench.work, ignore_errors=True)
    paths = write_report(results, args.out)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
