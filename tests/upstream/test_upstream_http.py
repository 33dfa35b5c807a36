"""The proxy's own HTTP/1.1 client to providers (``proxy_plugin/upstream/``), end to end.

Every test sends requests through the real host with the official SDK to an upstream
scripted at the HTTP level: a small aiohttp app where aiohttp can say it (keep-alive,
``Connection: close``, gzip, TLS, large bodies), a raw asyncio server where the bytes
themselves are the fault (no length, a cut body, not HTTP at all). Each checks what a
user sees: the answer, the error, how many connections the upstream saw.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
import shutil
import socket
import ssl
import subprocess
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import orjson
import pytest
from aiohttp import web
from support.harness import eventually
from support.helpers import USER, entry, health

import proxy_plugin.upstream as upstream_module
import proxy_plugin.upstream.framing as framing_module

FAILOVER = {"strategy": "failover", "health_check": {"enabled": False}}
NO_RETRY = {"attempts_per_provider": 1}
ANSWER = "one two three"
PROVIDER_HOST = "provider.test"  # a name only the fake egress proxy resolves (to 127.0.0.1)
_PACKER = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
BOMB = _PACKER.compress(b"0" * (8 * 1024 * 1024)) + _PACKER.flush()  # 8 MB of zeros in about 8 KB of gzip


def completion(content: str = ANSWER) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "gpt-4",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def stream_events(words: list[str]) -> list[bytes]:
    events = [chunk({"role": "assistant", "content": words[0]})]
    events += [chunk({"content": w}) for w in words[1:]]
    return [*events, chunk({}, "stop"), b"data: [DONE]\n\n"]


class Upstream:
    """An aiohttp upstream whose chat handler is the test's; it records every request's connection."""

    def __init__(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.handler = handler
        self.peers: list[tuple[str, int]] = []
        self.transports: list[asyncio.BaseTransport] = []
        self.headers: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        self.transports.append(request.transport)
        self.headers.append(dict(request.headers))
        await request.read()
        return await self.handler(request)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Upstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", _models)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    @property
    def connections(self) -> int:
        return len(set(self.peers))

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "gpt-4", "object": "model"}]})


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    started: list[Upstream] = []

    async def start(handler: Callable[[web.Request], Awaitable[web.StreamResponse]], **kwargs: Any) -> Upstream:
        server = await Upstream(handler).start(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


async def answer_json(request: web.Request) -> web.StreamResponse:
    return web.json_response(completion())


async def answer_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in stream_events(spaced(ANSWER)):
        await response.write(event)
    await response.write_eof()
    return response


async def answer(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    return await (answer_stream if body.get("stream") else answer_json)(request)


async def ask(client: openai.AsyncOpenAI, stream: bool) -> str:
    """The answer's text, streamed or not."""
    if not stream:
        reply = await client.chat.completions.create(model="gpt-4", messages=USER)
        return reply.choices[0].message.content or ""
    parts = []
    async for part in await client.chat.completions.create(model="gpt-4", messages=USER, stream=True):
        if part.choices and part.choices[0].delta.content:
            parts.append(part.choices[0].delta.content)
    return "".join(parts)


def spaced(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


# -- connections -----------------------------------------------------------------------


async def test_sequential_requests_share_one_upstream_connection(upstream, proxy, http) -> None:
    server = await upstream(answer)
    host = await proxy([{"name": "a", "base_url": server.url()}], routing=FAILOVER)
    async with host.client() as client:
        for stream in (False, True, False, True, True, False):
            assert await ask(client, stream) == ANSWER
    assert len(server.peers) == 6
    assert server.connections == 1  # streams included: the connection waits for their last bytes, then serves again
    connections = (await health(http, host))["proxy"]["upstream_connections"]
    assert connections == {"opened": 1, "idle": 1, "resent_after_idle_close": 0}


async def test_concurrent_requests_open_connections_then_reuse_them(upstream, proxy) -> None:
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.json_response(completion())

    server = await upstream(held)
    host = await proxy([{"name": "a", "base_url": server.url()}], routing=FAILOVER)
    async with host.client() as client:
        burst = [asyncio.create_task(ask(client, False)) for _ in range(4)]
        await eventually(lambda: len(server.peers) == 4)
        gate.set()
        assert await asyncio.gather(*burst) == [ANSWER] * 4
        for _ in range(8):
            assert await ask(client, False) == ANSWER
    assert server.connections == 4  # the four opened for the burst serve everything after it


async def test_an_upstream_that_closes_every_connection_is_served_on_fresh_ones(upstream, proxy) -> None:
    async def close_after(request: web.Request) -> web.StreamResponse:
        response = web.json_response(completion())
        response.force_close()  # "Connection: close", then the server closes
        return response

    server = await upstream(close_after)
    host = await proxy([{"name": "a", "base_url": server.url()}], routing=FAILOVER, retries=NO_RETRY)
    async with host.client() as client:
        for _ in range(5):
            assert await ask(client, False) == ANSWER
    assert server.connections == 5


async def test_stopping_the_host_closes_its_upstream_connections(upstream, proxy, tmp_path) -> None:
    from support.harness import run_host, write_config

    server = await upstream(answer)
    path = write_config(tmp_path / "own.yaml", [{"name": "a", "base_url": server.url()}], routing=FAILOVER)
    async with run_host("--approach", "proxy", "--proxy-config", str(path)) as host, host.client() as client:
        assert await ask(client, False) == ANSWER
        assert await ask(client, True) == ANSWER
        assert not any(t.is_closing() for t in server.transports)
    await eventually(lambda: all(t.is_closing() for t in server.transports), timeout=2)


# -- what is sent ----------------------------------------------------------------------


async def test_request_carries_host_user_agent_identity_encoding_and_configured_headers(upstream, proxy) -> None:
    server = await upstream(answer)
    providers = [
        {"name": "a", "base_url": server.url(), "api_key": "sk-a", "headers": {"X-Org": "acme"}},
        {"name": "b", "base_url": server.url(), "headers": {"User-Agent": "custom/1.0"}},
    ]
    host = await proxy(providers, routing={"strategy": "round_robin", "health_check": {"enabled": False}})
    async with host.client() as client:
        await ask(client, False)
        await ask(client, False)
    by_agent = {h["User-Agent"]: h for h in server.headers}
    assert set(by_agent) == {"hulumanage-proxy", "custom/1.0"}
    default = by_agent["hulumanage-proxy"]
    assert default["Host"] == f"127.0.0.1:{server.port}"
    assert default["Authorization"] == "Bearer sk-a" and default["X-Org"] == "acme"
    assert default["Accept-Encoding"] == "identity"
    assert default["Content-Type"] == "application/json"
    assert int(default["Content-Length"]) > 0
    assert "Authorization" not in by_agent["custom/1.0"]


# -- what comes back -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_gzip_answers_are_decoded(upstream, proxy, stream: bool) -> None:
    async def gzipped(request: web.Request) -> web.StreamResponse:
        packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        headers = {"Content-Encoding": "gzip"}
        if not stream:
            body = packer.compress(orjson.dumps(completion())) + packer.flush()
            return web.Response(body=body, headers={**headers, "Content-Type": "application/json"})
        response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in stream_events(spaced(ANSWER)):
            await response.write(packer.compress(event) + packer.flush(zlib.Z_SYNC_FLUSH))
        await response.write(packer.flush())
        await response.write_eof()
        return response

    server = await upstream(gzipped)
    host = await proxy([{"name": "a", "base_url": server.url()}], routing=FAILOVER)
    async with host.client() as client:
        assert await ask(client, stream) == ANSWER


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_large_answers_are_relayed_whole(upstream, proxy, stream: bool) -> None:
    big = "x" * 3_000_000  # well past the point where the client pauses reading the socket
    pieces = [f"{i:04d}" + "y" * 65_000 for i in range(40)]

    async def large(request: web.Request) -> web.StreamResponse:
        if not stream:
            return web.json_response(completion(big))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in stream_events(pieces):
            await response.write(event)
        await response.write_eof()
        return response

    server = await upstream(large)
    host = await proxy([{"name": "a", "base_url": server.url()}], routing=FAILOVER)
    async with host.client() as client:
        assert await ask(client, stream) == ("".join(pieces) if stream else big)
        assert await ask(client, stream) == ("".join(pieces) if stream else big)
    assert server.connections == 1


async def test_events_split_anywhere_across_reads_are_reassembled(upstream, proxy) -> None:
    # CRLF line endings; an event's CR and LF in different writes; one 3 MB event in 64 KB writes
    words = ["first ", "z" * 3_000_000, " last"]
    body = b"".join(stream_events(words)).replace(b"\n", b"\r\n")
    cuts = sorted({*range(0, len(body), 65_536), *(m.end() for m in re.finditer(rb"\r", body)), len(body)})

    async def split(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start, end in itertools.pairwise(cuts):
            await response.write(body[start:end])
            await asyncio.sleep(0.001)  # each write its own read on the proxy's side
        await response.write_eof()
        return response

    server = await upstream(split)
    host = await proxy([{"name": "a", "base_url": server.url()}], routing=FAILOVER)
    async with host.client() as client:
        assert await ask(client, True) == "".join(words)


# -- raw bytes -------------------------------------------------------------------------


class RawUpstream:
    """A TCP server that reads one request and answers with the test's exact bytes."""

    def __init__(self, reply: bytes, close: bool = True) -> None:
        self.reply = reply
        self.close_after = close
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            self.requests += 1
            writer.write(self.reply)
            await writer.drain()
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_an_answer_delimited_by_the_connection_closing_is_read_whole(proxy) -> None:
    body = orjson.dumps(completion())
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + body
    async with RawUpstream(reply) as url:
        host = await proxy([{"name": "a", "base_url": url}], routing=FAILOVER)
        async with host.client() as client:
            assert await ask(client, False) == ANSWER
            assert await ask(client, False) == ANSWER


@pytest.mark.parametrize(("reply", "what"), [
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"choices\": [", "response cut short"),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "malformed HTTP response"),
    (b"", "server disconnected"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\nabcd", "unsupported content-encoding 'br'"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(BOMB), BOMB),
     "response body larger than 1 MB"),
], ids=["cut", "not-http", "closed", "brotli", "gzip-bomb"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_broken_http_answer_fails_over_and_is_named(
    fakes, proxy, http, monkeypatch, reply: bytes, what: str, stream: bool,
) -> None:
    monkeypatch.setattr(framing_module, "MAX_BODY", 1024 * 1024)  # the bomb expands to 8 MB
    (b,) = await fakes("b", answer=ANSWER)
    async with RawUpstream(reply) as url:
        host = await proxy([{"name": "a", "base_url": url}, entry(b)], routing=FAILOVER, retries=NO_RETRY)
        async with host.client() as client:
            assert await ask(client, stream) == ANSWER
        view = (await health(http, host))["proxy"]["providers"]["a"]
        assert view["failures"] == 1
        assert view["last_error"].startswith(what)


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and ``provider.test`` (made with the openssl command line)."""
    openssl = shutil.which("openssl")
    assert openssl, "these tests need the openssl command (apt-get install openssl)"
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", f"subjectAltName=IP:127.0.0.1,DNS:{PROVIDER_HOST}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_https_providers_are_served_over_verified_tls(upstream, proxy, certificate, monkeypatch, stream: bool) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the trust store: this certificate only
    server = await upstream(answer, ssl_context=server_tls(certificate))
    host = await proxy([{"name": "a", "base_url": server.url("https")}], routing=FAILOVER)
    async with host.client() as client:
        for _ in range(3):
            assert await ask(client, stream) == ANSWER
    assert server.connections == 1


async def test_an_untrusted_certificate_is_refused_and_named(upstream, proxy, http, certificate) -> None:
    server = await upstream(answer, ssl_context=server_tls(certificate))
    host = await proxy([{"name": "a", "base_url": server.url("https")}], routing=FAILOVER, retries=NO_RETRY)
    async with host.client() as client:
        with pytest.raises(openai.APIStatusError) as raised:
            await ask(client, False)
    assert raised.value.status_code == 502
    assert "TLS certificate not trusted" in raised.value.message
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["last_error"].startswith("TLS certificate not trusted")
    assert server.peers == []  # no request ever reached it



async def test_a_kept_alive_connection_closed_as_the_request_goes_out_is_retried_on_a_new_one(proxy, http) -> None:
    """The keep-alive race: the provider closes an idle connection just as the next request reuses it."""
    body = orjson.dumps(completion())
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    served: list[int] = []  # per connection: requests answered before the drop
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(0)
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                if served[-1] == 1:
                    break  # the second request on a connection: closed without a byte of answer
                served[-1] += 1
                writer.write(reply)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        host = await proxy([{"name": "a", "base_url": url}], routing=FAILOVER, retries=NO_RETRY)
        async with host.client() as client:
            for _ in range(3):
                assert await ask(client, False) == ANSWER
        assert served == [1, 1, 1]  # each later request found its connection closed and went out again on a new one
        view = (await health(http, host))["proxy"]["providers"]["a"]
        assert view["failures"] == 0 and view["last_error"] is None
        assert (await health(http, host))["proxy"]["upstream_connections"]["resent_after_idle_close"] == 2
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_request_held_then_dropped_is_one_failed_attempt_never_sent_again_silently(
    fakes, proxy, http, stream: bool,
) -> None:
    """Past the keep-alive race: a reused connection that takes the request, holds it 0.5 s, then closes.

    The provider may have acted on that POST, so it is not resent: one delivery, one failure
    charged to the provider (``/health``), the next provider answers.
    """
    hold = 0.5
    assert hold > upstream_module.client.RESEND_WINDOW
    body = orjson.dumps(completion())
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    delivered: list[bytes] = []  # every request body that reached the fake, in order
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                delivered.append(await reader.readexactly(length))
                if len(delivered) == 2:
                    await asyncio.sleep(hold)  # held, then dropped without a byte of answer
                    break
                writer.write(reply)
                await writer.drain()
        writer.close()

    (b,) = await fakes("b", answer=ANSWER)
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        host = await proxy([{"name": "a", "base_url": url}, entry(b)], routing=FAILOVER, retries=NO_RETRY)
        async with host.client() as client:
            assert await ask(client, False) == ANSWER  # a answers and keeps the connection alive
            assert await ask(client, stream) == ANSWER  # a holds and drops it: b answers
        assert len(delivered) == 2  # the dropped request reached a once, not twice
        assert len(b.chat_requests()) == 1
        status = (await health(http, host))["proxy"]
        view = status["providers"]["a"]
        assert view["failures"] == 1 and view["last_error"] == "server disconnected"
        assert status["upstream_connections"]["resent_after_idle_close"] == 0
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_provider_named_by_host_name_is_resolved_and_connected(upstream, proxy, http) -> None:
    server = await upstream(answer)
    host = await proxy([{"name": "a", "base_url": f"http://localhost:{server.port}/v1"}], routing=FAILOVER)
    async with host.client() as client:
        assert await ask(client, False) == ANSWER
        assert await ask(client, True) == ANSWER
    assert server.headers[0]["Host"] == f"localhost:{server.port}"
    assert (await health(http, host))["proxy"]["upstream_connections"]["opened"] == 1


@contextlib.contextmanager
def unanswered_port() -> Iterator[str]:
    """A URL whose TCP connect never completes: a listener whose backlog is full drops new SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize(("stream", "timeouts", "what"), [
    (False, {"connect": 0.2, "request": 5}, "connect timeout (0.2s)"),
    (False, {"connect": 5, "request": 0.2}, "timeout"),
    (True, {"connect": 0.2, "request": 5, "first_token": 5}, "connect timeout (0.2s)"),
    (True, {"connect": 5, "request": 5, "first_token": 0.2}, "no first token in time"),
    (True, {"connect": 5, "request": 0.2, "first_token": None}, "no first token in time"),
], ids=["json-connect", "json-request", "stream-connect", "stream-first-token", "stream-request"])
async def test_a_connect_that_never_completes_is_bounded_by_the_nearest_timeout(
    fakes, proxy, http, stream: bool, timeouts: dict[str, Any], what: str,
) -> None:
    (b,) = await fakes("b", answer=ANSWER)
    with unanswered_port() as url:
        host = await proxy([{"name": "a", "base_url": url}, entry(b)], routing=FAILOVER, retries=NO_RETRY,
                           timeouts=timeouts)
        async with host.client() as client:
            started = asyncio.get_running_loop().time()
            assert await ask(client, stream) == ANSWER
            assert asyncio.get_running_loop().time() - started < 3  # not the 5 s the other timeouts allow
        view = (await health(http, host))["proxy"]["providers"]["a"]
        assert view["failures"] == 1
        assert view["last_error"] == what


# -- egress proxy ----------------------------------------------------------------------


class FakeEgress:
    """An HTTP proxy on 127.0.0.1: ``CONNECT`` tunnels and absolute-form requests.

    It resolves ``provider.test`` itself (the client never can), records what it was
    asked, and answers 407 when ``require`` is set and not sent as ``Proxy-Authorization``.
    """

    def __init__(self, require: str | None = None) -> None:
        self.require = require
        self.seen: list[tuple[str, str, str | None]] = []  # method, target, Proxy-Authorization
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()   # connection handlers and the copies they start
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FakeEgress:  # noqa: PYI034
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.append(writer)
        try:
            await self._relay(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, auth = self._record(head)
        if self.require is not None and auth != self.require:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(_resolve(host), int(port))
            self.writers.append(up_writer)
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await self._pipe_both(reader, writer, up_reader, up_writer)
            return
        url = urlsplit(target)  # absolute form: forward each request on one upstream connection
        up_reader, up_writer = await asyncio.open_connection(_resolve(url.hostname or ""), url.port or 80)
        self.writers.append(up_writer)
        self._spawn(_copy(up_reader, writer))
        while True:
            body = await reader.readexactly(_length(head))
            up_writer.write(_origin_form(head) + body)
            head = await reader.readuntil(b"\r\n\r\n")
            self._record(head)

    def _record(self, head: bytes) -> tuple[str, str, str | None]:
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ")
        auth = next((line.split(":", 1)[1].strip() for line in lines[1:]
                     if line.lower().startswith("proxy-authorization:")), None)
        self.seen.append((method, target, auth))
        return method, target, auth

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _pipe_both(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        back = self._spawn(_copy(up_reader, writer))
        await _copy(reader, up_writer)
        await back


def _resolve(host: str) -> str:
    return "127.0.0.1" if host in (PROVIDER_HOST, "127.0.0.1") else host


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _origin_form(head: bytes) -> bytes:
    """The request as the origin server takes it: its path, no proxy credentials."""
    first, _, rest = head.partition(b"\r\n")
    method, target, version = first.split(b" ")
    url = urlsplit(target.decode("latin-1"))
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kept = [line for line in rest.split(b"\r\n") if not line.lower().startswith(b"proxy-authorization:")]
    return b" ".join((method, path.encode("latin-1"), version)) + b"\r\n" + b"\r\n".join(kept)


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    with contextlib.suppress(ConnectionError, RuntimeError):
        sink.close()


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_https_providers_are_reached_through_the_egress_proxy_tunnel(
    upstream, proxy, certificate, monkeypatch, stream: bool,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    server = await upstream(answer, ssl_context=server_tls(certificate))
    async with FakeEgress(require=basic("team:s3cret@pw")) as egress:
        monkeypatch.setenv("HTTPS_PROXY", egress.url("team:s3cret%40pw"))
        host = await proxy([{"name": "a", "base_url": f"https://{PROVIDER_HOST}:{server.port}/v1"}], routing=FAILOVER)
        async with host.client() as client:
            for _ in range(3):
                assert await ask(client, stream) == ANSWER
    # one tunnel, kept alive and reused; TLS inside it verified for the provider's name
    assert egress.seen == [("CONNECT", f"{PROVIDER_HOST}:{server.port}", basic("team:s3cret@pw"))]
    assert server.connections == 1


async def test_http_providers_and_their_health_checks_go_through_the_egress_proxy(upstream, proxy, http, monkeypatch) -> None:
    server = await upstream(answer)
    async with FakeEgress(require=basic("team:pw")) as egress:
        monkeypatch.setenv("HTTP_PROXY", egress.url("team:pw"))
        base = f"http://{PROVIDER_HOST}:{server.port}/v1"
        host = await proxy([{"name": "a", "base_url": base}],
                           routing={"strategy": "failover", "health_check": {"enabled": True, "interval": 60}})
        await eventually(lambda: any(target.endswith("/models") for _, target, _ in egress.seen))
        async with host.client() as client:
            assert await ask(client, False) == ANSWER
            assert await ask(client, True) == ANSWER
        assert (await health(http, host))["proxy"]["providers"]["a"]["healthy"] is True
    assert ("GET", f"{base}/models", basic("team:pw")) in egress.seen
    assert egress.seen.count(("POST", f"{base}/chat/completions", basic("team:pw"))) == 2


async def test_an_egress_proxy_refusing_the_tunnel_fails_over_and_is_named_without_credentials(
    fakes, proxy, http, monkeypatch,
) -> None:
    (b,) = await fakes("b", answer=ANSWER)  # on 127.0.0.1: reached directly, never through the proxy
    async with FakeEgress(require=basic("team:right")) as egress:
        monkeypatch.setenv("HTTPS_PROXY", egress.url("team:wrong-s3cret"))
        host = await proxy([{"name": "a", "base_url": f"https://{PROVIDER_HOST}/v1"}, entry(b)],
                           routing=FAILOVER, retries=NO_RETRY)
        async with host.client() as client:
            assert await ask(client, False) == ANSWER
        async with http.get(f"{host.url}/health") as resp:
            text = await resp.text()
        shown = f"127.0.0.1:{egress.port}"
    view = orjson.loads(text)["proxy"]["providers"]["a"]
    assert view["last_error"] == f"the egress proxy {shown} refused the tunnel (407 Proxy Authentication Required)"
    assert "wrong-s3cret" not in text and basic("team:wrong-s3cret") not in text
    assert [method for method, _, _ in egress.seen] == ["CONNECT"]


@pytest.mark.parametrize(("url", "environ", "expected"), [
    ("https://api.example.com/v1", {"HTTPS_PROXY": "http://egress:3128"}, "egress:3128"),
    ("https://api.example.com/v1", {"HTTPS_PROXY": "egress:3128"}, "egress:3128"),
    ("https://api.example.com/v1", {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"}, "lower:1"),
    ("https://api.example.com/v1", {"HTTP_PROXY": "http://egress:3128"}, None),  # http's proxy is not https's
    ("http://api.example.com/v1", {"HTTP_PROXY": "http://egress"}, "egress:80"),
    ("https://api.example.com/v1", {"HTTPS_PROXY": "http://egress:3128", "NO_PROXY": "example.com"}, None),
    ("https://api.example.com/v1", {"HTTPS_PROXY": "http://egress:3128", "no_proxy": ".example.com"}, None),
    ("https://api.example.org/v1", {"HTTPS_PROXY": "http://egress:3128", "NO_PROXY": "example.com"}, "egress:3128"),
    ("https://api.example.com/v1", {"HTTPS_PROXY": "http://egress:3128", "NO_PROXY": "*"}, None),
    ("https://api.example.com/v1", {"HTTPS_PROXY": "http://egress:3128", "NO_PROXY": "other.net, example.com:443"}, None),
    ("https://api.example.com:8443/v1", {"HTTPS_PROXY": "http://egress:3128", "NO_PROXY": "example.com:443"}, "egress:3128"),
    ("https://10.1.2.3/v1", {"HTTPS_PROXY": "http://egress:3128", "NO_PROXY": "10.0.0.0/8"}, None),
    ("https://xexample.com/v1", {"HTTPS_PROXY": "http://egress:3128", "NO_PROXY": "example.com"}, "egress:3128"),
    ("https://127.0.0.1:8443/v1", {"HTTPS_PROXY": "http://egress:3128"}, None),  # loopback: always direct
    ("http://localhost:8000/v1", {"HTTP_PROXY": "http://egress:3128"}, None),
    ("https://[::1]:8443/v1", {"HTTPS_PROXY": "http://egress:3128"}, None),
])
def test_which_providers_go_through_the_egress_proxy(url: str, environ: dict[str, str], expected: str | None) -> None:
    found = upstream_module.egress_proxy(url, environ)
    assert (None if found is None else str(found)) == expected


@pytest.mark.parametrize(("value", "problem"), [
    ("socks5://team:s3cret@egress:1080", "HTTPS_PROXY: only http:// proxies are supported, got a socks5:// one"),
    ("https://team:s3cret@egress:3128", "HTTPS_PROXY: only http:// proxies are supported, got a https:// one"),
    ("http://team:s3cret@egress:port", "HTTPS_PROXY: not a usable proxy URL (expected http://[user:password@]host[:port])"),
])
async def test_an_unusable_egress_proxy_setting_stops_startup_naming_the_variable_not_its_value(
    proxy, monkeypatch, value: str, problem: str,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", value)
    with pytest.raises(ValueError) as raised:
        await proxy([{"name": "a", "base_url": "https://api.example.com/v1"}], routing=FAILOVER)
    assert str(raised.value) == problem and "s3cret" not in str(raised.value)
