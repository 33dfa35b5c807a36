"""The access log: one JSON line per chat request (JSON, stream, error), never a key or message content."""

from __future__ import annotations

import logging
from pathlib import Path

import openai
import orjson
import pytest
from support.helpers import USER, entry

from hulumanage.sim import ok, server_error

FIELDS = {"time", "request_id", "client", "approach", "model", "provider", "provider_model", "status", "total_ms",
          "ttft_ms", "attempts", "prompt_tokens", "completion_tokens", "cost_usd", "cache"}
SECRETS = ("client-key", "upstream-secret", "Say something")


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "hulumanage.access"]


async def test_one_line_per_request_with_its_fields_and_no_secret(fakes, proxy, caplog) -> None:
    caplog.set_level(logging.INFO)
    (a,) = await fakes("a", api_key="upstream-secret")
    a.script(ok(), ok(), server_error(500))  # the JSON answer, the stream, then an error
    host = await proxy([entry(a, model_map={"gpt-4": "gpt-4-0613"})], retries={"attempts_per_provider": 1})
    async with host.client() as client:
        await client.chat.completions.create(model="gpt-4", messages=USER, extra_headers={"X-Request-Id": "r-json"})
        stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True,
                                                      stream_options={"include_usage": True},
                                                      extra_headers={"X-Request-Id": "r-stream"})
        async for _ in stream:
            pass
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(model="gpt-4", messages=USER,
                                                 extra_headers={"X-Request-Id": "r-error"})
    lines = access_lines(caplog)
    by_id = {line["request_id"]: line for line in lines}
    assert len(lines) == 3 and set(by_id) == {"r-json", "r-stream", "r-error"}
    for line in lines:
        assert FIELDS <= set(line)
        assert line["approach"] == "proxy" and line["client"] == "127.0.0.1" and line["cache"] is None
        assert line["model"] == "gpt-4" and line["cost_usd"] == 0 and line["total_ms"] > 0
        assert line["attempts"] == 1
        text = orjson.dumps(line).decode()
        assert not any(secret in text for secret in SECRETS)
    answered = by_id["r-json"]
    assert answered["status"] == 200 and answered["provider"] == "a" and answered["provider_model"] == "gpt-4-0613"
    assert answered["ttft_ms"] is None and answered["prompt_tokens"] > 0 and answered["completion_tokens"] > 0
    streamed = by_id["r-stream"]
    assert streamed["status"] == 200 and streamed["provider"] == "a" and streamed["completion_tokens"] > 0
    assert 0 < streamed["ttft_ms"] <= streamed["total_ms"]
    failed = by_id["r-error"]
    assert failed["status"] == 502 and failed["provider"] is None and failed["completion_tokens"] == 0


async def test_a_request_refused_before_admission_is_logged_too(fakes, proxy, caplog, http) -> None:
    caplog.set_level(logging.INFO)
    (a,) = await fakes("a")
    host = await proxy([entry(a)])
    async with http.post(f"{host.url}/v1/chat/completions", data=b"{not json",
                         headers={"Content-Type": "application/json", "X-Request-Id": "bad-1"}) as resp:
        assert resp.status == 400
    (line,) = access_lines(caplog)
    assert line["request_id"] == "bad-1" and line["status"] == 400 and line["client"] == "127.0.0.1"


async def test_access_log_file_gets_the_lines_and_stderr_does_not(fakes, proxy, caplog, tmp_path: Path) -> None:
    caplog.set_level(logging.INFO)
    (a,) = await fakes("a")
    path = tmp_path / "access.log"
    host = await proxy([entry(a)], argv=("--approach", "proxy", "--log-level", "WARNING", "--access-log", str(path)))
    async with host.client() as client:
        for i in range(3):
            await client.chat.completions.create(model="gpt-4", messages=USER, extra_headers={"X-Request-Id": f"f-{i}"})
    lines = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert [line["request_id"] for line in lines] == ["f-0", "f-1", "f-2"]
    assert all(line["status"] == 200 and line["provider"] == "a" for line in lines)
    assert access_lines(caplog) == []  # not also on the root logger's handlers (stderr)


async def test_access_log_dash_writes_to_stdout(fakes, proxy, capsys) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=("--approach", "proxy", "--access-log", "-"))
    async with host.client() as client:
        await client.chat.completions.create(model="gpt-4", messages=USER, extra_headers={"X-Request-Id": "out-1"})
    out = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["request_id"] for line in out] == ["out-1"]


async def test_debug_names_the_provider_that_answered_and_how_long_it_took(fakes, proxy, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    a, b = await fakes("a", "b")
    a.set_default(server_error(500))
    host = await proxy([entry(a), entry(b)], retries={"attempts_per_provider": 1})
    async with host.client() as client:
        await client.chat.completions.create(model="gpt-4", messages=USER)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("proxy_plugin")]
    assert any(m.startswith("route model=gpt-4") for m in messages)
    assert any(m.startswith("attempt failed model=gpt-4 provider=a class=transient (500") for m in messages)
    answered = [m for m in messages if m.startswith("answered model=gpt-4 provider=b in ")]
    assert len(answered) == 1 and answered[0].endswith(" ms")
