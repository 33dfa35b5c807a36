"""The security guarantees of README "Security", through the real server on both front ends.

Each test sends what a hostile or careless client would (raw bytes where the SDK would refuse
to build the request) and checks the answer a user sees and that nothing reached an upstream.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson
import pytest
from support.harness import Host, run_host, write_config
from support.helpers import USER, entry

from hulumanage import hookimpl
from hulumanage.app import StartupError
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


# -- 1. clients cannot escape the pool --------------------------------------------------


@FRONT_ENDS
async def test_none_is_not_selectable_under_the_proxy(fakes, proxy, http, front) -> None:
    a, direct = await fakes("a", "direct")
    host = await proxy([entry(a)], argv=("--approach", "proxy", "--base-url", direct.base_url, *front))
    forms = [
        {"model": "none-gpt-4o-mini", "messages": USER},
        {"model": "gpt-4o-mini", "messages": USER, "hulumanage_approach": "none"},
        {"model": "gpt-4o-mini", "messages": USER, "hulumanage_approach": "bon&none"},
    ]
    for form in forms:
        status, _, body = await post(http, chat_url(host), orjson.dumps(form))
        assert status == 403, form
        error = error_of(body)
        assert error["code"] == "approach_not_allowed" and "'none'" in error["message"]
    async with host.client() as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(model="none-gpt-4o-mini", messages=USER)
        assert caught.value.body["code"] == "approach_not_allowed"
        with pytest.raises(openai.PermissionDeniedError):
            stream = await client.chat.completions.create(model="none-gpt-4o-mini", messages=USER, stream=True)
            async for _ in stream:
                pass
        assert (await client.chat.completions.create(model="gpt-4o-mini", messages=USER)).choices  # the pool serves
        assert (await client.chat.completions.create(model="bon-gpt-4o-mini", messages=USER)).choices
    assert direct.requests == []
    async with http.get(f"{host.url}/health") as resp:
        listed = (await resp.json())["allowed_approaches"]
    assert "none" not in listed and {"proxy", "bon", "moa"} <= set(listed)


async def test_allow_approaches_narrows_and_widens(fakes, proxy, http) -> None:
    a, direct = await fakes("a", "direct")
    narrow = await proxy([entry(a)], argv=("--approach", "proxy", "--allow-approaches", "moa"))
    status, _, body = await post(http, chat_url(narrow), orjson.dumps({"model": "bon&proxy-gpt-4", "messages": USER}))
    assert status == 403 and "'bon'" in error_of(body)["message"]
    status, _, body = await post(http, chat_url(narrow), orjson.dumps({"model": "moa-gpt-4", "messages": USER}))
    assert status == 200
    status, _, body = await post(http, chat_url(narrow), orjson.dumps({"model": "proxy-gpt-4", "messages": USER}))
    assert status == 200  # the server's own default is always fine, named or not
    async with http.get(f"{narrow.url}/health") as resp:
        assert (await resp.json())["allowed_approaches"] == ["moa", "proxy"]

    wide = await proxy([entry(a)], argv=("--approach", "proxy", "--base-url", direct.base_url,
                                         "--allow-approaches", "proxy,none"))
    async with wide.client() as client:
        reply = await client.chat.completions.create(model="none-gpt-4", messages=USER)
    assert reply.system_fingerprint == "fake-direct"
    assert len(direct.chat_requests()) == 1

    # any other default approach: every approach, as before
    plain = await proxy([entry(a)], argv=("--base-url", direct.base_url))
    async with plain.client() as client:
        await client.chat.completions.create(model="none-gpt-4", messages=USER)
        await client.chat.completions.create(model="proxy-gpt-4", messages=USER)
    assert len(direct.chat_requests()) == 2


async def test_an_unknown_allowed_approach_is_a_startup_error(isolated_env) -> None:
    with pytest.raises(StartupError) as caught:
        async with run_host("--approach", "proxy", "--allow-approaches", "proxy,mao"):
            pass
    message = str(caught.value)
    assert "'mao'" in message and "--allow-approaches" in message and "did you mean 'moa'" in message


# -- 2. fan-out is bounded ----------------------------------------------------------------


@FRONT_ENDS
async def test_bon_with_a_huge_n_is_a_400_before_any_upstream_call(fakes, proxy, http, front) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front))
    for model, fields in (("bon-gpt-4", {"n": 2000}), ("bon&moa-gpt-4", {"bon_n": 4, "moa_proposals": 4})):
        status, _, body = await post(http, chat_url(host), orjson.dumps({"model": model, "messages": USER, **fields}))
        assert status == 400, model
        error = error_of(body)
        assert error["code"] == "fanout_exceeded" and "32" in error["message"] and "--max-fanout" in error["message"]
    async with host.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="bon-gpt-4", messages=USER, n=2000, stream=True)
        assert caught.value.body["code"] == "fanout_exceeded"
        reply = await client.chat.completions.create(model="gpt-4", messages=USER, n=50)  # plain proxy: one call
    assert len(reply.choices) == 50
    assert len(a.chat_requests()) == 1


async def test_max_fanout_is_a_flag(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=("--approach", "proxy", "--max-fanout", "5"))
    async with host.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="bon-gpt-4", messages=USER)  # 3 samples + 3 ratings
        assert "at most 5" in caught.value.body["message"]
        assert (await client.chat.completions.create(model="moa-gpt-4", messages=USER,
                                                     extra_body={"moa_proposals": 3})).choices  # 3 + 2
    assert a.chat_requests()


class Looper:
    """A third-party approach that declares no fan-out and calls its client until refused."""

    slug = "looper"
    description = "calls its client forever"
    params: dict[str, str] = {}  # noqa: RUF012 - a test double
    terminal = False

    async def run(self, call: Any) -> Any:
        while True:
            await call.client.chat.completions.create(model=call.request["model"], messages=call.request["messages"])


class LooperPlugin:
    @hookimpl
    def register_approaches(self, register: Any) -> None:
        register(Looper())


@FRONT_ENDS
async def test_an_approach_that_loops_on_its_client_is_stopped_at_the_cap(fakes, tmp_path, isolated_env, http, front) -> None:
    (a,) = await fakes("a")
    config = write_config(tmp_path / "p.yaml", [entry(a)])
    async with run_host("--approach", "proxy", "--proxy-config", str(config), "--max-fanout", "7", *front,
                        plugins=[LooperPlugin()]) as host:
        status, _, body = await post(http, chat_url(host), orjson.dumps({"model": "looper-gpt-4", "messages": USER}))
    assert status == 400
    error = error_of(body)
    assert error["code"] == "fanout_exceeded" and "7" in error["message"]
    assert len(a.chat_requests()) == 7


@FRONT_ENDS
async def test_proxy_wrap_is_bounded_and_allow_listed_like_a_prefix(fakes, tmp_path, isolated_env, http, front) -> None:
    (a,) = await fakes("a")
    config = write_config(tmp_path / "p.yaml", [entry(a)])
    async with run_host("--approach", "proxy", "--proxy-config", str(config), "--max-fanout", "7",
                        "--allow-approaches", "proxy,bon,looper", *front, plugins=[LooperPlugin()]) as host:
        url = chat_url(host)
        wrapped = {"model": "gpt-4", "messages": USER, "hulumanage_approach": "proxy"}
        status, _, body = await post(http, url, orjson.dumps({**wrapped, "proxy_wrap": "bon", "n": 2000}))
        assert status == 400 and error_of(body)["code"] == "fanout_exceeded"  # declared: before any call
        assert a.chat_requests() == []
        status, _, body = await post(http, url, orjson.dumps({**wrapped, "proxy_wrap": "moa"}))
        assert status == 403 and error_of(body)["code"] == "approach_not_allowed"  # not in --allow-approaches
        assert a.chat_requests() == []
        status, _, body = await post(http, url, orjson.dumps({**wrapped, "proxy_wrap": "looper"}))
        assert status == 400 and error_of(body)["code"] == "fanout_exceeded"  # counted as it runs
        assert len(a.chat_requests()) == 7


# -- 5. cross-site requests ---------------------------------------------------------------

CHAT = orjson.dumps({"model": "gpt-4", "messages": USER})


@FRONT_ENDS
async def test_bodies_that_are_not_json_are_a_415_and_nothing_goes_upstream(fakes, proxy, http, front) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, _, body = await post(http, chat_url(host), CHAT, {"Content-Type": content_type})
        assert status == 415, content_type
        error = error_of(body)
        assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    assert a.chat_requests() == []
    status, _, _ = await post(http, chat_url(host), CHAT, {"Content-Type": "Application/JSON; charset=utf-8"})
    assert status == 200
    assert len(a.chat_requests()) == 1


@FRONT_ENDS
async def test_a_cross_origin_request_is_a_403_before_anything_else(fakes, proxy, http, front) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front))
    for content_type in ("application/json", "text/plain"):  # the origin is checked before the content type
        status, headers, body = await post(
            http, chat_url(host), CHAT, {"Content-Type": content_type, "Origin": "https://evil.example"}
        )
        assert status == 403
        assert error_of(body)["code"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in headers
    async with http.get(f"{host.url}/v1/models", headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403
    async with http.options(chat_url(host), headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"}) as resp:
        assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
    assert a.requests == []
    async with host.client() as client:  # no Origin (SDKs, curl): unaffected
        assert (await client.chat.completions.create(model="gpt-4", messages=USER)).choices


@FRONT_ENDS
async def test_cors_origins_allow_a_browser_page(fakes, proxy, http, front) -> None:
    (a,) = await fakes("a")
    app_origin = "https://app.example.com"
    host = await proxy([entry(a)], argv=("--approach", "proxy", "--cors-origins", f"{app_origin},http://localhost:3000",
                                         *front))
    for url in (chat_url(host), f"{host.url}/chat/completions", f"{host.url}/health", f"{host.url}/v1/models"):
        async with http.options(url, headers={
            "Origin": app_origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }) as resp:
            assert resp.status in (200, 204), url
            assert resp.headers["Access-Control-Allow-Origin"] == app_origin
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert "content-type" in resp.headers["Access-Control-Allow-Headers"].lower()
    status, headers, body = await post(http, chat_url(host), CHAT, {**JSON, "Origin": app_origin})
    assert status == 200 and body["choices"]
    assert headers["Access-Control-Allow-Origin"] == app_origin
    streamed = orjson.dumps({"model": "gpt-4", "messages": USER, "stream": True})
    async with http.post(chat_url(host), data=streamed, headers={**JSON, "Origin": app_origin}) as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == app_origin
        assert (await resp.read()).rstrip().endswith(b"data: [DONE]")
    status, headers, body = await post(http, chat_url(host), b"{}", {**JSON, "Origin": app_origin})
    assert status == 400 and headers["Access-Control-Allow-Origin"] == app_origin  # errors are readable too
    async with http.get(f"{host.url}/health", headers={"Origin": app_origin}) as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == app_origin
    status, _, _ = await post(http, chat_url(host), CHAT, {**JSON, "Origin": "https://other.example"})
    assert status == 403


async def test_admin_requests_must_name_this_server_in_host(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)])
    reload_url = f"{host.url}/admin/reload"
    async with http.post(reload_url, headers={"Host": "evil.example"}) as resp:
        assert resp.status == 421
        assert error_of(await resp.json())["code"] == "misdirected_request"
    async with http.post(reload_url, headers={"Host": "evil.example:80", "Origin": "https://evil.example"}) as resp:
        assert resp.status == 403  # Origin first
    for name in (f"localhost:{host.port}", f"127.0.0.1:{host.port}", "[::1]", "LOCALHOST"):
        async with http.post(reload_url, headers={"Host": name}) as resp:
            assert resp.status == 200, name
            assert (await resp.json())["reloaded"]
    async with http.post(reload_url, data=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert resp.status == 415  # after Host and the loopback check, a body must be JSON
    wider = await proxy([entry(a)], argv=("--approach", "proxy", "--allowed-hosts", "gateway.internal"))
    async with http.post(f"{wider.url}/admin/reload", headers={"Host": "gateway.internal:8000"}) as resp:
        assert resp.status == 200
