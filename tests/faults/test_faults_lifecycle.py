"""The server's own lifecycle under load: graceful stop and configuration reload.

- SIGTERM to a ``hulumanage`` subprocess stops accepting connections, lets the requests
  in flight finish, exits 0, and leaves no "Unclosed ..." resource warnings on stderr.
- SIGHUP (and ``POST /admin/reload`` from 127.0.0.1) with a changed providers file swaps
  the providers without dropping a request in flight; an invalid new file is rejected
  (logged, or a 4xx from the admin call) and the old configuration keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from support.faults import ANSWER, ask
from support.harness import run_host, serving, write_config
from support.helpers import NOISE, USER, entry, health

from hulumanage.sim import FakeProvider, ok, server_error


@pytest.fixture
async def serve(env: dict[str, str]) -> AsyncIterator[Callable[..., asyncio.Future]]:
    """Start ``hulumanage`` subprocesses; kill whatever is still running at the end."""
    async with serving(env) as start:
        yield start


async def providers_of(url: str) -> tuple[set[str], int]:
    """The provider names ``/health`` shows, and the reload count."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as resp:
        body = await resp.json()
    return set(body["proxy"]["providers"]), body["proxy"]["reloads"]


async def refuses_connections(url: str) -> bool:
    """Whether a new connection to ``url`` is refused."""
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as resp:
            await resp.read()
    except aiohttp.ClientConnectionError:
        return True
    return False


# -- SIGTERM ---------------------------------------------------------------------------------------


async def test_sigterm_lets_requests_in_flight_finish_then_exits_0_cleanly(serve, tmp_path: Path) -> None:
    latency = 1.0
    async with FakeProvider("a", answer=ANSWER) as a:
        a.script(ok(latency=latency), ok(latency=0.2, chunk_gap=0.1))
        path = write_config(tmp_path / "proxy.yaml", [entry(a)])
        server = await serve("--approach", "proxy", "--proxy-config", str(path))
        async with server.client() as client:
            plain = asyncio.create_task(ask(client, False))
            await a.wait_for_requests(1, chat_only=True)
            streamed = asyncio.create_task(ask(client, True))
            await a.wait_for_requests(2, chat_only=True)
            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            # no new connections while the old ones finish
            deadline = time.monotonic() + 0.5
            while not await refuses_connections(server.url):
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                await asyncio.sleep(0.02)
            assert not plain.done()
            plain_reply, stream_reply = await asyncio.gather(plain, streamed)
        for reply in (plain_reply, stream_reply):
            assert (reply.text, reply.fingerprints, reply.finish_reasons) == (ANSWER, {"fake-a"}, ["stop"])
        code = await server.wait()
        stopped = time.monotonic() - signalled
    log = server.log
    assert code == 0, log
    assert stopped < latency + 3.0, f"took {stopped:.2f}s to stop"
    for noise in NOISE:
        assert noise not in log, log


async def test_sigterm_with_an_open_stream_relayed_from_a_provider_exits_cleanly(serve, tmp_path: Path) -> None:
    # the stream is mid-answer when the signal comes: it must run to its end, then the process stops
    async with FakeProvider("a", answer=ANSWER) as a:
        a.script(ok(chunk_gap=0.15))
        path = write_config(tmp_path / "proxy.yaml", [entry(a)])
        server = await serve("--approach", "proxy", "--proxy-config", str(path))
        async with server.client() as client:
            stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True)
            chunks = [await anext(aiter(stream))]
            server.signal(signal.SIGTERM)
            chunks += [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == ANSWER and chunks[-1].choices[0].finish_reason == "stop"
        code = await server.wait()
    assert code == 0, server.log
    for noise in NOISE:
        assert noise not in server.log, server.log


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "no-fast-path"])
async def test_sigterm_grace_is_one_budget_for_every_request_in_flight(serve, tmp_path: Path, fast: bool) -> None:
    # two requests slower than the grace (one on the fast path, one on aiohttp: a query string sends
    # it there) and one on aiohttp that ends within it: that one is answered, the two others get a
    # 503 when the grace ends, and the process stops
    # about one grace after the signal (aiohttp alone would wait the grace, cancel, wait it again)
    grace = 1.5
    async with FakeProvider("a", answer=ANSWER) as a:
        a.script(ok(latency=30), ok(latency=30), ok(latency=0.8))
        path = write_config(tmp_path / "proxy.yaml", [entry(a)])
        flags = () if fast else ("--no-fast-path",)
        server = await serve("--approach", "proxy", "--proxy-config", str(path), "--grace", str(grace), *flags)
        body = {"model": "gpt-4", "messages": USER}
        async with aiohttp.ClientSession() as session:

            async def post(query: str) -> tuple[int, dict]:
                async with session.post(f"{server.url}/v1/chat/completions{query}", json=body) as resp:
                    return resp.status, await resp.json()

            requests = []
            for count, query in enumerate(("", "?via=aiohttp", "?via=aiohttp"), 1):
                requests.append(asyncio.create_task(post(query)))
                await a.wait_for_requests(count, chat_only=True)
            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = await server.wait()
            stopped = time.monotonic() - signalled
            hung_fast, hung_aiohttp, quick = await asyncio.gather(*requests, return_exceptions=True)
    assert code == 0, server.log
    assert grace <= stopped < grace + 0.6, f"took {stopped:.2f}s to stop with --grace {grace}"
    assert not isinstance(quick, BaseException), quick
    assert quick[0] == 200 and quick[1]["choices"][0]["message"]["content"] == ANSWER
    for hung in (hung_fast, hung_aiohttp):  # not a bare disconnect: a 503 saying why
        assert not isinstance(hung, BaseException), hung
        assert hung[0] == 503 and hung[1]["error"]["code"] == "server_shutting_down", hung
    for noise in NOISE:
        assert noise not in server.log, server.log


# -- SIGHUP ----------------------------------------------------------------------------------------


async def test_sighup_swaps_providers_without_dropping_a_request_in_flight(serve, tmp_path: Path) -> None:
    async with FakeProvider("a", answer=ANSWER) as a, FakeProvider("b", answer=ANSWER) as b:
        a.script(ok(latency=0.8))
        path = write_config(tmp_path / "proxy.yaml", [entry(a)])
        server = await serve("--approach", "proxy", "--proxy-config", str(path))
        async with server.client() as client:
            in_flight = asyncio.create_task(ask(client, False))
            await a.wait_for_requests(1, chat_only=True)
            write_config(path, [entry(b)])
            server.signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while await providers_of(server.url) != ({"b"}, 1):
                assert time.monotonic() < deadline, "the new providers file was not loaded"
                await asyncio.sleep(0.02)
            assert not in_flight.done()  # swapped while the request was still on a
            assert (await ask(client, False)).fingerprints == {"fake-b"}  # new requests: the new providers
            reply = await in_flight
            assert (reply.text, reply.fingerprints) == (ANSWER, {"fake-a"})  # the old one finished on a
            assert len(a.chat_requests()) == 1

            # an invalid file is rejected: logged with the file and key, the current providers keep serving
            path.write_text("providers:\n  - name: c\n    base_url: not-a-url\n")
            server.signal(signal.SIGHUP)
            await server.logged("reload rejected")
            assert "providers[0].base_url" in server.log and str(path) in server.log
            assert await providers_of(server.url) == ({"b"}, 1)
            assert (await ask(client, True)).fingerprints == {"fake-b"}
        server.signal(signal.SIGTERM)
        assert await server.wait() == 0, server.log
    for noise in NOISE:
        assert noise not in server.log, server.log


# -- POST /admin/reload (in process) ---------------------------------------------------------------


async def test_admin_reload_swaps_providers_mid_stream_and_rejects_an_invalid_file(
    fakes, http, tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("HULUMANAGE_ADMIN_TOKEN", raising=False)  # loopback callers only
    a, b = await fakes("a", "b", answer=ANSWER)
    a.script(ok(chunk_gap=0.1))
    path = write_config(tmp_path / "proxy.yaml", [entry(a)])
    async with run_host("--approach", "proxy", "--proxy-config", str(path)) as host, host.client() as client:
        stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True)
        chunks = [await anext(aiter(stream))]  # a's stream is open

        write_config(path, [entry(b)])
        async with http.post(f"{host.url}/admin/reload") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["reloaded"][0]["providers"] == ["b"]
        assert (await ask(client, False)).fingerprints == {"fake-b"}

        chunks += [c async for c in stream]  # ... and still runs to its end on a
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == ANSWER and chunks[-1].choices[0].finish_reason == "stop"
        assert {c.system_fingerprint for c in chunks} == {"fake-a"}

        path.write_text("providers:\n  - name: c\n    base_url: http://127.0.0.1:1/v1\n    wieght: 2\n")
        with caplog.at_level(logging.ERROR):
            async with http.post(f"{host.url}/admin/reload") as resp:
                assert resp.status == 422
                error = (await resp.json())["error"]
        assert error["code"] == "reload_rejected"
        assert "providers[0].wieght" in error["message"] and "did you mean 'weight'" in error["message"]
        assert any("reload rejected" in r.getMessage() for r in caplog.records)
        async with http.get(f"{host.url}/health") as resp:
            proxy_view = (await resp.json())["proxy"]
        assert set(proxy_view["providers"]) == {"b"} and proxy_view["reloads"] == 1
        assert (await ask(client, True)).fingerprints == {"fake-b"}


async def test_a_reload_keeps_the_state_of_unchanged_providers_and_resets_changed_ones(
    fakes, http, tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HULUMANAGE_ADMIN_TOKEN", raising=False)
    a, b, c = await fakes("a", "b", "c", answer=ANSWER)
    a.set_default(server_error(500))
    c.set_default(server_error(500))
    sections = {
        "routing": {"strategy": "round_robin", "health_check": {"enabled": False}},
        "retries": {"attempts_per_provider": 1},
        "circuit_breaker": {"consecutive_failures": 2, "open_base": 60, "open_max": 60},
    }
    path = write_config(tmp_path / "proxy.yaml", [entry(a), entry(b), entry(c)], **sections)
    async with run_host("--approach", "proxy", "--proxy-config", str(path)) as host, host.client() as client:
        for _ in range(6):
            assert (await ask(client, False)).fingerprints == {"fake-b"}
        tried = len(a.chat_requests()), len(c.chat_requests())
        assert tried == (2, 2)  # both circuits opened after two failures each

        # a unchanged, c changed (its weight): reload, as anyone allowed to could, to try to close a's circuit
        write_config(path, [entry(a), entry(b), entry(c, weight=2)], **sections)
        async with http.post(f"{host.url}/admin/reload") as resp:
            assert resp.status == 200
        providers = (await health(http, host))["proxy"]["providers"]
        assert providers["a"]["circuits"]["gpt-4"]["state"] == "open"
        assert (providers["a"]["failures"], providers["b"]["requests"]) == (2, 6)
        assert "gpt-4" not in providers["c"]["circuits"] and providers["c"]["failures"] == 0

        for _ in range(3):
            assert (await ask(client, False)).fingerprints == {"fake-b"}
        assert len(a.chat_requests()) == 2  # still out of rotation: the open circuit survived the reload
        assert len(c.chat_requests()) > 2  # a fresh start: c is tried again
