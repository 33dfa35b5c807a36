"""The simulator's outputs: the terminal table, ``results.json`` and ``report.md``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proxy_plugin.sim import grade, scenarios
from proxy_plugin.sim.runner import ORACLE, ScenarioRun

COLUMNS = ("success_rate", "p50_ms", "p99_ms", "cost_usd", "budget_usd", "overshoot_usd", "shed", "grade")
HEADS = ("strategy", "success", "p50 ms", "p99 ms", "cost $", "budget $", "over $", "shed", "grade")


def results_json(runs: Sequence[ScenarioRun], seed: int, timing: dict[str, Any]) -> dict[str, Any]:
    """The ``results.json`` document: ``scenarios`` depends only on the seed; timings go under ``run``."""
    return {
        "seed": seed,
        "scenarios": {run.scenario.name: run.figures for run in runs},
        "run": timing,
    }


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "success_rate":
        return f"{100 * value:.2f}%"
    if key in ("cost_usd", "budget_usd", "overshoot_usd"):
        return f"{value:.2f}"
    if key == "grade":
        return f"{value:.3f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def rows(run: ScenarioRun) -> list[list[str]]:
    """One row per strategy (the oracle last)."""
    names = [k for k in run.figures if k != ORACLE] + [ORACLE]
    return [[name, *(_cell(c, run.figures[name][c]) for c in COLUMNS)] for name in names]


def table(run: ScenarioRun) -> str:
    """A plain-text table of one scenario."""
    body = rows(run)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(HEADS)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [f"{run.scenario.name}: {run.scenario.description}", line(HEADS), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    return "\n".join(out)


def markdown(runs: Sequence[ScenarioRun], seed: int, requests: int, plots: Sequence[str]) -> str:
    """``report.md``: every scenario's table, the grade formula, the plots."""
    out = [f"# Routing simulation (seed {seed}, {requests} requests per scenario)", "",
           f"SLA {scenarios.SLA:g} s; grade = " + " + ".join(f"{w:.2f} x {k}" for k, w in grade.WEIGHTS.items())
           + " (see `proxy_plugin/sim/grade.py`).", ""]
    for run in runs:
        out += [f"## {run.scenario.name}", "", run.scenario.description, "",
                "| " + " | ".join(HEADS) + " |", "|" + "---|" * len(HEADS)]
        out += ["| " + " | ".join(r) + " |" for r in rows(run)]
        out.append("")
        if f"scenario_{run.scenario.name}.png" in plots:
            out += [f"![{run.scenario.name}](scenario_{run.scenario.name}.png)", ""]
    if "grades.png" in plots:
        out += ["## Grades", "", "![grades](grades.png)", ""]
    return "\n".join(out)


def write(out: Path, runs: Sequence[ScenarioRun], seed: int, requests: int, timing: dict[str, Any],
          plots: Sequence[str]) -> None:
    """Write ``results.json`` and ``report.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results_json(runs, seed, timing), indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(runs, seed, requests, plots), encoding="utf-8")
