"""A paired A/B of two git revisions on the hot path.

    python -m bench.ab REV_A REV_B [--rounds 8] [--seconds 2.5] [--out DIR]
    python -m bench.ab --smoke HEAD WORKTREE     # 2 rounds of 0.3 s (CI keeps it working)

Each revision (anything ``git rev-parse`` takes, or ``WORKTREE``: the working tree as it
is, uncommitted changes included) is extracted with ``git archive`` into a temporary
directory and runs in its own proxy: ``python -m hulumanage --approach proxy`` with that
tree as working directory and first on ``PYTHONPATH``. Before anything is measured, an
interpreter started the same way reports where ``hulumanage`` and ``proxy_plugin`` come
from, and a revision whose code would come from anywhere else stops the run.

One fake upstream (``bench.upstream``, pinned like ``bench.run`` pins it) serves both
proxies, both pinned to the gateway core; one target is under load at a time. Each round
runs, for JSON, streams with events 2 ms apart and streams back to back, closed loop at
concurrency 1 with the Python generator: direct to the upstream, proxy A, proxy B, in
that order in odd rounds and the reverse in even ones. Per round and proxy: p50 latency
(JSON) or time to the first event (streams), the same minus the direct figure of that
round (added latency), and the proxy's CPU time per request (``/proc``, to the
nanosecond). The table gives each metric's median over the rounds for A and B, B/A, and
the spread; ``--out DIR`` writes ``ab.json`` (every round's raw figures) and ``ab.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.procs import Process, plan_cores
from bench.stack import (
    PAIRED_BODIES,
    Meter,
    headline,
    imported_from,
    paired_round,
    start_proxy,
    start_upstream,
    tree_env,
)
from hulumanage.loop import install_uvloop

WORKTREE = "WORKTREE"
SIDES = ("A", "B")
KIND_NAMES = {"json": "JSON", "stream": "stream, events 2 ms apart", "stream_nogap": "stream, events back to back"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How many rounds, how long each target is measured in a round, and the upstream's streams."""

    rounds: int = 8
    seconds: float = 2.5
    warmup: float = 1.0   # per target and kind, before the first round (not recorded)
    chunks: int = 16
    gap_ms: float = 2.0


FULL = Settings()
SMOKE = Settings(rounds=2, seconds=0.3, warmup=0.2)


@dataclasses.dataclass
class Revision:
    """One side of the A/B: what was asked for, what it resolved to, and the tree its proxy runs."""

    side: str
    spec: str
    commit: str | None   # None for WORKTREE
    title: str
    tree: Path
    imported: dict[str, str] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """What ``ab.json`` records of it."""
        return {"side": self.side, "spec": self.spec, "commit": self.commit, "title": self.title,
                "tree": str(self.tree), "imported": self.imported}


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row of the table: a figure of one kind of request, per round and proxy."""

    key: str
    label: str
    kind: str
    figure: str   # "p50", "added_p50", "added_p99" or "cpu"
    unit: str

    def value(self, rows: Mapping[str, Mapping[str, Any]], side: str) -> float:
        """This metric for proxy ``side`` in one round (``rows``: ``{kind: {target: summary}}``)."""
        row = rows[self.kind][side]
        if self.figure == "cpu":
            return float(row["gateway_cpu_us_per_req"])
        got = headline(self.kind, row)
        if self.figure.startswith("added_"):
            pct = self.figure.removeprefix("added_")
            return got[pct] - headline(self.kind, rows[self.kind]["direct"])[pct]
        return got[self.figure]


METRICS = (
    Metric("json_p50", "JSON latency p50", "json", "p50", "ms"),
    Metric("json_added_p50", "JSON added latency p50", "json", "added_p50", "ms"),
    Metric("json_added_p99", "JSON added latency p99", "json", "added_p99", "ms"),
    Metric("json_cpu", "JSON CPU per request", "json", "cpu", "µs"),
    Metric("stream_ttfb_p50", "stream TTFB p50, events 2 ms apart", "stream", "p50", "ms"),
    Metric("stream_added_p50", "stream TTFB overhead p50, events 2 ms apart", "stream", "added_p50", "ms"),
    Metric("stream_cpu", "stream CPU per stream, events 2 ms apart", "stream", "cpu", "µs"),
    Metric("nogap_ttfb_p50", "stream TTFB p50, back to back", "stream_nogap", "p50", "ms"),
    Metric("nogap_added_p50", "stream TTFB overhead p50, back to back", "stream_nogap", "added_p50", "ms"),
    Metric("nogap_cpu", "stream CPU per stream, back to back", "stream_nogap", "cpu", "µs"),
)


# -- revisions -------------------------------------------------------------------------

def git(repo: Path, *args: str) -> str:
    """``git -C repo ARGS``'s output, stripped; a failure stops the run with git's message."""
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {proc.stderr.strip() or f'status {proc.returncode}'}")
    return proc.stdout.strip()


def repository(where: Path | None = None) -> Path:
    """The top of the git working tree the command runs in."""
    return Path(git(where or Path.cwd(), "rev-parse", "--show-toplevel"))


def short_title(repo: Path, commit: str, width: int = 72) -> str:
    """``<short hash> <subject>``, the subject cut to ``width`` characters."""
    line = git(repo, "log", "-1", "--format=%h %s", commit)
    return line if len(line) <= width else line[: width - 3].rstrip() + "..."


def checkout(repo: Path, spec: str, side: str, work: Path) -> Revision:
    """Resolve ``spec`` in ``repo``; extract that commit's tree under ``work`` (``WORKTREE``: use ``repo`` as is)."""
    if spec == WORKTREE:
        changed = [ln for ln in git(repo, "status", "--porcelain", "--untracked-files=all").splitlines() if ln]
        title = f"the working tree {repo} (on {short_title(repo, 'HEAD', 40)}; {len(changed)} files changed or new)"
        return Revision(side, spec, None, title, repo)
    commit = git(repo, "rev-parse", "--verify", "--end-of-options", f"{spec}^{{commit}}")
    dest = work / f"tree-{side}"
    dest.mkdir()
    archive = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", commit], stdout=subprocess.PIPE)
    assert archive.stdout is not None
    tar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True, check=False)
    archive.stdout.close()
    if archive.wait() != 0 or tar.returncode != 0:
        raise SystemExit(f"cannot extract {spec} ({commit[:12]}) into {dest}: {tar.stderr.decode(errors='replace')}")
    return Revision(side, spec, commit, short_title(repo, commit), dest)


def verify_code(rev: Revision) -> dict[str, str]:
    """Where an interpreter started as the proxy will be imports the host and the plugin from: under ``rev.tree``."""
    files = imported_from(rev.tree)
    tree = rev.tree.resolve()
    stray = {m: f for m, f in files.items() if not Path(f).resolve().is_relative_to(tree)}
    if stray:
        raise SystemExit(f"{rev.side} = {rev.spec}: modules would not come from {tree}: {stray}")
    return files


def check_started_as(proc: Process, rev: Revision) -> None:
    """The running proxy has the working directory and ``PYTHONPATH`` that :func:`verify_code` checked."""
    cwd = Path(os.readlink(f"/proc/{proc.pid}/cwd"))
    with open(f"/proc/{proc.pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    want = tree_env(rev.tree)["PYTHONPATH"]
    got = env.get(b"PYTHONPATH", b"").decode()
    if cwd.resolve() != rev.tree.resolve() or got != want:
        raise RuntimeError(f"proxy {rev.side} runs in {cwd} with PYTHONPATH={got!r}, not {rev.tree} / {want!r}")


# -- the run -----------------------------------------------------------------------------

class AB:
    """One A/B run: check out, start, measure in rounds, summarise."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        settings = SMOKE if args.smoke else FULL
        changes = {k: v for k, v in (("rounds", args.rounds), ("seconds", args.seconds), ("warmup", args.warmup))
                   if v is not None}
        self.settings = dataclasses.replace(settings, **changes)
        if self.settings.rounds < 1 or self.settings.seconds <= 0:
            raise SystemExit("--rounds must be at least 1 and --seconds positive")
        self.work = Path(tempfile.mkdtemp(prefix="hulumanage-ab-"))
        self.gateway_cores, self.load_cores, self.pinning = plan_cores(not args.no_pin)

    def say(self, message: str) -> None:
        """Progress on stderr."""
        if not self.args.quiet:
            print(f"[ab] {message}", file=sys.stderr, flush=True)

    async def run(self) -> dict[str, Any]:
        """Check out both revisions, start the upstream and both proxies, measure every round."""
        s = self.settings
        if self.load_cores:
            os.sched_setaffinity(0, self.load_cores)
        repo = repository()
        revisions = [checkout(repo, spec, side, self.work) for side, spec in zip(SIDES, self.args.revisions)]
        for rev in revisions:
            rev.imported = verify_code(rev)
            self.say(f"{rev.side} = {rev.spec}: {rev.title}; hulumanage from {rev.imported['hulumanage']}, "
                     f"proxy_plugin from {rev.imported['proxy_plugin']}")
        self.say(self.pinning)
        started = time.monotonic()
        results: dict[str, Any] = {
            "environment": self.environment(repo), "settings": dataclasses.asdict(s),
            "revisions": {rev.side: rev.as_json() for rev in revisions}, "rounds": [],
            "sections": {"A": self.args.sections_a, "B": self.args.sections_b},
        }
        upstream, ports = start_upstream(self.work, self.load_cores, s.chunks, s.gap_ms)
        proxies: list[Process] = []
        try:
            meter = Meter(upstream, self.gateway_cores, self.load_cores, precise_cpu=True)
            targets: list[tuple[str, int, Process | None]] = [("direct", ports[0], None)]
            sections = {"A": self.args.sections_a, "B": self.args.sections_b}
            for rev in revisions:
                proc, port = start_proxy(self.work, self.gateway_cores, ports, tree=rev.tree, name=f"proxy-{rev.side}",
                                         sections=sections.get(rev.side))
                proxies.append(proc)
                check_started_as(proc, rev)
                targets.append((rev.side, port, proc))
            kinds = {k: (body, None if k == "json" else s.chunks + 2) for k, body in PAIRED_BODIES.items()}
            self.say(f"warming up: {s.warmup:g} s per target and kind")
            await paired_round(meter, kinds, targets, s.warmup)
            for i in range(s.rounds):
                order = targets if i % 2 == 0 else targets[::-1]
                rows = await paired_round(meter, kinds, order, s.seconds)
                results["rounds"].append({"round": i + 1, "order": [name for name, _, _ in order], "rows": rows})
                self.say(f"round {i + 1}/{s.rounds} ({' '.join(n for n, _, _ in order)}): " + progress(rows))
        finally:
            for proc in proxies:
                proc.stop()
            upstream.stop()
        results["duration_s"] = time.monotonic() - started
        results["metrics"] = summarise(results["rounds"])
        results["health"] = health(results["rounds"])
        return results

    def environment(self, repo: Path) -> dict[str, Any]:
        """What the figures were measured on."""
        cpu = ""
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
        except OSError:
            pass
        return {
            "python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cores": len(os.sched_getaffinity(0)), "pinning": self.pinning,
            "uvloop": importlib.util.find_spec("uvloop") is not None, "repository": str(repo),
            "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python -m bench.ab " + " ".join(sys.argv[1:]),
        }


# -- summary -----------------------------------------------------------------------------

def summarise(rounds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric: every round's figure for A and B, their medians, B/A and the per-round B/A."""
    out: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        a = [m.value(r["rows"], "A") for r in rounds]
        b = [m.value(r["rows"], "B") for r in rounds]
        a_med, b_med = statistics.median(a), statistics.median(b)
        out[m.key] = {
            "label": m.label, "unit": m.unit, "A": a, "B": b, "A_median": a_med, "B_median": b_med,
            "ratio": b_med / a_med if a_med else math.nan,
            "round_ratios": [y / x if x else math.nan for x, y in zip(a, b)],
        }
    return out


def health(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Errors, incomplete streams, and the most CPU anything else took on the benchmark's cores during a phase."""
    rows = [row for r in rounds for per_kind in r["rows"].values() for row in per_kind.values()]
    out: dict[str, Any] = {
        "errors": sum(row["errors"] for row in rows),
        "bad_streams": sum(row.get("stream", {}).get("bad_streams", 0) for row in rows),
    }
    for key in ("foreign_gateway_core", "foreign_load_cores", "foreign_all_cores"):
        values = [row[key] for row in rows if key in row]
        if values:
            out[f"{key}_max"] = max(values)
            out[f"{key}_median"] = statistics.median(values)
    direct: dict[str, float] = {}
    for kind in PAIRED_BODIES:
        direct[kind] = statistics.median(headline(kind, r["rows"][kind]["direct"])["p50"] for r in rounds)
    out["direct_p50_ms"] = direct
    return out


def progress(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """One round in a line: added latency (ms) and CPU per request (µs) of A and B, per kind."""
    parts = []
    for kind, short in (("json", "JSON"), ("stream", "stream"), ("stream_nogap", "no-gap")):
        added, cpu = (next(m for m in METRICS if m.kind == kind and m.figure == f) for f in ("added_p50", "cpu"))
        parts.append(f"{short} +{added.value(rows, 'A'):.3f}/+{added.value(rows, 'B'):.3f} ms "
                     f"{cpu.value(rows, 'A'):.0f}/{cpu.value(rows, 'B'):.0f} µs")
    return "A/B: " + ", ".join(parts)


def fmt(value: float, unit: str) -> str:
    """A figure as the table shows it: ms to the microsecond, µs and ratios as they read best."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.0f}" if unit == "µs" else f"{value:.3f}"


def spread(values: Sequence[float], unit: str) -> str:
    """``min-max`` of the per-round figures."""
    finite = [v for v in values if math.isfinite(v)]
    return f"{fmt(min(finite), unit)}-{fmt(max(finite), unit)}" if finite else "n/a"


def table(results: Mapping[str, Any]) -> list[str]:
    """The A/B table in Markdown, preceded by what A and B are."""
    revs, s = results["revisions"], results["settings"]
    a, b = revs["A"], revs["B"]
    lines = [f"A = {a['spec']}: {a['title']}", f"B = {b['spec']}: {b['title']}", "",
             (f"{len(results['rounds'])} rounds, {s['seconds']:g} s per target and kind, concurrency 1, "
              "direct / A / B alternating in order; medians over the rounds."), "",
             f"| metric | A ({a['spec']}) | B ({b['spec']}) | B/A | B/A by round | A by round | B by round |",
             "|---|---|---|---|---|---|---|"]
    for m in METRICS:
        row = results["metrics"][m.key]
        lines.append(f"| {m.label} ({m.unit}) | {fmt(row['A_median'], m.unit)} | {fmt(row['B_median'], m.unit)} | "
                     f"{fmt(row['ratio'], 'x')} | {spread(row['round_ratios'], 'x')} | "
                     f"{spread(row['A'], m.unit)} | {spread(row['B'], m.unit)} |")
    h = results["health"]
    direct = ", ".join(f"{KIND_NAMES[k]} {v:.3f}" for k, v in h["direct_p50_ms"].items())
    lines += ["", f"Direct to the upstream, p50 (ms; TTFB for streams): {direct}."]
    noise = [f"{label} {100 * h[key]:.0f}% (median {100 * h[key.replace('_max', '_median')]:.0f}%)"
             for key, label in (("foreign_gateway_core_max", "gateway core"), ("foreign_load_cores_max", "load core"),
                                ("foreign_all_cores_max", "all cores")) if key in h]
    lines.append(f"Other CPU during a phase, at most: {', '.join(noise)}. Errors {h['errors']}, "
                 f"incomplete streams {h['bad_streams']}.")
    return lines


def write(results: Mapping[str, Any], out: Path) -> list[Path]:
    """``ab.json`` (everything, every round) and ``ab.md`` (the table) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    env = results["environment"]
    raw = out / "ab.json"
    raw.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = out / "ab.md"
    head = [f"# A/B: {results['revisions']['A']['spec']} vs {results['revisions']['B']['spec']}", "",
            f"`{env['command']}`, {env['started']}, Python {env['python']}, {env['cpu']}; {env['pinning']}.", ""]
    code = ["", "Code: " + "; ".join(f"{side} from `{Path(rev['imported']['proxy_plugin']).parent.parent}`"
                                     for side, rev in results["revisions"].items()) + "."]
    md.write_text("\n".join(head + table(results) + code) + "\n")
    return [raw, md]


def _sections(text: str) -> dict[str, Any]:
    """A JSON object of config sections (argparse type)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object of config sections")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs=2, metavar="REV",
                        help=f"two git revisions (A then B); {WORKTREE}: the working tree as it is")
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds (default {FULL.rounds}; smoke {SMOKE.rounds})")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"seconds per target and kind in a round (default {FULL.seconds:g}; smoke {SMOKE.seconds:g})")
    parser.add_argument("--warmup", type=float, default=None,
                        help=f"seconds per target and kind before the first round (default {FULL.warmup:g})")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE.rounds} rounds of {SMOKE.seconds:g} s (CI)")
    parser.add_argument("--out", type=Path, default=None, help="write ab.json and ab.md into this folder")
    parser.add_argument("--sections-a", type=_sections, default=None, metavar="JSON",
                        help='proxy config sections for A, over the benchmark\'s (e.g. \'{"metrics": {"enabled": false}}\'): '
                             "the same revision twice with two configs measures what a setting costs")
    parser.add_argument("--sections-b", type=_sections, default=None, metavar="JSON", help="the same for B")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the A/B, print the table, write the files."""
    args = parse_args(argv)
    install_uvloop()
    ab = AB(args)
    try:
        results = asyncio.run(ab.run())
    except BaseException:
        print(f"[ab] failed; the trees and the processes' logs are in {ab.work}", file=sys.stderr)
        raise
    shutil.rmtree(ab.work, ignore_errors=True)
    print("\n".join(table(results)))
    if args.out is not None:
        for path in write(results, args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
