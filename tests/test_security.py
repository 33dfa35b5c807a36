"""The security guarantees of README "Security", through the real server on both front ends.

Each test sends what a hostile or careless client would (raw bytes where the SDK would refuse
to build the request) and checks the answer a user sees and that nothing reached an upstream.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from conftest import entry
from harness import Host

from hulumanage.validate import MAX_DEPTH

JSON = {"Content-Type": "application/json"}
FRONT_ENDS = pytest.mark.parametrize("front", [(), ("--no-fast-path",)], ids=["fast-path", "aiohttp"])


def chat_url(host: Host) -> str:
    return f"{host.url}/v1/chat/completions"


async def post(http: aiohttp.ClientSession, url: str, data: bytes | str, headers: dict[str, str] | None = None,
               ) -> tuple[int, dict[str, Any], Any]:
    """POST raw ``data``: (status, response headers, JSON body)."""
    async with http.post(url, data=data, headers=JSON if headers is None else headers) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


def error_of(body: Any) -> dict[str, Any]:
    """The inner object of an OpenAI-shaped error body."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
    assert "code" in error
    return error


# -- 3. deep JSON -------------------------------------------------------------------------


@FRONT_ENDS
async def test_deeply_nested_json_is_a_400_naming_the_limit(fakes, proxy, http, front) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front))
    deep = b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + b"[" * 200 + b"]" * 200 + b"}"
    status, _, body = await post(http, chat_url(host), deep)
    assert status == 400
    error = error_of(body)
    assert error["type"] == "invalid_request_error" and str(MAX_DEPTH) in error["message"]
    ok = b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + b"[" * 60 + b"]" * 60 + b"}"
    status, _, _ = await post(http, chat_url(host), ok)
    assert status == 200  # within the limit: served
    assert len(a.chat_requests()) == 1


# -- 4. huge integers ---------------------------------------------------------------------


@FRONT_ENDS
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "seed", "n"])
async def test_huge_integer_literals_are_a_400_naming_the_field(fakes, proxy, http, front, field: str) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front))
    raw = b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "%s": 100000000000000000000000}' % field.encode()
    status, _, body = await post(http, chat_url(host), raw)
    assert status == 400
    error = error_of(body)
    assert f"'{field}'" in error["message"] and "too large" in error["message"]
    assert "must be an integer, got" not in error["message"]
    assert a.chat_requests() == []
