"""``hulumanage sim-providers``: simulated providers on their own, run as a developer runs them.

A subprocess on free ports, talked to with the official SDK directly and through the proxy:
plain answers, streams with usage, tool calls, JSON mode, a 20 MB body; SIGTERM ends it with 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import openai
import pytest
import yaml
from support.harness import EXE
from support.helpers import USER

from hulumanage.sim import DEFAULT_ANSWER

DEADLINE = 20.0
URL = re.compile(r"^  (?P<name>[\w-]+)\s+(?P<url>http://127\.0\.0\.1:\d+/v1)\s", re.MULTILINE)
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
OTHER = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


class Sims:
    """A running ``hulumanage sim-providers``: its process, what it printed, each provider's base URL."""

    def __init__(self, proc: asyncio.subprocess.Process, out: str) -> None:
        self.proc = proc
        self.out = out
        self.urls = {m["name"]: m["url"] for m in URL.finditer(out)}

    def client(self, name: str, api_key: str = "any") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.urls[name], api_key=api_key, max_retries=0, timeout=DEADLINE)


@contextlib.asynccontextmanager
async def sim_providers(env: Mapping[str, str], *args: str) -> AsyncIterator[Sims]:
    """Start ``hulumanage sim-providers --port 0 *args`` and wait for its ready line; killed if still running."""
    assert EXE, "the hulumanage console script is not installed (pip install -e .)"
    proc = await asyncio.create_subprocess_exec(EXE, "sim-providers", "--port", "0", *args, env=dict(env),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                stdin=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        out = ""
        async with asyncio.timeout(DEADLINE):
            while "Serving until Ctrl-C or SIGTERM." not in out:
                line = await proc.stdout.readline()
                assert line, f"sim-providers exited early: {out}"
                out += line.decode()
        yield Sims(proc, out)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def test_the_providers_answer_plain_streams_with_usage_tools_and_json(env: dict[str, str]) -> None:
    async with sim_providers(env, "--providers", "fast,slow") as sims:
        assert set(sims.urls) == {"fast", "slow"}
        assert "Paste into a proxy config" in sims.out
        assert yaml.safe_load(sims.out.split("checks it):\n", 1)[1].split("\n\n", 1)[0]) == {
            "providers": [{"name": n, "base_url": sims.urls[n]} for n in ("fast", "slow")]}
        async with sims.client("fast") as client:
            plain = await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
            assert plain.choices[0].message.content == DEFAULT_ANSWER

            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True,
                                                          stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_ANSWER
            assert chunks[-1].choices == [] and chunks[-1].usage is not None
            assert chunks[-1].usage.completion_tokens == len(DEFAULT_ANSWER.split())

            called = await client.chat.completions.create(model="gpt-4o-mini", messages=USER, tools=[WEATHER, OTHER])
            choice = called.choices[0]
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
            call = choice.message.tool_calls[0]
            assert call.type == "function" and call.function.name == "get_weather" and call.id
            args = json.loads(call.function.arguments)
            assert isinstance(args["city"], str) and isinstance(args["days"], int) and args["unit"] == "celsius"

            named = await client.chat.completions.create(
                model="gpt-4o-mini", messages=USER, tools=[WEATHER, OTHER],
                tool_choice={"type": "function", "function": {"name": "get_time"}})
            assert named.choices[0].message.tool_calls[0].function.name == "get_time"  # type: ignore[index]
            none = await client.chat.completions.create(model="gpt-4o-mini", messages=USER, tools=[WEATHER],
                                                        tool_choice="none")
            assert none.choices[0].finish_reason == "stop" and none.choices[0].message.content == DEFAULT_ANSWER

            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=USER, tools=[WEATHER],
                                                          stream=True)
            pieces, name, finish = [], None, None
            async for chunk in stream:
                for delta_call in chunk.choices[0].delta.tool_calls or []:
                    name = name or (delta_call.function.name if delta_call.function else None)
                    pieces.append(delta_call.function.arguments or "" if delta_call.function else "")
                finish = chunk.choices[0].finish_reason or finish
            assert name == "get_weather" and finish == "tool_calls"
            assert set(json.loads("".join(pieces))) == {"city", "days", "unit"}

            as_json = await client.chat.completions.create(model="gpt-4o-mini", messages=USER,
                                                           response_format={"type": "json_object"})
            assert json.loads(as_json.choices[0].message.content or "") == {"answer": DEFAULT_ANSWER}
            schema = {"type": "object", "properties": {"title": {"type": "string"}, "score": {"type": "number"},
                                                       "tags": {"type": "array", "items": {"type": "string"}}}}
            shaped = await client.chat.completions.create(
                model="gpt-4o-mini", messages=USER,
                response_format={"type": "json_schema", "json_schema": {"name": "review", "schema": schema}})
            value = json.loads(shaped.choices[0].message.content or "")
            assert set(value) == {"title", "score", "tags"} and isinstance(value["tags"], list)


async def test_through_the_proxy_with_a_20_mb_body(tmp_path: Path, proxy) -> None:
    env = dict(os.environ)  # the proxy fixture's isolated environment (HOME empty, no proxy config)
    file = write(tmp_path / "sims.yaml", {"providers": [
        {"name": "local-a", "profile": "ok", "api_key": "sk-local-a-123456"},
        {"name": "local-b", "profile": "fast", "latency": 0.01, "models": ["m-b"]},
    ]})
    async with sim_providers(env, "--config", str(file)) as sims:
        assert "local-a" in sims.out and "sk-local-a-123456" in sims.out  # its key goes in the snippet
        async with sims.client("local-a", api_key="wrong") as wrong:
            with pytest.raises(openai.AuthenticationError):
                await wrong.chat.completions.create(model="m", messages=USER)
        snippet = yaml.safe_load(sims.out.split("checks it):\n", 1)[1].split("\n\n", 1)[0])
        host = await proxy(snippet["providers"], routing={"strategy": "round_robin", "health_check": {"enabled": False}})
        async with host.client() as client:
            answered = [await client.chat.completions.create(model="gpt-4o-mini", messages=USER) for _ in range(2)]
            assert {a.system_fingerprint for a in answered} == {"fake-local-a", "fake-local-b"}
            called = await client.chat.completions.create(model="gpt-4o-mini", messages=USER, tools=[WEATHER])
            assert called.choices[0].finish_reason == "tool_calls"
            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True,
                                                          stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
            big = "word " * (4 * 1024 * 1024)  # 20 MB of content
            answer = await client.chat.completions.create(model="gpt-4o-mini",
                                                          messages=[{"role": "user", "content": big}])
            assert answer.choices[0].message.content == DEFAULT_ANSWER
            assert answer.usage is not None and answer.usage.prompt_tokens == 4 * 1024 * 1024


async def test_sigterm_stops_them_with_status_0(env: dict[str, str]) -> None:
    async with sim_providers(env, "--providers", "flaky") as sims:
        started = time.monotonic()
        sims.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            code = await sims.proc.wait()
        assert code == 0 and time.monotonic() - started < 5
        assert sims.proc.stderr is not None
        assert b"Traceback" not in await sims.proc.stderr.read()


async def test_sigint_stops_them_with_status_0(env: dict[str, str]) -> None:
    async with sim_providers(env, "--providers", "ok") as sims:
        sims.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(5):
            assert await sims.proc.wait() == 0


async def test_a_bad_file_or_profile_is_one_line_and_status_2(env: dict[str, str], tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", {"providers": [{"name": "x", "profile": "flakey"}]})
    for args, expected in ((["--config", str(bad)], "providers[0].profile: unknown profile 'flakey' (did you mean 'flaky'?)"),
                           (["--providers", "fast,sloow"], "unknown profile 'sloow' (did you mean 'slow'?)")):
        assert EXE
        proc = await asyncio.create_subprocess_exec(EXE, "sim-providers", "--port", "0", *args, env=dict(env),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
        assert proc.returncode == 2 and out == b""
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hulumanage sim-providers: error: ") and expected in lines[0]
