"""The host's HTTP API through the real server: request validation, /health, /v1/models,
unknown paths, and a proxy request when the proxy is not configured.

Malformed requests are sent with raw aiohttp (the SDK would refuse to build them); every
error must be OpenAI-shaped JSON and nothing may reach an upstream.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from support.harness import run_host, write_config
from support.helpers import USER, entry

OK = {"model": "gpt-4", "messages": USER}


def assert_openai_error(body: Any) -> dict[str, Any]:
    """``body`` is ``{"error": {"message": str, "type": str, "code": ...}}``; return the inner object."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert "code" in error
    return error


BAD: dict[str, tuple[bytes, str]] = {
    "invalid_json": (b'{"model": "gpt-4", "messages": [', "JSON"),
    "empty_body": (b"", "JSON"),
    "array_body": (b'[{"model": "gpt-4"}]', "object"),
    "string_body": (b'"hello"', "object"),
    "null_body": (b"null", "object"),
    "missing_model": (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
    "missing_messages": (b'{"model": "gpt-4"}', "messages"),
    "messages_not_a_list": (b'{"model": "gpt-4", "messages": "hi"}', "messages"),
    "empty_messages": (b'{"model": "gpt-4", "messages": []}', "messages"),
    "message_not_an_object": (b'{"model": "gpt-4", "messages": ["hi"]}', "messages[0]"),
    "message_without_role": (b'{"model": "gpt-4", "messages": [{"content": "hi"}]}', "role"),
    "stream_yes": (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
    "n_zero": (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "n": 0}', "'n'"),
    "n_bool": (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "n": true}', "'n'"),
    "temperature_hot": (
        b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
        "temperature",
    ),
    "max_tokens_text": (
        b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "9"}',
        "max_tokens",
    ),
    "tools_object": (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "tools": {}}', "tools"),
    "approach_not_a_string": (
        b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "hulumanage_approach": 3}',
        "hulumanage_approach",
    ),
    "approach_cycle": (
        b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "hulumanage_approach": "proxy&proxy"}',
        "cycle",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_requests_are_400_and_nothing_goes_upstream(fakes, proxy, http, case: str) -> None:
    data, mentions = BAD[case]
    a, direct = await fakes("a", "direct")
    hosts = [
        await proxy([entry(a)], argv=("--approach", "proxy")),
        await proxy([entry(a)], argv=("--base-url", direct.base_url)),  # default approach none
    ]
    for host in hosts:
        async with http.post(
            f"{host.url}/v1/chat/completions", data=data, headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 400
            assert resp.headers["Content-Type"].startswith("application/json")
            error = assert_openai_error(await resp.json())
        assert error["type"] == "invalid_request_error"
        assert mentions in error["message"]
    assert a.requests == [] and direct.requests == []


async def test_bad_request_through_the_sdk(fakes, proxy) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)])
    async with host.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="gpt-4", messages=USER, n=0)
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="gpt-4", messages=[{"content": "no role"}])  # type: ignore[list-item]
    assert "'n'" in caught.value.body["message"]
    assert a.chat_requests() == []


async def test_health(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)])
    async with http.get(f"{host.url}/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok"
    assert {"none", "proxy", "moa", "bon"} <= set(body["approaches"])
    assert body["default_approach"] == "proxy"
    assert body["proxy"]["configured"] is True
    assert set(body["proxy"]["providers"]) == {"a"}


async def test_models(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a, model_map={"my-alias": "gpt-4"})])
    async with host.client() as client:
        page = await client.models.list()
    assert "my-alias" in {m.id for m in page.data}
    async with http.get(f"{host.url}/v1/models") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["object"] == "list"
    assert all(set(m) >= {"id", "object", "owned_by"} for m in body["data"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing-here"),
        ("POST", "/v1/images/generations"),  # /v1/completions is served: tests/realworld/test_embeddings_completions.py
        ("GET", "/v1/chat/nothing"),  # GET /v1/chat/completions is a 405: tests/realworld/test_routes.py
        ("DELETE", "/v1/models/x"),
    ],
)
async def test_unknown_v1_paths_are_json_404(fakes, proxy, http, method: str, path: str) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)])
    async with http.request(method, f"{host.url}{path}", json=OK) as resp:
        assert resp.status == 404
        error = assert_openai_error(await resp.json())
    assert path in error["message"]
    assert a.requests == []


async def test_proxy_request_without_a_config_is_a_503_saying_how_to_configure(isolated_env, http) -> None:
    async with run_host() as host:  # default approach none; no --proxy-config, no env var, empty HOME
        async with http.get(f"{host.url}/health") as resp:
            assert (await resp.json())["proxy"] == {"configured": False}
        async with host.client() as client:
            for kwargs in (
                {"model": "proxy-gpt-4"},
                {"model": "gpt-4", "extra_body": {"hulumanage_approach": "proxy"}},
            ):
                with pytest.raises(openai.APIStatusError) as caught:
                    await client.chat.completions.create(messages=USER, **kwargs)
                assert caught.value.status_code == 503
                message = caught.value.body["message"]
                assert "--proxy-config" in message and "HULUMANAGE_PROXY_CONFIG" in message
            with pytest.raises(openai.APIStatusError) as caught:
                stream = await client.chat.completions.create(model="proxy-gpt-4", messages=USER, stream=True)
                async for _ in stream:
                    pass
            assert caught.value.status_code == 503


async def test_default_home_config_is_found(isolated_env, fakes, http) -> None:
    (a,) = await fakes("a")
    config_dir = isolated_env / ".hulumanage"
    config_dir.mkdir()
    write_config(config_dir / "proxy_config.yaml", [entry(a)])
    async with run_host("--approach", "proxy") as host, host.client() as client:
        reply = await client.chat.completions.create(model="gpt-4", messages=USER)
    assert reply.system_fingerprint == "fake-a"


async def test_a_form_body_is_a_json_415(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)])
    async with http.post(
        f"{host.url}/v1/chat/completions",
        data="model=gpt-4",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert resp.status == 415
        assert assert_openai_error(await resp.json())["code"] == "unsupported_media_type"
    assert a.requests == []
