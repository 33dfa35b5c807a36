"""Scoring a run: the figures of ``results.json`` and the grade.

The grade, in [0, 1], fixed before any run::

    grade = 0.40 * success + 0.30 * within_sla + 0.15 * budget_kept + 0.15 * adaptation

- ``success``: successful answers over all requests (shed ones count as failures);
- ``within_sla``: answers within :data:`~.scenarios.SLA` seconds over all requests;
- ``budget_kept``: 1 without a budget, else ``1 - overshoot / budget`` (at least 0);
- ``adaptation``: after each change in the scenario, the share of requests answered within
  the SLA over the next :data:`~.scenarios.ADAPT_WINDOW` seconds, relative to the oracle's
  over the same requests (at most 1), averaged over the changes; 1 without changes.
  A router that adapts in seconds loses little there; one that takes minutes loses most.
"""

from __future__ import annotations

from typing import Any

from proxy_plugin.sim.draws import Request
from proxy_plugin.sim.engine import Result
from proxy_plugin.sim.scenarios import ADAPT_WINDOW, SLA, Scenario

WEIGHTS = {"success": 0.40, "within_sla": 0.30, "budget_kept": 0.15, "adaptation": 0.15}


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _good(result: Result, i: int) -> bool:
    return result.ok[i] and result.latency[i] <= SLA


def adaptation(scenario: Scenario, draws: list[Request], result: Result, oracle: Result) -> float:
    """The adaptation term (see the module docstring)."""
    if not scenario.changes:
        return 1.0
    scores = []
    arrivals = [r.arrival for r in draws]
    for change in scenario.changes:
        window = [i for i, t in enumerate(arrivals) if change <= t < change + ADAPT_WINDOW]
        best = sum(_good(oracle, i) for i in window)
        if not window or best == 0:
            continue
        scores.append(min(1.0, sum(_good(result, i) for i in window) / best))
    return sum(scores) / len(scores) if scores else 1.0


def summarize(scenario: Scenario, draws: list[Request], result: Result, oracle: Result) -> dict[str, Any]:
    """The figures of one scenario x strategy (depend only on the seed)."""
    n = len(draws)
    latencies = sorted(lat for lat, ok in zip(result.latency, result.ok, strict=True) if ok)
    success = sum(result.ok) / n if n else 0.0
    within = sum(_good(result, i) for i in range(n)) / n if n else 0.0
    overshoot = max(0.0, result.spent - result.budget) if result.budget is not None else 0.0
    kept = 1.0 if not result.budget else max(0.0, 1.0 - overshoot / result.budget)
    adapt = adaptation(scenario, draws, result, oracle)
    parts = {"success": success, "within_sla": within, "budget_kept": kept, "adaptation": adapt}
    grade = sum(WEIGHTS[k] * v for k, v in parts.items())
    return {
        "requests": n,
        "success_rate": round(success, 6),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "cost_usd": round(result.spent, 4),
        "budget_usd": round(result.budget, 4) if result.budget is not None else None,
        "overshoot_usd": round(overshoot, 4),
        "shed": sum(result.shed),
        "within_sla": round(within, 6),
        "adaptation": round(adapt, 4),
        "grade": round(grade, 4),
    }
