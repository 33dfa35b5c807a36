"""The scale run (issue 17): 1, 2 and 3 replicas on one Redis, behind one load generator.

    python -m bench.scale                 # 1, 2, 3 replicas; 10 s phases; about 2 minutes
    python -m bench.scale --smoke         # 1 and 2 replicas, 1 s phases (tests/bench/test_bench_scale.py)

For each N: the fake upstream (``bench.upstream``), one ``redis-server`` on loopback and N
replicas of the proxy, each the same config: the gateway controls of ``bench.run``'s
``proxy-controls`` target (``bench/stack.py`` :func:`controls_config`) with
``state: {backend: redis}``, plus a second client key with only an rpm limit. The load
generator (``bench/load.py``, closed loop) opens its connections over the replicas in turn.
Nothing is pinned: every process shares the machine's cores (a scale run on one machine
measures how the replicas share it, not how N machines would do).

Two phases per N:

- **throughput**: the controls' key (limits far above the load) at ``--concurrency``
  connections for ``--seconds``: req/s, p50/p99 latency, CPU per request of the replicas
  together and of Redis;
- **rate-limit accuracy**: the limited key (rpm ``--rpm``) for ``--window`` seconds (less
  than the rpm window's minute), far more offered than the limit: exact sharing admits
  ``--rpm`` requests in all, whatever N. With ``--local`` the same phase runs on N replicas
  with per-process state (``state: {backend: memory}``: what ``on_redis_down: local`` falls
  back to), which admit up to N x the limit.

Results: ``scale.json`` and ``scale.md`` (``scale-rpm-only.*`` with ``--rpm-only``) in ``--out``
(default ``bench/results/<UTC date>/``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import load
from bench.procs import Process, core_busy
from bench.redis_server import MISSING, redis_binary, redis_warnings, start_redis, state_section, times_down
from bench.stack import CONTROLS_KEY, JSON_BODY, ROOT, controls_config, start_proxy, start_upstream
from hulumanage.loop import install_uvloop

RESULTS = Path(__file__).resolve().parent / "results"
LIMITED_KEY = "sk-bench-limited"
#: ``--rpm-only``: the throughput phase's key, with only an rpm limit far above the load
RPM_ONLY_KEY = "sk-bench-rpm-only"


@dataclasses.dataclass(frozen=True)
class Settings:
    """How many replicas, how long and how hard."""

    replicas: tuple[int, ...] = (1, 2, 3)
    seconds: float = 10.0       # the throughput phase
    window: float = 10.0        # the accuracy phase (under the rpm window's 60 s)
    warmup: float = 1.0
    concurrency: int = 64       # connections, spread over the replicas
    rpm: int = 1000             # the limited key's limit
    local: bool = True          # the accuracy phase again with per-process state
    rpm_only: bool = False      # the throughput phase with a key that has only an rpm limit (no tpm, no budget)


FULL = Settings()
SMOKE = Settings(replicas=(1, 2), seconds=1.0, window=1.0, warmup=0.3, concurrency=16, rpm=100)


class Progress:
    """One line per step on stderr, with the time since the start."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[scale {time.monotonic() - self.started:5.1f}s] {message}", file=sys.stderr, flush=True)


def replica_sections(url: str, prefix: str, backend: str, rpm: int) -> dict[str, Any]:
    """What every replica's config adds to the controls: the state section and the limited key."""
    clients = controls_config([], Path("."))["clients"]
    clients["keys"].append({"id": "limited", "key": LIMITED_KEY, "rpm": rpm})
    clients["keys"].append({"id": "rpm-only", "key": RPM_ONLY_KEY, "rpm": 100_000_000})
    return {"state": state_section(url, prefix, backend), "clients": clients}


@contextlib.contextmanager
def replicas(work: Path, ports: Sequence[int], count: int, sections: dict[str, Any],
             tag: str) -> Iterator[list[tuple[Process, int]]]:
    """``count`` replicas of the proxy on the same config (not pinned); stopped afterwards."""
    started: list[tuple[Process, int]] = []
    try:
        for i in range(count):
            started.append(start_proxy(work, None, ports, name=f"{tag}-replica-{i + 1}", controls=True,
                                       sections=sections))
        yield started
    finally:
        for proc, _port in started:
            proc.stop()


async def phase(target: load.Target, concurrency: int, seconds: float, gateways: Sequence[Process],
                redis: Process) -> dict[str, Any]:
    """A closed loop over every replica, with the CPU time of the replicas, of Redis and of the machine."""
    gw0, redis0, busy0, wall0 = sum(g.cpu() for g in gateways), redis.cpu(), core_busy(None), time.perf_counter()
    stats = await load.closed_loop(target, concurrency, seconds)
    wall = time.perf_counter() - wall0
    gw, red, busy = sum(g.cpu() for g in gateways) - gw0, redis.cpu() - redis0, core_busy(None) - busy0
    row = stats.summary()
    served = stats.ok + stats.errors
    row["replicas_cpu_us_per_req"] = gw / served * 1e6 if served else float("nan")
    row["redis_cpu_us_per_req"] = red / served * 1e6 if served else float("nan")
    row["machine_busy"] = busy / wall / len(os.sched_getaffinity(0))
    return row


async def run_n(n: int, s: Settings, work: Path, ports: Sequence[int], redis: Process, url: str,
                say: Progress) -> dict[str, Any]:
    """Both phases (and the per-process accuracy phase with ``s.local``) for ``n`` replicas."""
    out: dict[str, Any] = {"replicas": n}
    with replicas(work, ports, n, replica_sections(url, f"scale-{n}:", "redis", s.rpm), f"n{n}") as procs:
        gateways = [p for p, _ in procs]
        spread = tuple(port for _, port in procs)
        key = RPM_ONLY_KEY if s.rpm_only else CONTROLS_KEY
        bulk = load.Target("127.0.0.1", spread[0], (JSON_BODY,), api_key=key, more_ports=spread[1:])
        await load.closed_loop(bulk, s.concurrency, s.warmup)
        say(f"N={n}: throughput, {s.concurrency} connections over {n} replica(s), {s.seconds:g} s")
        out["throughput"] = row = await phase(bulk, s.concurrency, s.seconds, gateways, redis)
        say(f"N={n}: {row['rps']:,.0f} req/s, p50 {row['latency_ms']['p50']:.2f} ms, "
            f"p99 {row['latency_ms']['p99']:.2f} ms, errors {row['errors']}, machine {row['machine_busy']:.0%} busy")
        out["times_down_throughput"] = sum(times_down(p.log) for p in gateways)
        await wait_redis_up(spread, say)
        out["shared"] = await accuracy(n, s, spread, gateways, redis, say, "shared (Redis)")
        out["times_down"] = sum(times_down(p.log) for p in gateways)
        out["shared"]["times_down"] = out["times_down"] - out["times_down_throughput"]
        out["redis_log"] = [line for p in gateways for line in redis_warnings(p.log)]
    if s.local:
        with replicas(work, ports, n, replica_sections(url, f"scale-local-{n}:", "memory", s.rpm), f"n{n}-local") as procs:
            out["local"] = await accuracy(n, s, tuple(port for _, port in procs), [p for p, _ in procs], redis, say,
                                          "per-replica (local)")
    return out


async def wait_redis_up(ports: Sequence[int], say: Progress, timeout: float = 10.0) -> None:
    """Wait until every replica uses Redis again (``/health``: ``proxy.state.up``) after a phase that dropped it."""
    deadline = time.monotonic() + timeout
    while True:
        views = [json.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/health")) for port in ports]
        if all(v.get("proxy", {}).get("state", {}).get("up", True) for v in views):
            return
        if time.monotonic() > deadline:
            say(f"a replica still does not use Redis after {timeout:g} s: the accuracy phase starts anyway")
            return
        await asyncio.sleep(0.2)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


async def accuracy(n: int, s: Settings, spread: tuple[int, ...], gateways: Sequence[Process], redis: Process,
                   say: Progress, label: str) -> dict[str, Any]:
    """The limited key for ``s.window`` seconds over the replicas: admitted (200) against refused (429)."""
    target = load.Target("127.0.0.1", spread[0], (JSON_BODY,), api_key=LIMITED_KEY, more_ports=spread[1:])
    row = await phase(target, s.concurrency, s.window, gateways, redis)
    refused = int(row.get("statuses", {}).get("429", 0))
    result = {"limit": s.rpm, "window_s": s.window, "offered": row["requests"] + row["errors"],
              "admitted": row["requests"], "refused_429": refused, "other_errors": row["errors"] - refused,
              "admitted_over_limit": row["requests"] / s.rpm, "rps": (row["requests"] + row["errors"]) / row["elapsed_s"]}
    say(f"N={n}: rpm {s.rpm}, {label}: {result['admitted']:,} admitted of {result['offered']:,} offered "
        f"({result['admitted_over_limit']:.2f}x the limit)")
    return result


async def run(s: Settings, say: Progress) -> dict[str, Any]:
    """Upstream and Redis once, then each N in turn."""
    work = Path(tempfile.mkdtemp(prefix="hulumanage-scale-"))
    results: dict[str, Any] = {"settings": dataclasses.asdict(s), "environment": environment(), "runs": []}
    upstream, ports = start_upstream(work, None, chunks=16, gap_ms=2.0)
    try:
        redis, url = start_redis(work, None)
        try:
            say(f"upstream on {ports}, Redis at {url}; replicas {', '.join(map(str, s.replicas))}")
            for n in s.replicas:
                results["runs"].append(await run_n(n, s, work, ports, redis, url, say))
        finally:
            redis.stop()
    except BaseException:
        say(f"failed; the processes' logs are in {work}")
        raise
    finally:
        upstream.stop()
    shutil.rmtree(work, ignore_errors=True)
    return results


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "") if Path("/proc/cpuinfo").exists() else ""
    return {"python": platform.python_version(), "cpu": cpu, "cores": len(os.sched_getaffinity(0)),
            "commit": commit or None, "command": "python -m bench.scale " + " ".join(sys.argv[1:]),
            "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def markdown(results: dict[str, Any]) -> str:
    """The table of the scale run."""
    s, env = results["settings"], results["environment"]
    lines = ["# Scale run: replicas sharing their state in Redis", "",
             f"- command: `{env['command']}`, {env['when']}, commit {env['commit']}",
             f"- machine: {env['cpu'] or 'unknown CPU'}, {env['cores']} cores, nothing pinned; Python {env['python']}",
             (f"- throughput: {s['concurrency']} connections over the replicas in turn, {s['seconds']:g} s, "
              + ("a key with only an rpm limit far above the load (`--rpm-only`)" if s.get("rpm_only") else
                 "the controls' key (rpm, tpm, max_parallel and budgets far above the load)")
              + f"; accuracy: the limited key (rpm {s['rpm']}) for {s['window']:g} s"), ""]
    rows = []
    for r in results["runs"]:
        t, sh, lo = r["throughput"], r["shared"], r.get("local")
        rows.append([str(r["replicas"]), f"{t['rps']:,.0f}", f"{t['latency_ms']['p50']:.2f}",
                     f"{t['latency_ms']['p99']:.2f}", str(t["errors"]), f"{t['replicas_cpu_us_per_req']:.0f}",
                     f"{t['redis_cpu_us_per_req']:.0f}", f"{t['machine_busy']:.0%}",
                     f"{sh['admitted']:,} / {sh['limit']:,} ({sh['offered']:,} offered)",
                     f"{lo['admitted']:,} ({lo['admitted_over_limit']:.2f}x)" if lo else "not run",
                     f"{r.get('times_down_throughput', 0)} / {r['shared'].get('times_down', 0)}"])
    lines += [("| replicas | req/s | p50 ms | p99 ms | errors | replicas' CPU µs/req | Redis CPU µs/req | machine busy "
               "| rpm: admitted / limit, shared | admitted, per-replica state | Redis dropped (throughput / accuracy) |"),
              "|" + "---|" * 11]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", ("\"admitted, shared\": requests answered 200 with the rpm limit shared through Redis (exact sharing: "
                   "the limit, whatever N); \"per-replica state\": the same load on replicas with "
                   "`state: {backend: memory}` (what `on_redis_down: local` falls back to): each replica admits up to "
                   "the limit. \"Redis dropped\": times a replica stopped using Redis (a call past `redis_timeout`) during the "
                   "throughput phase / the accuracy phase (the accuracy phase starts when every replica uses Redis "
                   "again); while dropped, a replica admits on its own state, so sharing is exact only with 0."), ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1 and 2 replicas, 1 s phases")
    parser.add_argument("--replicas", default=None, help="comma-separated replica counts (default 1,2,3)")
    parser.add_argument("--seconds", type=float, default=None, help="throughput phase (default 10)")
    parser.add_argument("--window", type=float, default=None, help="accuracy phase, under 60 (default 10)")
    parser.add_argument("--concurrency", type=int, default=None, help="connections over the replicas (default 64)")
    parser.add_argument("--rpm", type=int, default=None, help="the limited key's rpm (default 1000)")
    parser.add_argument("--no-local", action="store_true", help="skip the accuracy phase with per-process state")
    parser.add_argument("--rpm-only", action="store_true",
                        help="throughput with a key that has only an rpm limit (no tpm, no budget)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/<UTC date>)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings the command line asks for."""
    s = SMOKE if args.smoke else FULL
    changes: dict[str, Any] = {k: getattr(args, k) for k in ("seconds", "window", "concurrency", "rpm")
                               if getattr(args, k) is not None}
    if args.replicas:
        changes["replicas"] = tuple(int(x) for x in args.replicas.split(","))
    if args.no_local:
        changes["local"] = False
    if args.rpm_only:
        changes["rpm_only"] = True
    s = dataclasses.replace(s, **changes)
    if s.window >= 60:
        raise SystemExit("--window must stay under the rpm window's 60 s")
    return s


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scale benchmark and write scale.json and scale.md."""
    args = parse_args(argv)
    if redis_binary() is None:
        print(f"[scale] cannot run: {MISSING}", file=sys.stderr)
        return 2
    install_uvloop()
    results = asyncio.run(run(settings_of(args), Progress(args.quiet)))
    out = args.out or RESULTS / datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    name = "scale-rpm-only" if results["settings"]["rpm_only"] else "scale"
    (out / f"{name}.json").write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
    (out / f"{name}.md").write_text(markdown(results))
    print(out / f"{name}.md")
    if not args.quiet:
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
