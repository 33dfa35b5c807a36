"""The benchmark keeps working: ``python -m bench.run --smoke`` writes a complete report.

It runs the real thing (fake upstream, the proxy as a subprocess, the load generator)
for a fraction of a second per phase. Speed is never asserted: only that every row is
there, every figure is a positive finite number, and the relay's behaviour holds (no
errors, every stream complete with its events passed one for one).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ["python", *(["wrk"] if shutil.which("wrk") else [])]


def run_smoke(out: Path, *extra: str) -> dict[str, Any]:
    """Run the smoke benchmark into ``out``; return results.json."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--quiet", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=100, check=False,
    )
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads((out / "results.json").read_text())


def positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_latency(latency: dict[str, float]) -> None:
    assert all(positive(latency[k]) for k in ("p50", "p90", "p99", "max", "mean")), latency
    assert latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"], latency


@pytest.mark.parametrize("engine", ENGINES)
def test_smoke_run_reports_every_figure(tmp_path: Path, engine: str) -> None:
    results = run_smoke(tmp_path, "--engine", engine, "--litellm-venv", str(tmp_path / "no-such-venv"))
    settings = results["settings"]
    targets = results["targets"]
    # LiteLLM skipped cleanly (its venv is absent); the proxy with the gateway controls on is a target of its own
    assert set(targets) - {"direct-xcore"} == {"direct", "proxy", "proxy-controls"}
    assert any("LiteLLM not compared" in note for note in results["notes"])
    assert results["environment"]["engine"] == engine
    events = settings["chunks"] + 2

    xcore = targets.get("direct-xcore")  # only when the machine has two cores to pin to
    if xcore is not None:
        assert [r["concurrency"] for r in xcore["closed"] + xcore["stream"]] == [1, 1]
        check_latency(xcore["closed"][0]["latency_ms"])
        assert xcore["stream"][0]["stream"]["events_per_stream"] == events

    for name in ("direct", "proxy", "proxy-controls"):  # no errors: the controls never reject here
        target = targets[name]
        closed = target["closed"]
        assert [r["concurrency"] for r in closed] == settings["concurrencies"]
        for row in closed:
            assert row["engine"] == engine
            assert row["errors"] == 0, (name, row)
            assert positive(row["rps"]) and positive(row["requests"])
            check_latency(row["latency_ms"])
        assert positive(target["max_rps"])
        # a rate is measured, or skipped with a reason when above what the target can do
        assert len(target["rates"]) + len(target["skipped"]) == len(settings["rates"])
        for row in target["rates"]:
            assert row["errors"] == 0 and positive(row["rps"])
            check_latency(row["latency_ms"])
        assert [r["concurrency"] for r in target["stream"]] == settings["stream_concurrencies"]
        for row in target["stream"]:
            stream = row["stream"]
            assert row["errors"] == 0 and stream["bad_streams"] == 0, (name, row)
            assert stream["events_per_stream"] == events  # every event relayed...
            assert stream["multi_event_chunks"] == 0      # ...one for one, never several in one HTTP chunk
            check_latency(stream["ttfb_ms"])
            check_latency(stream["inter_chunk_ms"])

    proxy = targets["proxy"]
    for row in proxy["closed"] + proxy["stream"]:
        assert positive(row["gateway_cpu_us_per_req"]) and positive(row["gateway_core_busy"])
    points = proxy["memory"]["points"]
    assert [p["requests"] for p in points] == [0, *settings["memory_marks"]]
    assert all(positive(p["rss_mb"]) and p["peak_rss_mb"] >= p["rss_mb"] for p in points)
    assert proxy["memory"]["errors"] == 0
    assert positive(proxy["final_memory"]["peak_rss_mb"])

    paired = results["paired"]  # direct and proxy alternating: one figure per round and kind
    for kind in ("json", "stream"):
        for pct in ("p50", "p99"):
            figures = paired[kind][f"added_{pct}"]
            assert len(figures) == settings["paired_rounds"] and all(math.isfinite(f) for f in figures)
            controls = paired["controls"][kind][f"added_{pct}"]  # the controls minus the plain proxy, same rounds
            assert len(controls) == settings["paired_rounds"] and all(math.isfinite(f) for f in controls)

    report = (tmp_path / "report.md").read_text()
    check_redis_target(results, report)
    assert f"(median of {settings['paired_rounds']} paired rounds)" in report.split("## Against the targets")[1]
    for heading in ("## Paired rounds", "## Against the targets", "## Non-streaming, fixed concurrency", "## Non-streaming, fixed rate",
                    "## Streaming", "## Memory", "## The load generator's own ceiling"):
        assert heading in report
    for name in ("direct", "proxy"):
        for c in settings["concurrencies"]:
            assert f"| {name} | {c} |" in report
    assert "| proxy | 1 |" in report.split("## Streaming")[1]
    assert "n/a" not in report.split("## Against the targets")[1].split("##")[0]
    assert "gateway controls on: added latency over the plain proxy" in report
    assert "throughput with the gateway controls on" in report
    if importlib.util.find_spec("matplotlib") is not None:
        png = tmp_path / "overhead.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_redis_target(results: dict[str, Any], report: str) -> None:
    """Issue 17's row: measured (paired with the in-memory controls) when redis-server is installed, else skipped."""
    targets_table = report.split("## Against the targets")[1].split("##")[0]
    row = next(line for line in targets_table.splitlines() if "Redis adds <= 0.3 ms p50 over in-memory controls" in line)
    redis = results["redis"]
    if shutil.which("redis-server") is None:
        assert "redis-server is not on PATH" in redis["skipped"] and row.endswith("| skipped |")
        return
    rounds = results["settings"]["paired_rounds"]
    for kind in ("json", "stream"):
        for pct in ("p50", "p99"):
            figures = redis["paired"][kind][f"added_{pct}"]
            assert len(figures) == rounds and all(math.isfinite(f) for f in figures)
    assert redis["times_down"] == 0  # every request of the Redis target went through Redis
    for name in ("proxy-controls", "proxy-controls-redis"):
        figures = redis["throughput"]["by_target"][name]
        assert len(figures["rps"]) == rounds and all(positive(v) for v in figures["rps"])
        assert sum(figures["errors"]) == 0
    assert all(positive(v) for v in redis["throughput"]["by_target"]["proxy-controls-redis"]["redis_cpu_us_per_req"])
    assert "## Controls with their state in Redis (issue 17)" in report
