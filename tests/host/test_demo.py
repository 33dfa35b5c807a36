"""``hulumanage demo``: the proxy on three simulated providers, run as a new user runs it."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hulumanage.demo import fleet, report, run_demo
from hulumanage.demo.load import Progress
from hulumanage.options import parse_args
from hulumanage.plugins import get_plugin_manager
from hulumanage.sim import Profile

NAMES = ("fast-cheap", "slow-reliable", "flaky")
ROW = re.compile(r"^(?P<name>[\w-]+)\s+(?P<weight>\d+)\s+(?P<requests>\d+)\s+(?P<failures>\d+)\s+(?P<failovers>\d+)\s", re.MULTILINE)
CLIENT = re.compile(r"^client: (?P<ok>\d+)/(?P<sent>\d+) succeeded \((?P<rate>[\d.]+)%\)", re.MULTILINE)


def table(out: str) -> dict[str, dict[str, int]]:
    """The per-provider rows of the demo's table, as numbers."""
    return {m["name"]: {k: int(m[k]) for k in ("weight", "requests", "failures", "failovers")}
            for m in ROW.finditer(out)}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """``hulumanage demo --requests 60`` in a fresh process, HOME an empty directory, no network config."""
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HULUMANAGE_", "OPENAI_"))}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-m", "hulumanage", "demo", "--requests", "60", "--seed", "42"],
        check=False, capture_output=True, text=True, timeout=60, env=env, cwd=home, stdin=subprocess.DEVNULL,
    )


def test_demo_exits_0_with_every_request_answered(demo_run: subprocess.CompletedProcess[str]) -> None:
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
    client = CLIENT.search(demo_run.stdout)
    assert client, demo_run.stdout
    assert (int(client["ok"]), int(client["sent"])) == (60, 60)
    assert float(client["rate"]) == 100.0


def test_demo_table_shows_the_flaky_provider_failing_over(demo_run: subprocess.CompletedProcess[str]) -> None:
    rows = table(demo_run.stdout)
    assert set(rows) == set(NAMES), demo_run.stdout
    assert [rows[n]["weight"] for n in NAMES] == [3, 1, 2]
    # Seed 42 makes flaky fail its third request; it gets about a third of 60.
    assert rows["flaky"]["failures"] > 0
    # One attempt per provider: every flaky failure moved its request on to another provider.
    assert rows["flaky"]["failovers"] == rows["flaky"]["failures"]
    assert rows["fast-cheap"]["failures"] == rows["slow-reliable"]["failures"] == 0
    # Every request reached a provider; failovers are the extra attempts.
    assert sum(r["requests"] for r in rows.values()) == 60 + sum(r["failovers"] for r in rows.values())
    assert f"flaky failed {rows['flaky']['failures']} times" in demo_run.stdout
    assert "every one of those requests was answered by another provider" in demo_run.stdout


def test_demo_shows_progress_and_the_next_step(demo_run: subprocess.CompletedProcess[str]) -> None:
    assert "60/60 requests" in demo_run.stderr
    assert "\r" not in demo_run.stderr  # not a terminal: plain lines
    assert "hulumanage --approach proxy --proxy-config" in demo_run.stdout
    assert "proxy_config.example.yaml" in demo_run.stdout


def test_demo_output_is_clean_and_keeps_keys_secret(demo_run: subprocess.CompletedProcess[str]) -> None:
    both = demo_run.stdout + demo_run.stderr
    assert "sk-demo-" not in both  # every provider key starts so
    assert "Bearer" not in both
    for noise in ("Traceback", "Unclosed", "ResourceWarning", "INFO", "WARNING"):
        assert noise not in both, both


async def test_demo_config_points_each_provider_at_its_own_key_and_model(tmp_path: Path) -> None:
    providers = await fleet.start_providers(7)
    try:
        config = fleet.proxy_config(providers)
        path = fleet.write_config(tmp_path, config)
    finally:
        for p in providers:
            await p.close()
    assert path.stat().st_mode & 0o077 == 0  # the file holds keys: owner only
    keys = [p["api_key"] for p in config["providers"]]
    assert len(set(keys)) == 3 and all(k.startswith("sk-demo-") for k in keys)
    assert [p["base_url"] for p in config["providers"]] == [p.base_url for p in providers]
    assert [p["model_map"] for p in config["providers"]] == [{fleet.ALIAS: s.model} for s in fleet.PROVIDERS]
    assert [p.models for p in providers] == [(s.model,) for s in fleet.PROVIDERS]
    assert config["timeouts"]["request"] <= 2 and config["timeouts"]["first_token"] <= 1
    assert config["routing"]["health_check"]["enabled"] is True


async def test_demo_in_process_exits_1_when_the_providers_fail(capsys: pytest.CaptureFixture[str]) -> None:
    """Every provider answering 503: the client sees errors and the demo exits 1, closing everything."""
    broken = tuple(fleet.DemoProvider(n, Profile(error_rate=1.0), 1, f"m-{n}", "always 503") for n in NAMES)
    pm = get_plugin_manager()
    code = await run_demo(parse_args(["demo", "--requests", "12", "--concurrency", "4"], pm), pm, specs=broken)
    out = capsys.readouterr()
    assert code == 1
    client = CLIENT.search(out.out)
    assert client and (client["ok"], client["sent"]) == ("0", "12")
    assert "client errors:" in out.out
    assert "the client still saw 12 errors" in out.out
    rows = table(out.out)
    assert set(rows) == set(NAMES) and sum(r["failures"] for r in rows.values()) > 0


async def test_demo_in_process_passes_with_the_default_providers(capsys: pytest.CaptureFixture[str]) -> None:
    """The default fleet in this process (filterwarnings=error catches any unclosed session)."""
    pm = get_plugin_manager()
    code = await run_demo(parse_args(["demo", "--requests", "30", "--seed", "3"], pm), pm)
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert set(table(out.out)) == set(NAMES)


def test_demo_rejects_a_request_count_below_one(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hulumanage", "demo", "--requests", "0"], check=False,
                            capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "--requests must be at least 1" in result.stderr


# -- pure helpers ----------------------------------------------------------------------

HEALTH = {
    "fast-cheap": {"weight": 3.0, "requests": 120, "failures": 0, "failovers": 0,
                   "latency_ms": {"p50": 41.26, "p95": 58.9}, "last_error_class": None, "last_error": None},
    "flaky": {"weight": 2.0, "requests": 80, "failures": 21, "failovers": 21,
              "latency_ms": {"p50": None, "p95": None}, "last_error_class": "transient", "last_error": "timeout"},
}


def test_render_table_aligns_numbers_right_and_names_left() -> None:
    lines = report.render_table(report.provider_rows(HEALTH)).splitlines()
    assert lines[0].split() == ["provider", "weight", "requests", "failures", "failovers", "p50", "ms", "p95", "ms",
                                "last", "error"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["fast-cheap", "3", "120", "0", "0", "41", "59", "-"]
    assert lines[3].split() == ["flaky", "2", "80", "21", "21", "-", "-", "transient:", "timeout"]
    # every column starts at the same offset on every line; numbers end at their header's end
    assert lines[2].index("fast-cheap") == lines[3].index("flaky") == 0
    end = lines[0].index("requests") + len("requests")
    assert lines[2][:end].endswith("120") and lines[3][:end].endswith(" 80")


def test_percentile_and_client_summary() -> None:
    assert report.percentile([], 0.5) is None
    assert report.percentile([0.3, 0.1, 0.2], 0.5) == 0.2
    assert report.percentile([i / 100 for i in range(100)], 0.95) == 0.95
    line = report.client_summary(200, 199, [0.05] * 150 + [0.4] * 49, 3.21)
    assert line == "client: 199/200 succeeded (99.5%), latency p50 50 ms, p95 400 ms, 3.2 s in all"


def test_explain_names_the_failures_and_who_covered_them() -> None:
    first, second = report.explain(HEALTH, "flaky", 18, 3, 0, "weighted", fleet.TIMEOUTS)
    assert first == ("flaky failed 21 times (it answered 503 to 18 requests and hung on 3, cut after 1-2 s by the "
                     "timeouts); every one of those requests was answered by another provider.")
    assert "fast-cheap 3, flaky 2" in second and "21 failovers" in second
    first, _ = report.explain(HEALTH, "flaky", 21, 0, 4, "weighted", fleet.TIMEOUTS)
    assert first.endswith("the client still saw 4 errors.")
    first, _ = report.explain(HEALTH, "fast-cheap", 0, 0, 0, "weighted", fleet.TIMEOUTS)
    assert first.startswith("No provider failed")


def test_progress_redraws_one_line_on_a_terminal_and_prints_a_few_lines_otherwise() -> None:
    tty = io.StringIO()
    progress = Progress(8, tty, tty=True)
    for i in range(8):
        progress.advance(ok=i != 3)
    progress.close()
    text = tty.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.rstrip("\n").rsplit("\r", 1)[-1].startswith("[" + "#" * 24 + "] 8/8 requests  1 failed")

    plain = io.StringIO()
    progress = Progress(8, plain, tty=False)
    for _ in range(8):
        progress.advance(ok=True)
    progress.close()
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue()
    assert [line.split("]")[1].split()[0] for line in lines] == ["2/8", "4/8", "6/8", "8/8"]
