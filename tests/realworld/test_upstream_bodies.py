"""A provider's error body that is not an OpenAI error (plain text, HTML) reaches the client OpenAI-shaped."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import openai
import pytest
from aiohttp import web
from support.helpers import USER
from support.upstream import serving

HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[int, str, str], str]]:
    """Start upstreams that answer every chat request with ``status``, ``content_type`` and ``text``."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(status: int, content_type: str, text: str) -> str:
            async def handle(request: web.Request) -> web.Response:
                return web.Response(status=status, text=text, content_type=content_type)

            return await stack.enter_async_context(serving(handle)) + "/v1"

        yield start  # type: ignore[misc]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_plain_text_413_is_an_openai_error_naming_the_provider(raw_upstream, proxy, stream: bool) -> None:
    url = await raw_upstream(413, "text/plain", "Request Entity Too Large")
    host = await proxy([{"name": "small", "base_url": url}])
    async with host.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4", messages=USER, stream=stream)
    error = caught.value
    assert error.status_code == 413
    assert error.response.headers["content-type"].startswith("application/json")
    assert isinstance(error.body, dict) and error.body["code"] == "upstream_error_not_json"
    assert "small" in error.body["message"] and "413" in error.body["message"]
    assert "Request Entity Too Large" in error.body["message"]


async def test_an_html_502_page_fails_over_and_is_named_without_its_markup(raw_upstream, proxy) -> None:
    url = await raw_upstream(502, "text/html", HTML_502)
    host = await proxy([{"name": "edge", "base_url": url}], retries={"attempts_per_provider": 1})
    async with host.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4", messages=USER)
    error = caught.value
    assert error.status_code == 502 and error.response.headers["content-type"].startswith("application/json")
    assert isinstance(error.body, dict) and "edge: 502" in error.body["message"]
    assert "<html" not in error.body["message"]


async def test_a_404_from_a_base_url_without_a_version_segment_hints_at_it(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    bare = a.base_url.removesuffix("/v1")  # the fake serves /v1/...: without it every path is a 404
    host = await proxy([{"name": "bare", "base_url": bare}, {"name": "versioned", "base_url": f"{bare}/v2"}],
                       routing={"strategy": "failover", "health_check": {"enabled": True, "interval": 0.1,
                                                                         "timeout": 1}},
                       retries={"attempts_per_provider": 1})
    async with host.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4", messages=USER)
    message = caught.value.body["message"]
    bare_part, versioned_part = message.split("; ")[:2]
    assert "bare: 404" in bare_part and "/v1" in bare_part and "version segment" in bare_part
    assert "versioned: 404" in versioned_part and "version segment" not in versioned_part
    async with http.get(f"{host.url}/health") as resp:
        providers = (await resp.json())["proxy"]["providers"]
    assert "version segment" in providers["bare"]["last_error"]
    assert "version segment" not in providers["versioned"]["last_error"]
