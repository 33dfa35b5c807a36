"""The scale run keeps working: ``python -m bench.scale --smoke`` writes its table.

One and two replicas of the real server on one real ``redis-server``, for a second per
phase. Speed is never asserted; rate-limit sharing is: through Redis the replicas together
admit exactly the limit, and with per-process state each admits it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_scale_smoke_reports_throughput_and_shared_limits(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.scale", "--smoke", "--quiet", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"bench.scale failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    results = json.loads((tmp_path / "scale.json").read_text())
    limit = results["settings"]["rpm"]
    assert [r["replicas"] for r in results["runs"]] == [1, 2]
    for run in results["runs"]:
        n, throughput, shared, local = run["replicas"], run["throughput"], run["shared"], run["local"]
        assert throughput["errors"] == 0 and throughput["rps"] > 0
        assert 0 < throughput["latency_ms"]["p50"] <= throughput["latency_ms"]["p99"]
        assert run["times_down"] == 0 and shared["times_down"] == 0
        assert shared["offered"] > n * limit  # more offered than even per-replica limits let through
        assert shared["admitted"] == limit and shared["other_errors"] == 0
        assert shared["refused_429"] == shared["offered"] - limit
        assert local["admitted"] == n * limit and local["other_errors"] == 0
    table = (tmp_path / "scale.md").read_text()
    assert f"| {limit:,} / {limit:,} (" in table
    assert table.count("\n| 1 |") == 1 and table.count("\n| 2 |") == 1
