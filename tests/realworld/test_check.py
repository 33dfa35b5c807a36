"""``hulumanage check``: a providers file validated as startup does, summarized, probed; run as a user runs it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import yaml
from support.harness import EXE
from support.helpers import entry

from hulumanage.sim import FakeProvider, server_error

KEY_A, KEY_B = "sk-check-key-aaaaaaaaaaaa", "sk-check-key-bbbbbbbbbbbb"
TIMEOUT = 30


async def hulumanage(env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    """Run ``hulumanage *args`` without blocking the loop (the fake providers answer on it)."""
    assert EXE, "the hulumanage console script is not installed (pip install -e .)"
    proc = await asyncio.create_subprocess_exec(EXE, *args, env=dict(env), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def test_a_valid_file_exits_0_with_a_summary_and_no_secret(tmp_path: Path, env: dict[str, str]) -> None:
    config = write(tmp_path / "p.yaml", {
        "providers": [
            {"name": "primary-one", "base_url": "https://user:hunter2pass@llm.example.com/v1?api-version=2024-06-01",
             "api_key": KEY_A, "weight": 3, "max_concurrent": 8, "model_map": {"gpt-4o-mini": "m1", "gpt-4o": "m2"},
             "headers": {"X-Tenant-Token": "tenant-secret-value"}, "timeouts": {"request": 40}},
            {"name": "backup", "base_url": "http://127.0.0.1:9/v1", "api_key": "${CHECK_KEY_B}", "fallback_only": True},
        ],
        "routing": {"strategy": "least_latency"},
        "queue": {"max_concurrent": 12, "timeout": 3},
    })
    code, out, err = await hulumanage({**env, "CHECK_KEY_B": KEY_B}, "check", "--proxy-config", str(config))
    assert code == 0, out + err
    assert "valid: 2 providers, strategy least_latency" in out
    assert "primary-one: https://llm.example.com/v1" in out
    assert "weight 3, primary, max_concurrent 8, model_map 2 entries" in out
    assert "timeouts: connect 5 s, request 40 s" in out
    assert "backup: http://127.0.0.1:9/v1" in out and "fallback only" in out
    assert "queue: max_concurrent 12, timeout 3 s" in out
    assert "circuit breaker: opens after 5 consecutive failed requests or 50% failures, weighed by the time" in out
    both = out + err
    for secret in (KEY_A, KEY_B, "hunter2pass", "tenant-secret-value", "api-version", "Bearer"):
        assert secret not in both


async def test_an_invalid_file_exits_2_with_the_startup_error(tmp_path: Path, env: dict[str, str]) -> None:
    config = write(tmp_path / "bad.yaml", {"providers": [{"name": "a", "base_ur": "http://127.0.0.1:9/v1",
                                                          "api_key": KEY_A}]})
    code, out, err = await hulumanage(env, "check", "--proxy-config", str(config))
    assert code == 2
    assert f"hulumanage: error: {config}: providers[0].base_ur: unknown key (did you mean 'base_url'?)" in err
    assert KEY_A not in out + err and "Traceback" not in err

    unset = write(tmp_path / "unset.yaml", {"providers": [{"name": "a", "base_url": "http://127.0.0.1:9/v1",
                                                           "api_key": "${CHECK_UNSET_KEY}"}]})
    code, out, err = await hulumanage(env, "check", "--proxy-config", str(unset))
    assert code == 2 and "providers[0].api_key" in err and "CHECK_UNSET_KEY" in err


async def test_no_file_exits_2_and_says_where_it_looked(env: dict[str, str]) -> None:
    code, out, err = await hulumanage(env, "check")
    assert code == 2
    assert "no providers file found" in err and str(Path(env["HOME"]) / ".hulumanage" / "proxy_config.yaml") in err
    assert out == ""


async def test_probe_exits_1_and_names_the_provider_that_did_not_answer(tmp_path: Path, env: dict[str, str]) -> None:
    async with FakeProvider("up", api_key=KEY_A, models=("m1", "m2", "m3")) as up, \
            FakeProvider("broken", api_key=KEY_B) as broken:
        broken.set_models_status(503)
        config = write(tmp_path / "p.yaml", {"providers": [entry(up), entry(broken), entry("gone")]})
        code, out, err = await hulumanage(env, "check", "--proxy-config", str(config), "--probe")
        assert code == 1, out + err
        assert "  ok    up: 200, 3 models" in out
        assert "  FAIL  broken: health check answered 503" in out
        assert "  FAIL  gone: health check: connection refused" in out
        assert "2 providers did not answer: broken, gone" in out
        # the probe used each provider's own key
        assert [s.headers.get("Authorization") for s in up.requests] == [f"Bearer {KEY_A}"]
        assert KEY_A not in out + err and KEY_B not in out + err


async def test_probe_exits_0_when_every_provider_answers(tmp_path: Path, env: dict[str, str]) -> None:
    async with FakeProvider("a", api_key=KEY_A) as a, FakeProvider("b", api_key=KEY_B) as b:
        b.script(server_error(503))  # chat behaviour: the probe never sends a completion
        config = write(tmp_path / "p.yaml", {"providers": [entry(a), entry(b)]})
        code, out, err = await hulumanage(env, "check", "--proxy-config", str(config), "--probe")
        assert code == 0, out + err
        assert "  ok    a: 200, 2 models" in out and "  ok    b: 200, 2 models" in out
        assert "every provider answered (2)" in out
        assert a.chat_requests() == [] and b.chat_requests() == []
