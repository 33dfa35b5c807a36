"""A response-cache hit against a miss, through the same proxy, in the same run.

    python -m bench.cache            # 8 rounds of 2.5 s per side and kind, about 1.5 minutes
    python -m bench.cache --smoke    # 2 rounds of 0.3 s (CI keeps it working)

The fake upstream (``bench.upstream``) and the proxy as a real subprocess with the cache
on (``cache: {enabled: true, max_entries: 64}``), pinned as in ``bench.run``. Each round
measures, at concurrency 1 with the Python generator, one side after the other (the order
alternating between rounds), for JSON and for streams:

- ``miss``: 4,096 requests that differ in their message, sent in turn: with 64 entries
  the LRU never holds the next one, so every request misses (the key is computed, the
  answer goes upstream and is stored): the path of a cache that is on but cold;
- ``hit``: one request, answered from the cache (sent once, unmeasured, before each
  measurement: the miss side's new entries evict it).

The figure is the median over the rounds of ``miss p50 / hit p50`` (latency for JSON,
time to the first event for streams); the issue asks for at least 3x. Results:
``cache.json`` and ``cache.md`` in ``--out`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import load
from bench.procs import plan_cores
from bench.stack import JSON_BODY, STREAM_BODY, Meter, headline, start_proxy, start_upstream
from hulumanage.loop import install_uvloop

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
CACHE = {"cache": {"enabled": True, "max_entries": 64, "ttl": 3600}}
DISTINCT = 4096
GOAL = 3.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long each measurement runs."""

    rounds: int = 8
    seconds: float = 2.5
    warmup: float = 1.0
    chunks: int = 16
    gap_ms: float = 2.0


FULL = Settings()
SMOKE = Settings(rounds=2, seconds=0.3, warmup=0.2, chunks=4)


def bodies(stream: bool) -> dict[str, tuple[dict[str, Any], ...]]:
    """The request bodies of each side: many distinct ones (miss), one (hit); all cacheable (temperature 0)."""
    base: dict[str, Any] = {**(STREAM_BODY if stream else JSON_BODY), "temperature": 0}
    messages: list[dict[str, Any]] = base["messages"]
    misses = tuple({**base, "messages": [{**messages[0], "content": f"{messages[0]['content']} ({i})"}]}
                   for i in range(DISTINCT))
    return {"miss": misses, "hit": (base,)}


async def run(settings: Settings, pin: bool, say: Any) -> dict[str, Any]:
    """Start the upstream and the proxy, measure both sides, stop everything: the results."""
    gateway_cores, load_cores, pinning = plan_cores(pin)
    work = Path(tempfile.mkdtemp(prefix="hulumanage-bench-cache-"))
    upstream, ports = start_upstream(work, load_cores, settings.chunks, settings.gap_ms)
    proxy = None
    try:
        proxy, port = start_proxy(work, gateway_cores, ports, sections=CACHE)
        meter = Meter(upstream, gateway_cores, load_cores, precise_cpu=True)
        events = {"miss": settings.chunks + 2, "hit": 3}  # a replay: the message, the finish reason, [DONE]
        kinds = {"json": False, "stream": True}
        targets = {kind: {side: load.Target("127.0.0.1", port, sent, expected_events=events[side] if stream else None)
                          for side, sent in bodies(stream).items()} for kind, stream in kinds.items()}
        for by_side in targets.values():
            for target in by_side.values():
                await load.closed_loop(target, 1, settings.warmup)
        rounds: list[dict[str, dict[str, Any]]] = []
        for number in range(settings.rounds):
            order = ("miss", "hit") if number % 2 == 0 else ("hit", "miss")
            row: dict[str, dict[str, Any]] = {}
            for kind in kinds:
                row[kind] = {}
                for side in order:
                    target = targets[kind][side]
                    if side == "hit":  # the miss side's stream of new entries may have evicted it: fill it again
                        await load.closed_loop(target, 1, total=1)
                    row[kind][side] = await meter.measure(
                        proxy, lambda t=target: load.closed_loop(t, 1, settings.seconds))  # type: ignore[misc]
            say(f"round {number + 1}: " + ", ".join(
                f"{kind} miss {headline(kind, row[kind]['miss'])['p50']:.3f} ms / "
                f"hit {headline(kind, row[kind]['hit'])['p50']:.3f} ms" for kind in kinds))
            rounds.append(row)
    finally:
        if proxy is not None:
            proxy.stop()
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"settings": dataclasses.asdict(settings), "pinning": pinning, "rounds": rounds,
            "summary": summarise(rounds)}


def summarise(rounds: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per kind: median p50 of each side, the median per-round speedup, requests and errors in all."""
    out: dict[str, dict[str, Any]] = {}
    for kind in rounds[0]:
        p50 = {side: [headline(kind, r[kind][side])["p50"] for r in rounds] for side in ("miss", "hit")}
        speedups = [m / h for m, h in zip(p50["miss"], p50["hit"], strict=True) if h > 0]
        row: dict[str, Any] = {f"{side}_p50_ms": statistics.median(v) for side, v in p50.items()}
        row["speedup"] = statistics.median(speedups) if speedups else float("nan")
        row["meets_goal"] = row["speedup"] >= GOAL
        for side in ("miss", "hit"):
            row[f"{side}_rps"] = statistics.median(r[kind][side]["rps"] for r in rounds)
            row[f"{side}_requests"] = sum(r[kind][side]["requests"] for r in rounds)
            row[f"{side}_errors"] = sum(r[kind][side]["errors"] + r[kind][side].get("stream", {}).get("bad_streams", 0)
                                        for r in rounds)
            row[f"{side}_cpu_us_per_req"] = statistics.median(r[kind][side]["gateway_cpu_us_per_req"] for r in rounds)
        out[kind] = row
    return out


def table(results: dict[str, Any]) -> list[str]:
    """The summary as a Markdown table."""
    settings = results["settings"]
    title = (f"Response cache, hit vs miss ({settings['rounds']} rounds of {settings['seconds']:g} s, "
             f"concurrency 1; {results['pinning']})")
    header = ("| kind | miss p50 ms | hit p50 ms | speedup (median of rounds) | >= 3x | miss req/s | hit req/s "
              "| miss CPU us/req | hit CPU us/req | errors |")
    lines = [title, "", header, "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, row in results["summary"].items():
        what = "latency" if kind == "json" else "TTFB"
        lines.append(f"| {kind} ({what}) | {row['miss_p50_ms']:.3f} | {row['hit_p50_ms']:.3f} | {row['speedup']:.2f}x "
                     f"| {'yes' if row['meets_goal'] else 'no'} | {row['miss_rps']:.0f} | {row['hit_rps']:.0f} "
                     f"| {row['miss_cpu_us_per_req']:.0f} | {row['hit_cpu_us_per_req']:.0f} "
                     f"| {row['miss_errors'] + row['hit_errors']} |")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE.rounds} rounds of {SMOKE.seconds:g} s (CI)")
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds (default {FULL.rounds})")
    parser.add_argument("--seconds", type=float, default=None, help=f"seconds per side and kind (default {FULL.seconds:g})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="write cache.json and cache.md here")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run it, print the table, write the files."""
    args = parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    if args.rounds is not None:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    if args.seconds is not None:
        settings = dataclasses.replace(settings, seconds=args.seconds)
    install_uvloop()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"[bench.cache] {message}", file=sys.stderr, flush=True)

    results = asyncio.run(run(settings, not args.no_pin, say))
    lines = table(results)
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache.json").write_text(json.dumps(results, indent=1))
    (args.out / "cache.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
