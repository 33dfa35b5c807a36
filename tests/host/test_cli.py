"""The ``hulumanage`` command as a user runs it: a subprocess with HOME in a temporary directory.

Startup errors must exit with status 2 quickly and say what to do; a real server started
on a free port answers, logs its routing decisions at DEBUG without any key, and stops
cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import openai
import pytest
import yaml
from support.harness import EXE, free_port, serving, write_config
from support.helpers import USER, entry

from hulumanage.sim import FakeProvider

TIMEOUT = 20


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of the command: an empty HOME, no proxy config or log level from the outside."""
    home = tmp_path / "home"
    home.mkdir()
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HULUMANAGE_PROXY_CONFIG", "HULUMANAGE_LOG_LEVEL", "HULUMANAGE_LOAD_PLUGINS")
    }
    environ["HOME"] = str(home)
    return environ


def assert_one_error_line(stderr: str) -> str:
    """A startup failure is one ``hulumanage: error: ...`` line: no traceback, no leaked-resource noise."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hulumanage: error: "), stderr
    return lines[0]


def run(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``hulumanage args`` to completion (short timeout)."""
    assert EXE, "the hulumanage console script is not installed (pip install -e .)"
    return subprocess.run([EXE, *args], env=dict(env), capture_output=True, text=True, timeout=TIMEOUT, check=False)


def test_help_lists_the_proxy_flag(env) -> None:
    result = run(["--help"], env)
    assert result.returncode == 0
    assert "--proxy-config" in result.stdout
    assert "--approach" in result.stdout


def test_approach_proxy_without_a_config_exits_2_saying_where_it_looked(env) -> None:
    started = time.monotonic()
    result = run(["--approach", "proxy", "--port", str(free_port())], env)
    assert time.monotonic() - started < 10
    assert result.returncode == 2
    err = result.stderr
    assert str(Path(env["HOME"]) / ".hulumanage" / "proxy_config.yaml") in err
    assert "--proxy-config" in err
    assert "proxy_config.example.yaml" in err or "demo" in err
    assert_one_error_line(err)


def test_an_unset_variable_exits_2_naming_file_key_and_variable(env, tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(
        yaml.safe_dump(
            {"providers": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "api_key": "${HULU_TEST_UNSET_KEY_5E1}"}]}
        )
    )
    env.pop("HULU_TEST_UNSET_KEY_5E1", None)
    result = run(["--approach", "proxy", "--proxy-config", str(path), "--port", str(free_port())], env)
    assert result.returncode == 2
    err = result.stderr
    assert str(path) in err
    assert "providers[0].api_key" in err
    assert "HULU_TEST_UNSET_KEY_5E1" in err
    assert_one_error_line(err)


def test_a_misspelled_key_exits_2_naming_it(env, tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "providers": [
                    {"name": "a", "base_url": "http://127.0.0.1:9/v1"},
                    {"name": "b", "base_url": "http://127.0.0.1:9/v1", "wieght": 2},
                ]
            }
        )
    )
    result = run(["--approach", "proxy", "--proxy-config", str(path), "--port", str(free_port())], env)
    assert result.returncode == 2
    assert f"{path}: providers[1].wieght" in result.stderr
    assert "weight" in result.stderr.replace("wieght", "")
    assert_one_error_line(result.stderr)


def test_a_missing_config_file_exits_2(env, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = run(["--approach", "proxy", "--proxy-config", str(missing), "--port", str(free_port())], env)
    assert result.returncode == 2
    assert str(missing) in result.stderr and "does not exist" in result.stderr
    assert_one_error_line(result.stderr)


@pytest.fixture
async def serve(env) -> AsyncIterator:
    """Start ``hulumanage`` servers on free ports; kill whatever is left at the end."""
    async with serving(env) as start:
        yield start


async def serve_proxy_and_log(serve, tmp_path: Path, *flags: str, **sections: object) -> str:
    """Serve the proxy at DEBUG in front of a keyed fake, send one plain and one streamed
    request with a client key, stop with SIGTERM (exit 0); return the server's log."""
    provider_key, client_key = "sk-provider-cli-8d41f0e7", "sk-client-cli-c3a99b12"
    async with FakeProvider("a", api_key=provider_key) as a:
        path = write_config(tmp_path / "proxy.yaml", [entry(a)], **sections)
        server = await serve("--approach", "proxy", "--proxy-config", str(path), "--log-level", "DEBUG", *flags)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/health") as resp:
                body = await resp.json()
            assert body["proxy"]["configured"] is True and "a" in body["proxy"]["providers"]
        async with openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key=client_key, max_retries=0, timeout=TIMEOUT
        ) as client:
            reply = await client.chat.completions.create(model="gpt-4", messages=USER)
            stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert reply.choices[0].message.content == a.answer and text == a.answer
        assert [s.headers["Authorization"] for s in a.chat_requests()] == [f"Bearer {provider_key}"] * 2
        code = await server.stop()
    log = server.stderr.decode()
    assert code == 0, log
    assert provider_key not in log
    assert client_key not in log
    return log


async def test_served_proxy_answers_logs_routing_without_keys_and_stops_on_sigterm(serve, tmp_path: Path) -> None:
    log = await serve_proxy_and_log(serve, tmp_path, monitoring={"log_level": "DEBUG"})
    assert "approach=proxy" in log
    assert "route model=gpt-4" in log and "plan=['a']" in log  # the routing decision


@pytest.mark.parametrize("fast", [True, False])
async def test_no_fast_path_serves_chat_through_aiohttp(serve, tmp_path: Path, fast: bool) -> None:
    log = await serve_proxy_and_log(serve, tmp_path, *(() if fast else ("--no-fast-path",)))
    # the access log (on at DEBUG) says which server answered each chat request
    lines = [line for line in log.splitlines() if '"POST /v1/chat/completions HTTP/1.1" 200' in line]
    assert len(lines) == 2, log
    assert all(("(fast path)" in line) == fast for line in lines), lines


async def test_log_level_debug_alone_logs_the_routing_decision(serve, tmp_path: Path) -> None:
    log = await serve_proxy_and_log(serve, tmp_path)
    assert "route model=gpt-4" in log and "plan=['a']" in log


async def test_sigterm_on_an_idle_server_exits_0(serve, tmp_path: Path) -> None:
    server = await serve()  # default approach none, no proxy config: still serves
    started = time.monotonic()
    assert await server.stop() == 0
    assert time.monotonic() - started < 10


def test_python_dash_m_runs_the_same_cli(env) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hulumanage", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0 and "--proxy-config" in result.stdout


def test_a_port_in_use_exits_2_saying_so(env) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(["--port", str(port)], env)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("hulumanage: error: ")
    assert f"127.0.0.1:{port}" in line and "--port" in line
    assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr
