"""Client keys end to end: 401 before anything goes upstream, 403 outside a key's models, the key kept secret."""

from __future__ import annotations

import hashlib
import logging

import openai
import pytest
from support.harness import run_host, write_config
from support.helpers import USER, entry, health

FRONT_ENDS = pytest.mark.parametrize("front", [(), ("--no-fast-path",)], ids=["fast-path", "aiohttp"])
TEAM_A = "sk-team-a-0123456789"
TEAM_B = "sk-team-b-9876543210"
KEYS = {"keys": [
    {"id": "team-a", "key": TEAM_A},
    {"id": "team-b", "key_sha256": hashlib.sha256(TEAM_B.encode()).hexdigest(), "models": ["gpt-4o-*", "llama-*"]},
]}


@FRONT_ENDS
async def test_a_missing_wrong_or_malformed_key_is_a_401_and_nothing_goes_upstream(fakes, proxy, http, front) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front), clients=KEYS)
    async with host.client(api_key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as wrong:
            await client.chat.completions.create(model="gpt-4", messages=USER)
    assert wrong.value.status_code == 401 and wrong.value.code == "invalid_api_key"
    assert "sk-wrong" not in wrong.value.response.text
    url = f"{host.url}/v1/chat/completions"
    for headers in ({}, {"Authorization": "Basic " + TEAM_A}, {"Authorization": "Bearer "}):
        async with http.post(url, json={"model": "gpt-4", "messages": USER}, headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 401 and body["error"]["code"] == "invalid_api_key", headers
            assert TEAM_A not in await resp.text()
    assert a.chat_requests() == []
    for key in (TEAM_A, TEAM_B):  # a plain key and one configured by its sha256 both open the door
        async with host.client(api_key=key) as client:
            reply = await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
            assert reply.choices[0].message.content
    assert len(a.chat_requests()) == 2
    assert all(key not in str(s.headers.get("Authorization")) for s in a.chat_requests() for key in (TEAM_A, TEAM_B))


async def test_a_model_outside_the_keys_globs_is_a_403(fakes, proxy) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], clients=KEYS)
    async with host.client(api_key=TEAM_B) as client:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client.chat.completions.create(model="gpt-4", messages=USER)
        assert refused.value.code == "model_not_allowed"
        await client.chat.completions.create(model="llama-3.1-8b", messages=USER)
        # the model as requested, after the approach prefix: proxy-gpt-4o-mini is gpt-4o-mini
        await client.chat.completions.create(model="proxy-gpt-4o-mini", messages=USER)
    assert [s.json["model"] for s in a.chat_requests()] == ["llama-3.1-8b", "gpt-4o-mini"]


async def test_the_none_approach_never_sends_the_gateway_key_upstream(fakes, tmp_path, isolated_env, monkeypatch) -> None:
    (up,) = await fakes("up")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-server-own")
    path = write_config(tmp_path / "p.yaml", [entry(up)], clients=KEYS)
    async with run_host("--approach", "none", "--base-url", up.base_url, "--proxy-config", str(path)) as host:
        async with host.client(api_key=TEAM_A) as client:
            await client.chat.completions.create(model="gpt-4", messages=USER)
        async with host.client(api_key="sk-wrong") as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="gpt-4", messages=USER)
    (seen,) = up.chat_requests()
    assert seen.headers["Authorization"] == "Bearer sk-server-own"


async def test_keys_never_show_in_logs_errors_health_or_admin_spend(fakes, proxy, http, caplog, monkeypatch) -> None:
    caplog.set_level(logging.DEBUG)
    (a,) = await fakes("a")
    host = await proxy([entry(a)], clients=KEYS, argv=("--approach", "proxy", "--log-level", "DEBUG"))
    seen: list[str] = []
    async with host.client(api_key=TEAM_A) as client:
        await client.chat.completions.create(model="gpt-4", messages=USER)
        with pytest.raises(openai.APIStatusError) as error:
            await client.chat.completions.create(model="gpt-4", messages=USER,
                                                 extra_body={"hulumanage_approach": "no-such"})
        seen.append(error.value.response.text)
    async with host.client(api_key=TEAM_B) as client:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await client.chat.completions.create(model="gpt-4", messages=USER)
        seen.append(denied.value.response.text)
    seen.append(str(await health(http, host)))
    async with http.get(f"{host.url}/admin/spend") as resp:
        assert resp.status == 200
        spend = await resp.json()
        seen.append(await resp.text())
    assert spend["keys"]["team-a"]["requests"] == 1
    server = [r for r in caplog.records if r.name.split(".")[0] in ("hulumanage", "proxy_plugin", "aiohttp")]
    assert any(r.name == "hulumanage.access" for r in server)
    seen.append("\n".join(r.getMessage() for r in server))
    seen.append(repr(host.app))
    for text in seen:
        for secret in (TEAM_A, TEAM_B, hashlib.sha256(TEAM_B.encode()).hexdigest()[:16] + "x"):
            assert secret not in text


async def test_a_client_key_never_opens_admin_routes(fakes, proxy, http, monkeypatch) -> None:
    monkeypatch.setenv("HULUMANAGE_ADMIN_TOKEN", "admin-secret")
    (a,) = await fakes("a")
    host = await proxy([entry(a)], clients=KEYS)
    for path in ("/admin/spend",):
        async with http.get(f"{host.url}{path}", headers={"Authorization": f"Bearer {TEAM_A}"}) as resp:
            assert resp.status == 403
        async with http.get(f"{host.url}{path}", headers={"Authorization": "Bearer admin-secret"}) as resp:
            assert resp.status == 200
        async with http.get(f"{host.url}{path}", headers={"Authorization": "Bearer admin-secret",
                                                           "Host": "evil.example"}) as resp:
            assert resp.status == 421
    async with http.post(f"{host.url}/admin/reload", headers={"Authorization": f"Bearer {TEAM_A}"}) as resp:
        assert resp.status == 403


async def test_listening_beyond_loopback_without_keys_warns(fakes, tmp_path, isolated_env, caplog) -> None:
    (a,) = await fakes("a")
    path = write_config(tmp_path / "p.yaml", [entry(a)])
    with caplog.at_level(logging.WARNING):
        async with run_host("--approach", "proxy", "--host", "0.0.0.0", "--proxy-config", str(path)):
            pass
    assert "anyone who reaches the port spends the providers' keys" in caplog.text
    caplog.clear()
    keyed = write_config(tmp_path / "k.yaml", [entry(a)], clients=KEYS)
    with caplog.at_level(logging.WARNING):
        async with run_host("--approach", "proxy", "--host", "0.0.0.0", "--proxy-config", str(keyed)):
            pass
        async with run_host("--approach", "proxy", "--proxy-config", str(path)):
            pass
    assert "anyone who reaches the port" not in caplog.text
