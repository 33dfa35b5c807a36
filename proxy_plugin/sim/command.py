"""``hulumanage simulate``: the command's flags and its run (registered by the plugin's ``register_commands``)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from proxy_plugin.routing.registry import NAMES as STRATEGIES
from proxy_plugin.sim import scenarios

HELP = "simulate routing strategies on virtual time against scripted providers (no config, no network)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scenario``, ``--strategy``, ``--seed``, ``--requests``, ``--out``."""
    parser.add_argument("--scenario", default="all", choices=(*scenarios.NAMES, "all"),
                        help="a scenario, or all of them (default)")
    parser.add_argument("--strategy", action="append", choices=STRATEGIES, metavar="NAME",
                        help=f"a strategy to run (repeatable; default: all of {', '.join(STRATEGIES)}); "
                             "the oracle always runs")
    parser.add_argument("--seed", type=int, default=1, help="the seed every draw comes from (default 1)")
    parser.add_argument("--requests", type=int, default=10_000,
                        help="requests per scenario (default 10000: an hour of traffic)")
    parser.add_argument("--out", type=Path, default=Path("sim-results"),
                        help="directory for results.json, report.md and the plots (default ./sim-results)")


class _Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()

    def __call__(self, scenario: str, strategy: str) -> None:
        self.done += 1
        filled = int(30 * self.done / self.total)
        text = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {scenario} x {strategy}"
        if self.tty:
            sys.stderr.write("\r" + text.ljust(78))
            if self.done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def run(options: argparse.Namespace, pm: Any) -> int:
    """Run the simulation; print the tables; write the files."""
    from proxy_plugin.sim import plots, report
    from proxy_plugin.sim.runner import run_all

    if options.requests < 10:
        print("hulumanage simulate: error: --requests must be at least 10", file=sys.stderr)
        return 2
    names = scenarios.NAMES if options.scenario == "all" else (options.scenario,)
    strategies = tuple(dict.fromkeys(options.strategy or STRATEGIES))
    progress = _Progress(len(names) * (len(strategies) + 1))
    started = time.perf_counter()
    quiet = logging.getLogger("proxy_plugin")  # simulated failures are expected: no line per 503
    level = quiet.level
    quiet.setLevel(max(logging.WARNING, level))
    try:
        runs = run_all(names, strategies, options.seed, options.requests, progress)
    finally:
        quiet.setLevel(level)
    elapsed = time.perf_counter() - started
    for r in runs:
        print(report.table(r))
        print()
    written: list[str] = []
    if plots.available():
        written = plots.write(options.out, runs)
    else:
        print("plots skipped: matplotlib is not installed (pip install 'hulumanage-proxy[sim]')", file=sys.stderr)
    timing = {"seconds": round(elapsed, 2), "scenarios": list(names), "strategies": list(strategies),
              "requests": options.requests}
    report.write(options.out, runs, options.seed, options.requests, timing, written)
    print(f"simulated {len(names)} scenario(s) x {len(strategies)} strategies + oracle in {elapsed:.1f}s; "
          f"wrote {options.out}/results.json, report.md" + (f" and {len(written)} plots" if written else ""))
    return 0
