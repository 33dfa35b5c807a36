"""Connections on both servers: read deadlines, the connection cap, pipelined junk, a clean stop.

Raw sockets against the real host (in process), and a ``hulumanage`` subprocess for the stop.
The 60 s read bound is set lower here through the modules' constants.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from support.harness import run_host, serving, write_config
from support.helpers import NOISE, entry
from support.wire import ANSWER, BODY, STREAM_BODY, Wire, content, post, wire

from hulumanage import fastguard, fastpath
from hulumanage.fastsite import FastSite
from hulumanage.sim import FakeProvider, ok

MODES = pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "no-fast-path"])


def started(tmp_path: Path, provider: FakeProvider, fast: bool, *flags: str):
    path = write_config(tmp_path / "proxy.yaml", [entry(provider)])
    return run_host("--approach", "proxy", "--proxy-config", str(path), *(() if fast else ("--no-fast-path",)), *flags)


async def timed_out(w: Wire) -> None:
    """The connection got the OpenAI-shaped 408 and was closed."""
    got, headers, raw = await w.response()
    assert got == 408 and headers["connection"] == "close"
    error = orjson.loads(raw)["error"]
    assert error["code"] == "request_timeout" and "did not arrive" in error["message"]
    assert await w.closed()


# -- 1. every connection has read deadlines -------------------------------------------------------------


@MODES
@pytest.mark.parametrize("partial", [
    b"GET /health HTTP/1.1\r\nHost: te",
    b"POST /v1/chat/completions HTTP/1.0\r\nHost: test\r\n",
    b"POST /v1/chat/completions?user=1 HTTP/1.1\r\nHost: te",
    b"POST /v1/chat/completions?user=1 HTTP/1.1\r\nHost: test\r\nContent-Length: 80\r\n\r\n{\"model\":",
], ids=["health head", "HTTP/1.0 head", "query string head", "query string body"])
async def test_a_half_sent_request_on_any_route_gets_a_408_and_a_close(
    tmp_path, isolated_env, monkeypatch, fast: bool, partial: bytes,
) -> None:
    monkeypatch.setattr(fastguard, "REQUEST_READ", 0.3)
    monkeypatch.setattr(fastpath, "REQUEST_READ", 0.3)
    async with FakeProvider("a", answer=ANSWER) as a, started(tmp_path, a, fast) as host, wire(host.port) as w:
        began = time.monotonic()
        w.writer.write(partial)
        await timed_out(w)
        assert time.monotonic() - began < 3
        assert a.chat_requests() == []


@MODES
async def test_the_next_request_on_a_kept_alive_aiohttp_connection_is_bounded_too(
    tmp_path, isolated_env, monkeypatch, fast: bool,
) -> None:
    monkeypatch.setattr(fastguard, "REQUEST_READ", 0.3)
    async with FakeProvider("a", answer=ANSWER) as a, started(tmp_path, a, fast) as host, wire(host.port) as w:
        w.writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        status, _headers, _raw = await w.response()
        assert status == 200
        await asyncio.sleep(0.5)  # idle between requests is keep-alive's business, not a read deadline
        w.writer.write(b"GET /v1/models HTTP/1.1\r\nHost: te")
        await timed_out(w)


@MODES
async def test_a_body_arriving_steadily_on_aiohttp_is_not_cut_off(tmp_path, isolated_env, monkeypatch, fast: bool) -> None:
    monkeypatch.setattr(fastguard, "REQUEST_READ", 0.4)
    request = post(path="/v1/chat/completions?user=1")
    head_end = request.index(b"\r\n\r\n") + 4
    async with FakeProvider("a", answer=ANSWER) as a, started(tmp_path, a, fast) as host, wire(host.port) as w:
        w.writer.write(request[:head_end])
        body = request[head_end:]
        step = len(body) // 8 + 1
        for start in range(0, len(body), step):  # about a second in all, each gap well within 0.4 s
            await asyncio.sleep(0.12)
            w.writer.write(body[start:start + step])
        got, _headers, raw = await w.response()
        assert got == 200 and orjson.loads(raw)["choices"][0]["message"]["content"] == ANSWER


# -- 2. the connection cap ----------------------------------------------------------------------------


async def refused(port: int) -> bool:
    """Whether a new connection is closed by the server before any answer to a request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


@MODES
async def test_past_max_connections_new_ones_are_refused_and_logged_once(tmp_path, isolated_env, caplog, fast: bool) -> None:
    async with FakeProvider("a", answer=ANSWER) as a, started(tmp_path, a, fast, "--max-connections", "5") as host:
        idle = [await asyncio.open_connection("127.0.0.1", host.port) for _ in range(5)]
        with caplog.at_level(logging.WARNING, logger="hulumanage.fastpath"):
            for _ in range(8):
                assert await refused(host.port)
        limit_lines = [r for r in caplog.records if "connection limit reached" in r.getMessage()]
        assert len(limit_lines) == 1, [r.getMessage() for r in caplog.records]
        assert "--max-connections 5" in limit_lines[0].getMessage()
        _reader, writer = idle.pop()
        writer.close()
        deadline = time.monotonic() + 5
        while True:  # the server sees the close, then the slot is free again
            try:
                async with aiohttp.ClientSession() as session, session.get(f"{host.url}/health") as resp:
                    assert resp.status == 200
                    break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline, "a freed slot was not given to a new connection"
                await asyncio.sleep(0.05)
        for _reader, writer in idle:
            writer.close()


async def test_accept_failures_for_want_of_descriptors_are_logged_once_per_interval(tmp_path, isolated_env, caplog) -> None:
    import errno

    async with FakeProvider("a", answer=ANSWER) as a, started(tmp_path, a, True) as host:
        site = FastSite(host.runner, "127.0.0.1", 0, max_connections=5)
        loop = asyncio.get_running_loop()
        context = {"message": "socket.accept() out of system resource",
                   "exception": OSError(errno.EMFILE, "Too many open files")}
        with caplog.at_level(logging.WARNING):
            for _ in range(200):
                site._loop_exception(loop, context)
        lines = [r.getMessage() for r in caplog.records if "accept() failed" in r.getMessage()]
        assert len(lines) == 1 and "ulimit -n" in lines[0]
        assert "socket.accept() out of system resource" not in caplog.text


def test_the_default_cap_leaves_room_for_upstream_connections() -> None:
    import resource

    from hulumanage.fastsite import default_max_connections

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = default_max_connections()
    assert 8 <= cap and (soft == resource.RLIM_INFINITY or cap <= soft // 2)


# -- 3. pipelined bytes after a valid request ----------------------------------------------------------


@MODES
@pytest.mark.parametrize("valid", [post(BODY), b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"], ids=["chat", "health"])
async def test_junk_pipelined_after_a_valid_request_gets_a_400_after_its_answer(
    tmp_path, isolated_env, fast: bool, valid: bytes,
) -> None:
    async with FakeProvider("a", answer=ANSWER) as a, started(tmp_path, a, fast) as host, wire(host.port) as w:
        w.writer.write(valid + b"\x16\x03\x01 this is no request\r\n\r\n")
        status, _headers, raw = await w.response()
        assert status == 200 and raw
        status, _headers, _raw = await w.response()  # aiohttp's own 400 (text), or the fast path's (JSON)
        assert status == 400
        assert await w.closed()


# -- 4. a clean stop for the client -------------------------------------------------------------------


@MODES
async def test_requests_running_when_the_grace_ends_get_a_503_or_an_error_event(env, tmp_path: Path, fast: bool) -> None:
    grace = 0.5
    async with FakeProvider("a", answer=ANSWER) as a, serving(env) as serve:
        a.script(ok(latency=30), ok(chunk_gap=30))  # a JSON answer that never comes, a stream that stalls
        path = write_config(tmp_path / "proxy.yaml", [entry(a)])
        server = await serve("--approach", "proxy", "--proxy-config", str(path), "--grace", str(grace),
                             *(() if fast else ("--no-fast-path",)))
        port = int(server.url.rsplit(":", 1)[1])
        async with wire(port) as plain, wire(port) as streamed:
            plain.writer.write(post(BODY))
            await a.wait_for_requests(1, chat_only=True)
            streamed.writer.write(post(STREAM_BODY))
            head = await asyncio.wait_for(streamed.reader.readuntil(b"\r\n\r\n"), 10)
            assert b" 200 " in head.split(b"\r\n", 1)[0]
            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            status, headers, raw = await plain.response()
            assert status == 503 and headers["connection"] == "close"
            error = orjson.loads(raw)["error"]
            assert (error["code"], error["type"]) == ("server_shutting_down", "server_error")
            rest = await asyncio.wait_for(streamed.reader.read(), 10)  # to the close
        deadline = signalled + grace + 1.0
        while server.proc.returncode is None:
            assert time.monotonic() < deadline, f"still running {grace + 1.0}s after SIGTERM with --grace {grace}"
            await asyncio.sleep(0.02)
        assert server.proc.returncode == 0, server.log
        await server.wait()
    sse = _dechunk(rest)
    events = [block for block in sse.split(b"\n\n") if block]
    relayed = content(b"\n\n".join(events[:-1]))
    assert ANSWER.startswith(relayed) and relayed != ANSWER  # what was relayed before the stop, no more
    assert orjson.loads(events[-1][6:])["error"]["code"] == "server_shutting_down"
    assert b"[DONE]" not in sse and rest.endswith(b"0\r\n\r\n")
    for noise in NOISE:
        assert noise not in server.log, server.log


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2:]
    return out
