"""Provider keys never reach a client, even when a provider echoes them back in an error.

A fake provider (a small aiohttp app) answers with the ``Authorization`` header it
received inside its error: a 400 (the caller's error, relayed as it is), a 500 (its code
ends up in the proxy's message) and an error event in the middle of a stream. The client
(the SDK, and raw aiohttp where the exact bytes matter) and ``/health`` must never see
the key; they see ``[redacted]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import orjson
import pytest
from aiohttp import web
from support.helpers import USER, health, raw_stream

FAILOVER = {"strategy": "failover", "health_check": {"enabled": False}}
KEY = "sk-echoed-secret-0123456789abcdef"
ORG = "org-configured-header-4242"


def echoing_error(request: web.Request) -> dict[str, object]:
    """An OpenAI-shaped error quoting what the provider received (as some providers do)."""
    auth = request.headers.get("Authorization", "")
    org = request.headers.get("OpenAI-Organization", "")
    return {"error": {"message": f"Incorrect API key provided: {auth} (organization {org})",
                      "type": "invalid_request_error", "code": f"bad_key:{auth}"}}


@pytest.fixture
async def echoing() -> AsyncIterator[dict[str, str]]:
    """The echoing provider; set ``mode["how"]`` to ``400``, ``500`` or ``midstream``. Yields the mode dict."""
    mode = {"how": "400"}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        how = mode["how"]
        if how in ("400", "500"):
            return web.json_response(echoing_error(request), status=int(how))
        assert body.get("stream") is True
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello "}, "finish_reason": None}]}
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: " + orjson.dumps(echoing_error(request)) + b"\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    mode["url"] = f"http://127.0.0.1:{port}/v1"
    try:
        yield mode
    finally:
        await runner.cleanup()


def assert_clean(text: str) -> None:
    assert KEY not in text and ORG not in text, text


async def start(proxy, echoing):
    provider = {"name": "echo", "base_url": echoing["url"], "api_key": KEY, "headers": {"OpenAI-Organization": ORG}}
    return await proxy([provider], routing=FAILOVER, retries={"attempts_per_provider": 1})


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_relayed_caller_error_is_scrubbed_of_the_provider_key(proxy, http, echoing, stream: bool) -> None:
    echoing["how"] = "400"
    host = await start(proxy, echoing)
    async with host.client() as client:
        with pytest.raises(openai.BadRequestError) as raised:
            if stream:
                async for _ in await client.chat.completions.create(model="gpt-4", messages=USER, stream=True):
                    pass
            else:
                await client.chat.completions.create(model="gpt-4", messages=USER)
    seen = orjson.dumps(raised.value.body).decode() + raised.value.message
    assert_clean(seen)
    assert "[redacted]" in seen  # scrubbed, not dropped: the provider's message is still there
    assert_clean(orjson.dumps(await health(http, host)).decode())


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_provider_error_quoting_the_key_leaves_no_trace_in_the_message_or_health(
    proxy, http, echoing, stream: bool,
) -> None:
    echoing["how"] = "500"
    host = await start(proxy, echoing)
    async with host.client() as client:
        with pytest.raises(openai.APIStatusError) as raised:
            if stream:
                async for _ in await client.chat.completions.create(model="gpt-4", messages=USER, stream=True):
                    pass
            else:
                await client.chat.completions.create(model="gpt-4", messages=USER)
    assert raised.value.status_code == 502
    assert "500 (bad_key:Bearer [redacted])" in raised.value.message
    assert_clean(raised.value.message)
    view = await health(http, host)
    assert view["proxy"]["providers"]["echo"]["last_error"] == "500 (bad_key:Bearer [redacted])"
    assert_clean(orjson.dumps(view).decode())


async def test_a_mid_stream_error_event_quoting_the_key_is_scrubbed(proxy, http, echoing) -> None:
    echoing["how"] = "midstream"
    host = await start(proxy, echoing)
    status, raw, _ = await raw_stream(http, host.url)
    assert status == 200
    text = raw.decode()
    assert "Hello " in text and '"error"' in text  # the stream started, then ended with an error event
    assert "bad_key:Bearer [redacted]" in text
    assert_clean(text)
    assert_clean(orjson.dumps(await health(http, host)).decode())
