"""The Redis target (issue 17): the gateway controls with their state in Redis, against the same controls in memory.

``proxy-controls-redis`` is ``proxy-controls`` (``bench/stack.py`` :func:`controls_config`:
a client key with rpm, tpm and max_parallel, a key and a global budget, prices) with
``state: {backend: redis}`` on a ``redis-server`` the run starts on loopback (pinned with the
load side, so the gateway's core runs only the gateway). Two paired measurements:

- latency: the target joins ``bench.run``'s paired rounds at concurrency 1; per round, its p50
  minus ``proxy-controls``'s (issue 17: at most 0.3 ms, the median over the rounds);
- throughput: :func:`throughput_rounds`, both targets alternating at concurrency 16 in the
  same rounds, with the gateway's and Redis's CPU per request.

A run that saw the proxy stop using Redis (a call past ``redis_timeout``) says so: its
requests then ran on per-process state, and the figures would flatter Redis.

On its own, without the rest of ``bench.run`` (about 2 minutes; 10 s with ``--smoke``):

    python -m bench.redis_target [--rounds 8] [--seconds 2.5] [--out DIR]

writes ``redis.json`` and ``redis.md`` (default ``bench/results/<UTC date>/``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import load
from bench.procs import Process, plan_cores
from bench.redis_server import MISSING, REDIS_TIMEOUT, redis_binary, start_redis, state_section, times_down
from bench.stack import CONTROLS_KEY, JSON_BODY, STREAM_BODY, Meter, paired_round, start_proxy, start_upstream
from bench.stack import headline as kind_headline

NAME = "proxy-controls-redis"
BASE = "proxy-controls"
#: issue 17: Redis adds at most this over the in-memory controls, p50, paired (ms)
TARGET_ADDED_P50 = 0.3
FIGURE = "Redis adds <= 0.3 ms p50 over in-memory controls"
CONCURRENCY = 16


async def throughput_rounds(meter: Meter, targets: Sequence[tuple[str, int, Process, str]], redis: Process,
                            rounds: int, seconds: float, concurrency: int = CONCURRENCY,
                            say: Any = None) -> dict[str, Any]:
    """Each target (``(name, port, gateway, client key)``) in turn at ``concurrency`` for ``seconds``, ``rounds`` times.

    The order alternates round by round. Per target: req/s, p50 and p99 latency (ms), the
    gateway's CPU per request and Redis's CPU per request (whatever the target, so the in-memory
    target shows Redis idle), errors.
    """
    fields = ("rps", "p50_ms", "p99_ms", "gateway_cpu_us_per_req", "redis_cpu_us_per_req", "errors", "other_cpu",
              "load_core_busy", "redis_core_busy")
    out: dict[str, Any] = {"concurrency": concurrency, "rounds": rounds, "seconds": seconds,
                           "by_target": {name: {f: [] for f in fields} for name, *_ in targets}}
    for i in range(rounds):
        for name, port, gateway, key in (targets if i % 2 == 0 else targets[::-1]):
            target = load.Target("127.0.0.1", port, (JSON_BODY,), api_key=key)
            redis0 = redis.cpu()
            row = await meter.measure(gateway, lambda t=target: load.closed_loop(t, concurrency, seconds))  # type: ignore[misc]
            served = row["requests"] + row["errors"]
            figures = out["by_target"][name]
            figures["rps"].append(row["rps"])
            figures["p50_ms"].append(row["latency_ms"]["p50"])
            figures["p99_ms"].append(row["latency_ms"]["p99"])
            figures["gateway_cpu_us_per_req"].append(row["gateway_cpu_us_per_req"])
            figures["redis_cpu_us_per_req"].append((redis.cpu() - redis0) / served * 1e6 if served else float("nan"))
            figures["errors"].append(row["errors"])
            figures["load_core_busy"].append(row["load_core_busy"])  # upstream + load generator
            figures["redis_core_busy"].append((redis.cpu() - redis0) / row["elapsed_s"])
            figures["other_cpu"].append(max(row.get("foreign_gateway_core", 0.0), row.get("foreign_load_cores", 0.0),
                                            row.get("foreign_all_cores", 0.0)))
        if say is not None:
            say(f"redis throughput round {i + 1}/{rounds}: " + ", ".join(
                f"{name} {out['by_target'][name]['rps'][-1]:,.0f} req/s" for name, *_ in targets))
    return out


def added(paired: dict[str, Any], kind: str = "json", pct: str = "p50") -> list[float]:
    """The Redis target's figure minus the in-memory controls' one, per round."""
    return paired[kind][f"added_{pct}"]


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets-table row of issue 17 (``met`` None: not measured, and why in ``value``)."""
    redis = results.get("redis")
    if redis is None:
        return []
    if "skipped" in redis:
        return [{"figure": FIGURE, "target": f"<= {TARGET_ADDED_P50:g}", "value": f"not measured: {redis['skipped']}",
                 "met": None}]
    v = statistics.median(added(redis["paired"]))
    rounds = len(added(redis["paired"]))
    label = (f"{FIGURE}: added p50 of the controls with their state in Redis on loopback over the same controls "
             f"in memory (ms) (median of {rounds} paired rounds)")
    return [{"figure": label, "target": f"<= {TARGET_ADDED_P50:g}", "value": v, "met": v <= TARGET_ADDED_P50}]


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def markdown(results: dict[str, Any]) -> list[str]:
    """The report's section on the Redis target."""
    redis = results.get("redis")
    if redis is None:
        return []
    lines = ["## Controls with their state in Redis (issue 17)", ""]
    if "skipped" in redis:
        return [*lines, f"Not measured: {redis['skipped']}.", ""]
    paired = redis["paired"]
    lines += [("`proxy-controls-redis` is `proxy-controls` with `state: {backend: redis}` on a `redis-server` "
               "on loopback, pinned with the load side. Latency: in paired rounds at concurrency 1, its figure minus "
               "`proxy-controls`'s (state in memory, spend in SQLite) in the same round; throughput: both "
               "alternating at concurrency " + str(redis["throughput"]["concurrency"]) + " in rounds of "
               + f"{redis['throughput']['seconds']:g} s."), ""]
    rows = [[str(i + 1), *(f"{paired[k][f'added_{p}'][i]:.3f}" for k in ("json", "stream") for p in ("p50", "p99"))]
            for i in range(len(paired["json"]["added_p50"]))]
    rows.append(["median", *(f"**{_med(paired[k][f'added_{p}']):.3f}**" for k in ("json", "stream")
                             for p in ("p50", "p99"))])
    lines += _table(["round", "Redis adds, JSON p50 ms", "JSON p99 ms", "stream TTFB p50 ms", "TTFB p99 ms"], rows)
    lines.append("")
    rows = []
    for name, f in redis["throughput"]["by_target"].items():
        rows.append([name, f"{_med(f['rps']):,.0f}", f"{min(f['rps']):,.0f}-{max(f['rps']):,.0f}",
                     f"{_med(f['p50_ms']):.3f}", f"{_med(f['p99_ms']):.3f}", f"{_med(f['gateway_cpu_us_per_req']):.0f}",
                     f"{_med(f['redis_cpu_us_per_req']):.1f}",
                     f"{_med(f['load_core_busy']) * 100:.0f}% + {_med(f['redis_core_busy']) * 100:.0f}%",
                     f"{_med(f['other_cpu']) * 100:.0f}%", str(sum(f["errors"]))])
    lines += _table(["target", "req/s (median)", "req/s by round", "p50 ms", "p99 ms", "gateway CPU µs/req",
                     "Redis CPU µs/req", "load core: upstream and generator + Redis", "other CPU", "errors"], rows)
    down = redis.get("times_down", 0)
    lines += ["", (f"The proxy stopped using Redis {down} time(s) during the run (a call past "
                   f"`redis_timeout` {redis.get('redis_timeout')} s): " + ("none, every request used Redis."
                                                                            if not down else
                   "those requests ran on per-process state (Redis itself slow, see its CPU per request, or a busy "
                   "machine): **these figures flatter Redis**.")), ""]
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


async def standalone(rounds: int, seconds: float, pin: bool, say: Any) -> dict[str, Any]:
    """The upstream, ``redis-server``, both controls targets: paired latency rounds, then throughput rounds."""
    work = Path(tempfile.mkdtemp(prefix="hulumanage-bench-redis-"))
    gateway_cores, load_cores, pinning = plan_cores(pin)
    chunks = 16
    upstream, ports = start_upstream(work, load_cores, chunks, 2.0)
    procs: list[Process] = [upstream]
    try:
        redis, url = start_redis(work, load_cores)
        procs.append(redis)
        base, base_port = start_proxy(work, gateway_cores, ports, name=BASE, controls=True)
        procs.append(base)
        shared, shared_port = start_proxy(work, gateway_cores, ports, name=NAME, controls=True,
                                          sections={"state": state_section(url)})
        procs.append(shared)
        meter = Meter(upstream, gateway_cores, load_cores)
        kinds = {"json": (JSON_BODY, None), "stream": (STREAM_BODY, chunks + 2)}
        order = [(BASE, base_port, None), (NAME, shared_port, None)]
        keys = {BASE: CONTROLS_KEY, NAME: CONTROLS_KEY}
        for _name, port, _ in order:
            await load.closed_loop(load.Target("127.0.0.1", port, (JSON_BODY,), api_key=CONTROLS_KEY), 1, 1.0)
        paired: dict[str, Any] = {kind: {"added_p50": [], "added_p99": []} for kind in kinds}
        for i in range(rounds):
            rows = await paired_round(meter, kinds, order if i % 2 == 0 else order[::-1], seconds, keys=keys)
            for kind in kinds:
                a, b = kind_headline(kind, rows[kind][BASE]), kind_headline(kind, rows[kind][NAME])
                for pct in ("p50", "p99"):
                    paired[kind][f"added_{pct}"].append(b[pct] - a[pct])
            say(f"paired round {i + 1}/{rounds}: Redis adds p50 {paired['json']['added_p50'][-1]:.3f} ms (JSON), "
                f"{paired['stream']['added_p50'][-1]:.3f} ms (stream TTFB)")
        targets = [(BASE, base_port, base, CONTROLS_KEY), (NAME, shared_port, shared, CONTROLS_KEY)]
        throughput = await throughput_rounds(meter, targets, redis, rounds, seconds, say=say)
        return {"redis": {"paired": paired, "throughput": throughput, "redis_timeout": REDIS_TIMEOUT,
                          "times_down": times_down(shared.log)},
                "pinning": pinning, "rounds": rounds, "seconds": seconds, "command": "python -m bench.redis_target "
                + " ".join(sys.argv[1:]), "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    finally:
        for proc in reversed(procs):
            proc.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the Redis target alone; write redis.json and redis.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.redis_target", description="Redis against in-memory controls.")
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 0.3 s")
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds (default 8)")
    parser.add_argument("--seconds", type=float, default=None, help="per target and kind in a round (default 2.5)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/<UTC date>)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args(argv)
    if redis_binary() is None:
        print(f"[bench] cannot run: {MISSING}", file=sys.stderr)
        return 2
    from hulumanage.loop import install_uvloop

    install_uvloop()
    rounds = args.rounds or (2 if args.smoke else 8)
    seconds = args.seconds or (0.3 if args.smoke else 2.5)
    results = asyncio.run(standalone(rounds, seconds, not args.no_pin,
                                     lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True)))
    out = args.out or Path(__file__).resolve().parent / "results" / datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    (out / "redis.json").write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
    head = headline(results)[0]
    text = "\n".join([f"# {FIGURE}", "", f"- command: `{results['command']}`, {results['when']}; {results['pinning']}",
                      (f"- {head['figure']}: **{head['value']:.3f}** (target {head['target']}: "
                       f"{'met' if head['met'] else 'not met'})"), "", *markdown(results)[2:]])
    (out / "redis.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
