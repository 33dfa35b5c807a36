"""The fast path (hulumanage/fastpath.py) on the wire: raw sockets against the real host.

Every other test module goes through it too (``POST /v1/chat/completions`` from the SDK);
here are the HTTP/1.1 details it answers itself, the hand-over to aiohttp, and that
``--no-fast-path`` gives the same answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from support.harness import run_host, write_config
from support.helpers import USER, entry
from support.wire import ANSWER, BODY, STREAM_BODY, content, post, wire

from hulumanage import fastpath
from hulumanage.fastpath import MAX_HEAD
from hulumanage.fastsite import hot_route_problem
from hulumanage.sim import FakeProvider, ok


@pytest.fixture
async def served(tmp_path, isolated_env) -> AsyncIterator[Any]:
    """A host with the proxy in front of one fake provider: ``(host, provider)``."""
    async with FakeProvider("a", answer=ANSWER) as a:
        path = write_config(tmp_path / "proxy.yaml", [entry(a)])
        async with run_host("--approach", "proxy", "--proxy-config", str(path)) as host:
            yield host, a


# -- the same answers, with and without the fast path ----------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
async def test_both_servers_give_the_same_answers(tmp_path, isolated_env, fast: bool) -> None:
    async with FakeProvider("a", answer=ANSWER) as a:
        path = write_config(tmp_path / "proxy.yaml", [entry(a)])
        argv = ["--approach", "proxy", "--proxy-config", str(path)] + ([] if fast else ["--no-fast-path"])
        async with run_host(*argv) as host, host.client() as client:
            reply = await client.chat.completions.create(model="gpt-4", messages=USER)
            assert reply.choices[0].message.content == ANSWER
            stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True)
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
            async with wire(host.port) as w:
                w.writer.write(post(b"{not json"))
                status, headers, body = await w.response()
                assert status == 400 and headers["content-type"].startswith("application/json")
                assert orjson.loads(body)["error"]["code"] == "invalid_json"
                w.writer.write(post(STREAM_BODY))
                status, headers, body = await w.response()
                assert (status, headers["content-type"]) == (200, "text/event-stream")
                assert content(body) == ANSWER and body.endswith(b"data: [DONE]\n\n")
                assert "date" in headers


# -- HTTP/1.1 on the fast path -----------------------------------------------------------------------


async def test_the_head_and_first_event_do_not_wait_for_the_next_event(served) -> None:
    host, a = served
    a.script(ok(chunk_gap=1.0))  # the second event comes a second after the first
    async with wire(host.port) as w:
        w.writer.write(post(STREAM_BODY))
        received = b""
        async with asyncio.timeout(0.8):
            while b"data: {" not in received:
                received += await w.reader.read(65536)
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in head
    assert rest.count(b"data: {") == 1


async def test_keep_alive_then_another_route_on_the_same_connection(served) -> None:
    host, a = served
    async with wire(host.port) as w:
        for body in (BODY, STREAM_BODY, BODY):
            w.writer.write(post(body))
            status, _headers, raw = await w.response()
            assert status == 200
            text = orjson.loads(raw)["choices"][0]["message"]["content"] if body is BODY else content(raw)
            assert text == ANSWER
        # the next request is not the hot route: aiohttp answers it on the same connection
        w.writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        status, _headers, raw = await w.response()
        assert status == 200 and orjson.loads(raw)["proxy"]["requests"] == 3
    assert len(a.chat_requests()) == 3


async def test_other_routes_and_versions_go_to_aiohttp(served) -> None:
    host, _a = served
    async with wire(host.port) as w:  # HTTP/1.0 to the hot path: aiohttp serves it
        w.writer.write(post(BODY).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        status, _headers, raw = await w.response()
        assert status == 200 and orjson.loads(raw)["choices"][0]["message"]["content"] == ANSWER
    async with wire(host.port) as w:  # a query string: aiohttp
        w.writer.write(post(BODY, path="/v1/chat/completions?x=1"))
        status, _headers, raw = await w.response()
        assert status == 200
    async with wire(host.port) as w:  # unknown /v1 path: the host's OpenAI-shaped 404
        w.writer.write(post(BODY, path="/v1/nothing"))
        status, _headers, raw = await w.response()
        assert status == 404 and orjson.loads(raw)["error"]["code"] == "not_found"


async def test_request_line_split_across_packets(served) -> None:
    host, _a = served
    data = post(BODY)
    async with wire(host.port) as w:
        for piece in (data[:3], data[3:20], data[20:60], data[60:]):
            w.writer.write(piece)
            await w.writer.drain()
            await asyncio.sleep(0.01)
        status, _headers, raw = await w.response()
    assert status == 200 and orjson.loads(raw)["choices"][0]["message"]["content"] == ANSWER


async def test_connection_close_is_honoured(served) -> None:
    host, _a = served
    async with wire(host.port) as w:
        w.writer.write(post(BODY, headers="Connection: close\r\n"))
        status, headers, _raw = await w.response()
        assert status == 200 and headers["connection"] == "close"
        assert await w.closed()


async def test_expect_100_continue(served) -> None:
    host, _a = served
    async with wire(host.port) as w:
        w.writer.write(post(b"", headers="Expect: 100-continue\r\n", length=len(BODY)))
        interim = await asyncio.wait_for(w.reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        w.writer.write(BODY)
        status, _headers, raw = await w.response()
    assert status == 200 and orjson.loads(raw)["choices"][0]["message"]["content"] == ANSWER


async def test_chunked_request_body(served) -> None:
    host, _a = served
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    halves = (BODY[:10], BODY[10:])
    chunked = b"".join(b"%x\r\n%b\r\n" % (len(h), h) for h in halves) + b"0\r\n\r\n"
    async with wire(host.port) as w:
        w.writer.write(head + chunked)
        status, _headers, raw = await w.response()
    assert status == 200 and orjson.loads(raw)["choices"][0]["message"]["content"] == ANSWER


async def test_pipelined_requests_are_answered_in_order(served) -> None:
    host, a = served
    a.script(ok(latency=0.2), ok())  # the first answer is the slow one
    async with wire(host.port) as w:
        w.writer.write(post(STREAM_BODY) + post(BODY))
        first = await w.response()
        second = await w.response()
    assert first[1]["content-type"] == "text/event-stream" and content(first[2]) == ANSWER
    assert second[1]["content-type"] == "application/json"


async def test_a_pipelined_request_split_inside_its_url(served) -> None:
    host, _a = served
    second = post(BODY)
    async with wire(host.port) as w:
        w.writer.write(post(BODY) + second[:18])  # "POST /v1/chat/comp": the URL arrives in two pieces
        await w.writer.drain()
        first = await w.response()
        w.writer.write(second[18:])
        answer = await w.response()
    for status, _headers, raw in (first, answer):
        assert status == 200 and orjson.loads(raw)["choices"][0]["message"]["content"] == ANSWER


async def test_another_route_pipelined_behind_a_chat_request_closes_after_the_answer(served) -> None:
    host, _a = served
    async with wire(host.port) as w:
        w.writer.write(post(BODY) + b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        status, _headers, raw = await w.response()
        assert status == 200 and orjson.loads(raw)["choices"][0]["message"]["content"] == ANSWER
        assert await w.closed()  # RFC 9112 9.3.2: the client retries the rest on a new connection


@pytest.mark.parametrize(
    "request_bytes, status, code",
    [
        (post(b"", length=65 * 1024 * 1024), 413, "request_too_large"),
        (post(BODY, headers="X-Big: " + "x" * MAX_HEAD + "\r\n"), 431, "invalid_request"),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Length: nope\r\n\r\n", 400, "invalid_request"),
    ],
    ids=["body over the limit", "head over the limit", "malformed"],
)
async def test_bad_requests_get_an_openai_error_and_a_close(served, request_bytes: bytes, status: int, code: str) -> None:
    host, a = served
    async with wire(host.port) as w:
        w.writer.write(request_bytes)
        got, headers, raw = await w.response()
        assert got == status and headers["connection"] == "close"
        error = orjson.loads(raw)["error"]
        assert error["code"] == code and error["message"]
        assert await w.closed()
    assert a.chat_requests() == []


@pytest.mark.parametrize("partial", [b"POS", post()[:40], post()[:-10]], ids=["request line", "head", "body"])
async def test_a_request_that_stops_arriving_gets_a_408_and_a_close(served, monkeypatch, partial: bytes) -> None:
    monkeypatch.setattr(fastpath, "REQUEST_READ", 0.3)
    host, a = served
    async with wire(host.port) as w:
        w.writer.write(partial)
        got, headers, raw = await w.response()
        assert got == 408 and headers["connection"] == "close"
        assert orjson.loads(raw)["error"]["code"] == "request_timeout"
        assert await w.closed()
    assert a.chat_requests() == []


async def test_a_head_trickling_in_is_cut_off_a_body_arriving_steadily_is_not(served, monkeypatch) -> None:
    monkeypatch.setattr(fastpath, "REQUEST_READ", 0.5)
    host, a = served
    request = post()
    head_end = request.index(b"\r\n\r\n") + 4
    async with wire(host.port) as w:  # the head: one byte every 0.05 s, never whole within 0.5 s
        answer = asyncio.create_task(w.response())
        for byte in range(head_end):
            if answer.done():
                break
            w.writer.write(request[byte:byte + 1])
            await asyncio.sleep(0.05)
        got, _headers, raw = await answer
        assert got == 408 and orjson.loads(raw)["error"]["code"] == "request_timeout"
    async with wire(host.port) as w:  # the body: a piece every 0.1 s for about a second, each gap well within 0.5 s
        w.writer.write(request[:head_end])
        body = request[head_end:]
        step = len(body) // 10 + 1
        for start in range(0, len(body), step):
            await asyncio.sleep(0.1)
            w.writer.write(body[start:start + step])
        got, _headers, raw = await w.response()
        assert got == 200 and orjson.loads(raw)["choices"][0]["message"]["content"] == ANSWER
    assert len(a.chat_requests()) == 1


async def test_a_middleware_turns_the_fast_path_off(tmp_path, isolated_env, caplog) -> None:
    @web.middleware
    async def stamp(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        response.headers["X-Stamped"] = "yes"
        return response

    assert hot_route_problem(web.Application(middlewares=[stamp])) == "the application has middlewares"
    async with FakeProvider("a", answer=ANSWER) as a:
        path = write_config(tmp_path / "proxy.yaml", [entry(a)])
        with caplog.at_level("INFO", logger="hulumanage.fastpath"):
            async with run_host("--approach", "proxy", "--proxy-config", str(path), middlewares=[stamp]) as host, \
                    wire(host.port) as w:
                w.writer.write(post(BODY))
                status, headers, _raw = await w.response()
    assert status == 200 and headers["x-stamped"] == "yes"
    assert "fast path off (the application has middlewares)" in caplog.text


async def test_a_client_that_reads_slowly_gets_a_long_stream_whole(served) -> None:
    """Back-pressure: ~10 MB of events wait for a client that stops reading; nothing is lost."""
    host, a = served
    words = [f"{i:06d}" + "x" * 1500 for i in range(6000)]
    a.answer = " ".join(words)
    async with wire(host.port) as w:
        w.writer.write(post(STREAM_BODY))
        await w.writer.drain()
        head = await asyncio.wait_for(w.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK")
        await asyncio.sleep(0.3)  # the client stops reading: buffers fill, the proxy must wait for it
        body = b""
        while not body.endswith(b"\r\n0\r\n\r\n"):
            piece = await asyncio.wait_for(w.reader.read(256 * 1024), 10)
            assert piece, "the proxy closed the stream before its end"
            body += piece
    assert content(_dechunk(body)) == a.answer


def _dechunk(body: bytes) -> bytes:
    """The payload of a chunked HTTP body."""
    out, pos = [], 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
