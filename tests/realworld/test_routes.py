"""Every answer is OpenAI-shaped: unknown paths are 404s, known paths asked with another method 405s."""

from __future__ import annotations

import pytest

FRONT_ENDS = pytest.mark.parametrize("front", [(), ("--no-fast-path",)], ids=["fast-path", "aiohttp"])


@FRONT_ENDS
@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/chat/completions", "POST"),
    ("GET", "/chat/completions", "POST"),
    ("POST", "/v1/models", "GET"),
    ("DELETE", "/health", "GET"),
    ("PUT", "/admin/reload", "POST"),
])
async def test_a_known_path_with_another_method_is_an_openai_405(fakes, proxy, http, front, method, path, allow) -> None:
    (a,) = await fakes("a")
    host = await proxy([{"name": "a", "base_url": a.base_url}], argv=("--approach", "proxy", *front))
    async with http.request(method, f"{host.url}{path}") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == allow
        error = (await resp.json())["error"]
    assert error["code"] == "method_not_allowed" and allow in error["message"]


@FRONT_ENDS
@pytest.mark.parametrize("path", ["/v1/nowhere", "/v1/assistants", "/nowhere"])
async def test_an_unknown_path_is_an_openai_404(fakes, proxy, http, front, path) -> None:
    (a,) = await fakes("a")
    host = await proxy([{"name": "a", "base_url": a.base_url}], argv=("--approach", "proxy", *front))
    for method in ("GET", "POST"):
        async with http.request(method, f"{host.url}{path}", json={}) as resp:
            assert resp.status == 404 and resp.content_type == "application/json"
            assert (await resp.json())["error"]["code"] == "not_found"
