"""The A/B tool keeps working: ``python -m bench.ab --smoke HEAD WORKTREE`` runs both and reports.

It runs the real thing (a revision extracted with ``git archive``, the working tree, two
proxies as subprocesses, the fake upstream, the load generator) for two rounds of a
fraction of a second. Speed is never asserted, not even that the proxy is slower than the
direct path: only that both revisions are named, each proxy ran its own tree's code,
every figure is there and finite (and positive where it is not a difference), and no
request failed.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 2  # --smoke
KINDS = {"json", "stream", "stream_nogap"}


def in_git_checkout() -> bool:
    """The tests run from a git working tree with a HEAD commit (not from an unpacked archive)."""
    if shutil.which("git") is None:
        return False
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "HEAD"], capture_output=True, check=False)
    return proc.returncode == 0


pytestmark = pytest.mark.skipif(not in_git_checkout(), reason="needs a git checkout with a HEAD commit")


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_smoke_ab_of_head_and_the_working_tree(tmp_path: Path) -> None:
    out = tmp_path / "ab"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ab", "--smoke", "HEAD", "WORKTREE", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )
    assert proc.returncode == 0, f"bench.ab failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()

    results = json.loads((out / "ab.json").read_text())
    metrics = results["metrics"]
    assert {m.split("_")[0] for m in metrics} == {"json", "stream", "nogap"} and len(metrics) >= 9

    # both revisions named, on the terminal and in ab.md, with a row for every metric
    md = (out / "ab.md").read_text()
    for text in (proc.stdout, md):
        assert "A = HEAD: " + head in text and "B = WORKTREE: the working tree" in text
        assert "| metric | A (HEAD) | B (WORKTREE) | B/A |" in text
        for row in metrics.values():
            assert f"| {row['label']} ({row['unit']}) |" in text
        assert "n/a" not in text
    assert "round 1/2" in proc.stderr and "round 2/2" in proc.stderr  # progress lines

    revisions = results["revisions"]
    assert revisions["A"]["spec"] == "HEAD" and revisions["A"]["commit"].startswith(head)
    assert revisions["B"]["spec"] == "WORKTREE" and revisions["B"]["commit"] is None
    # each proxy ran its own tree: A from the extracted commit, B from this working tree
    assert Path(revisions["B"]["tree"]) == ROOT
    assert Path(revisions["A"]["tree"]) != ROOT
    for side in ("A", "B"):
        tree = Path(revisions[side]["tree"])
        imported = revisions[side]["imported"]
        assert set(imported) >= {"hulumanage", "proxy_plugin"}
        assert all(Path(f).is_relative_to(tree) for f in imported.values()), (side, imported)
    assert not Path(revisions["A"]["tree"]).exists()  # the extracted tree was a temporary one, removed

    # every round, every kind, every target; nothing failed
    rounds = results["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert rounds[0]["order"] == ["direct", "A", "B"] and rounds[1]["order"] == ["B", "A", "direct"]
    for r in rounds:
        assert set(r["rows"]) == KINDS
        for kind, rows in r["rows"].items():
            assert set(rows) == {"direct", "A", "B"}
            for target, row in rows.items():
                assert row["errors"] == 0 and row["requests"] > 0, (kind, target, row)
                if kind != "json":
                    assert row["stream"]["bad_streams"] == 0
                    assert row["stream"]["events_per_stream"] == results["settings"]["chunks"] + 2
                if target != "direct":
                    assert finite(row["gateway_cpu_us_per_req"]) and row["gateway_cpu_us_per_req"] > 0
    assert results["health"]["errors"] == 0 and results["health"]["bad_streams"] == 0

    # every metric: one figure per round and side, medians and ratios finite; positive unless a difference
    for key, row in metrics.items():
        assert len(row["A"]) == len(row["B"]) == ROUNDS
        figures = [*row["A"], *row["B"], row["A_median"], row["B_median"]]
        assert all(finite(v) for v in figures), (key, row)
        if "_added_" not in key:  # a difference (proxy - direct) could be anything on a noisy machine
            assert all(v > 0 for v in figures), (key, row)
            assert finite(row["ratio"]) and row["ratio"] > 0
