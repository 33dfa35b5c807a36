"""Run scenarios x strategies: the draws once per scenario, the oracle, each strategy, the figures."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from proxy_plugin.sim import draws as draws_mod
from proxy_plugin.sim import engine, grade, scenarios
from proxy_plugin.sim.engine import Result

ORACLE = "oracle"


@dataclasses.dataclass
class ScenarioRun:
    """One scenario's world and what each strategy (and the oracle) made of it."""

    scenario: scenarios.Scenario
    draws: list[draws_mod.Request]
    results: dict[str, Result]
    figures: dict[str, dict[str, Any]]


def run_all(
    names: Sequence[str], strategies: Sequence[str], seed: int, requests: int,
    progress: Callable[[str, str], None] | None = None,
) -> list[ScenarioRun]:
    """Every scenario in ``names`` with every strategy in ``strategies`` and the oracle."""
    out = []
    for name in names:
        scenario = scenarios.build(name, requests / scenarios.RATE)
        drawn = draws_mod.draw(scenario, requests, seed)
        best = engine.oracle(scenario, drawn)
        results = {ORACLE: best}
        if progress:
            progress(name, ORACLE)
        for strategy in strategies:
            results[strategy] = engine.run_strategy(scenario, drawn, strategy, seed)
            if progress:
                progress(name, strategy)
        figures = {k: grade.summarize(scenario, drawn, r, best) for k, r in results.items()}
        out.append(ScenarioRun(scenario, drawn, results, figures))
    return out
