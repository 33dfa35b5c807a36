"""PNG plots with matplotlib (Agg): per scenario, traffic share, cumulative cost and rolling success; grades.

matplotlib is the optional extra ``sim`` (``pip install hulumanage-proxy[sim]``); without it
:func:`available` is False and the command says so and writes the rest.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proxy_plugin.sim.runner import ORACLE, ScenarioRun

BUCKETS = 60


def available() -> bool:
    """Whether matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def _bucket_of(run: ScenarioRun) -> tuple[list[int], float]:
    end = run.draws[-1].arrival if run.draws else 1.0
    width = end / BUCKETS or 1.0
    return [min(BUCKETS - 1, int(r.arrival / width)) for r in run.draws], width


def scenario_plot(run: ScenarioRun, path: Path) -> None:
    """Share of traffic per provider over time (one panel per strategy), cumulative cost, rolling success."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(run.results)
    providers = [p.name for p in run.scenario.providers]
    buckets, width = _bucket_of(run)
    minutes = [(b + 0.5) * width / 60 for b in range(BUCKETS)]
    fig, axes = plt.subplots(len(names) + 2, 1, figsize=(9, 2.0 * (len(names) + 2)), sharex=True)
    for ax, name in zip(axes, names, strict=False):
        result = run.results[name]
        counts = [[0] * BUCKETS for _ in providers]
        totals = [0] * BUCKETS
        for i, b in enumerate(buckets):
            totals[b] += 1
            if result.provider[i] >= 0:
                counts[result.provider[i]][b] += 1
        shares = [[c / t if t else 0.0 for c, t in zip(row, totals, strict=True)] for row in counts]
        ax.stackplot(minutes, *shares, labels=providers)
        ax.set_ylim(0, 1)
        ax.set_ylabel(name, fontsize=8)
    axes[0].legend(loc="upper right", fontsize=7)
    axes[0].set_title(f"{run.scenario.name}: share of requests answered by each provider")
    cost_ax, ok_ax = axes[-2], axes[-1]
    for name in names:
        result = run.results[name]
        cum, total = [], 0.0
        ok = [0] * BUCKETS
        seen = [0] * BUCKETS
        per_bucket = [0.0] * BUCKETS
        for i, b in enumerate(buckets):
            per_bucket[b] += result.cost[i]
            seen[b] += 1
            ok[b] += result.ok[i]
        for c in per_bucket:
            total += c
            cum.append(total)
        style: dict[str, Any] = {"linestyle": "--", "color": "black"} if name == ORACLE else {}
        cost_ax.plot(minutes, cum, label=name, **style)
        ok_ax.plot(minutes, [o / s if s else 1.0 for o, s in zip(ok, seen, strict=True)], label=name, **style)
    budget = run.results[ORACLE].budget
    if budget is not None:
        cost_ax.axhline(budget, color="red", linewidth=1, label="budget")
    cost_ax.set_ylabel("cumulative $", fontsize=8)
    cost_ax.legend(loc="upper left", fontsize=6, ncol=3)
    ok_ax.set_ylabel("success rate", fontsize=8)
    ok_ax.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def grades_plot(runs: Sequence[ScenarioRun], path: Path) -> None:
    """Per strategy, its grade in each scenario (grouped bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(runs[0].figures) if runs else []
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(runs))
    for k, run in enumerate(runs):
        xs = [i + k * width for i in range(len(strategies))]
        ax.bar(xs, [run.figures[s]["grade"] for s in strategies], width, label=run.scenario.name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(strategies))], strategies, fontsize=8)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("grade")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write(out: Path, runs: Sequence[ScenarioRun]) -> list[str]:
    """Every plot into ``out``; returns the file names written."""
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for run in runs:
        name = f"scenario_{run.scenario.name}.png"
        scenario_plot(run, out / name)
        names.append(name)
    if runs:
        grades_plot(runs, out / "grades.png")
        names.append("grades.png")
    return names
