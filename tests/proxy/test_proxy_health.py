"""Health through the real server: active checks, circuit breakers, ``/health`` and ``/v1/models``.

Active checks run every 0.1 s with a 0.2 s timeout; state changes are awaited with a
deadline (``until``), never with fixed sleeps.
"""

from __future__ import annotations

from typing import Any

import openai
from support.helpers import USER, entry, health, until

from hulumanage.sim import error, ok, server_error

CHECKED = {"strategy": "round_robin", "health_check": {"enabled": True, "interval": 0.1, "timeout": 0.2}}
ROUND_ROBIN = {"strategy": "round_robin", "health_check": {"enabled": False}}


async def ask(client: openai.AsyncOpenAI, model: str = "gpt-4", **kwargs: Any) -> str | None:
    """The fingerprint (``fake-<name>``) of the provider that answered one request."""
    reply = await client.chat.completions.create(model=model, messages=USER, **kwargs)
    return reply.system_fingerprint


# -- active checks ---------------------------------------------------------------------------------


async def test_a_provider_failing_its_check_leaves_rotation_and_comes_back(fakes, proxy, http) -> None:
    (a,) = await fakes("a", api_key="sk-health-key-a-61f0")  # the check must send the provider's key
    (b,) = await fakes("b")
    host = await proxy([entry(a), entry(b)], routing=CHECKED)

    async def healthy(name: str, expected: bool) -> bool:
        return (await health(http, host))["proxy"]["providers"][name]["healthy"] is expected

    await until(lambda: healthy("a", True))
    assert any(s.path == "/v1/models" and s.behaviour == "models" for s in a.requests)
    a.set_models_status(503)
    await until(lambda: healthy("a", False))
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["last_error_class"] == "transient"
    assert "503" in view["last_error"]
    async with host.client() as client:
        before = len(a.chat_requests())
        assert [await ask(client) for _ in range(6)] == ["fake-b"] * 6
        assert len(a.chat_requests()) == before
        a.set_models_status(200)
        await until(lambda: healthy("a", True))
        served = [await ask(client) for _ in range(4)]
    assert sorted(served) == ["fake-a", "fake-a", "fake-b", "fake-b"]


async def test_a_check_rejected_for_auth_is_a_configuration_error(fakes, proxy, http) -> None:
    (a,) = await fakes("a", api_key="sk-expected-key-2b7d")
    (b,) = await fakes("b")
    host = await proxy([entry(a, api_key="sk-configured-wrong-9e9e"), entry(b)], routing=CHECKED)

    async def unhealthy() -> bool:
        return (await health(http, host))["proxy"]["providers"]["a"]["healthy"] is False

    await until(unhealthy)
    body = await health(http, host)
    assert body["proxy"]["providers"]["a"]["last_error_class"] == "provider_config"
    assert "sk-configured-wrong-9e9e" not in repr(body) and "sk-expected-key-2b7d" not in repr(body)


async def test_when_no_provider_is_healthy_requests_still_try_them(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b")
    a.set_models_status(500)
    b.set_models_status(500)
    host = await proxy([entry(a), entry(b)], routing=CHECKED)

    async def none_healthy() -> bool:
        providers = (await health(http, host))["proxy"]["providers"]
        return not providers["a"]["healthy"] and not providers["b"]["healthy"]

    await until(none_healthy)
    async with host.client() as client:
        served = [await ask(client) for _ in range(4)]
    assert set(served) <= {"fake-a", "fake-b"} and len(served) == 4


# -- passive: circuit breakers -------------------------------------------------------------------


async def test_live_failures_open_the_circuit_and_traffic_moves(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b")
    a.set_default(server_error(500))
    host = await proxy(
        [entry(a), entry(b)],
        routing=ROUND_ROBIN,
        retries={"attempts_per_provider": 1},
        circuit_breaker={"consecutive_failures": 2, "open_base": 30, "open_max": 60},
    )
    async with host.client() as client:
        served = [await ask(client) for _ in range(10)]
    assert served == ["fake-b"] * 10  # every request answered, a's failures failed over
    assert len(a.chat_requests()) == 2  # after two consecutive failures a is out of rotation
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["circuits"]["gpt-4"]["state"] == "open"
    assert view["failures"] == 2
    assert view["last_error_class"] == "transient"


async def test_connection_failures_open_the_whole_provider(fakes, proxy, http) -> None:
    (b,) = await fakes("b")
    host = await proxy(
        [entry("dead"), entry(b)],
        routing=ROUND_ROBIN,
        retries={"attempts_per_provider": 1},
        circuit_breaker={"consecutive_failures": 2, "open_base": 30, "open_max": 60},
    )
    async with host.client() as client:
        assert [await ask(client) for _ in range(3)] == ["fake-b"] * 3
        assert [await ask(client, model="gpt-4o-mini") for _ in range(3)] == ["fake-b"] * 3
    view = (await health(http, host))["proxy"]["providers"]["dead"]
    assert view["circuits"]["*"]["state"] == "open"
    assert view["available"] is False
    assert view["failures"] == 2  # the other model was not tried on it either


async def test_an_open_circuit_probes_and_closes_when_the_provider_recovers(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b")
    a.set_default(server_error(503))
    host = await proxy(
        [entry(a), entry(b)],
        routing={"strategy": "failover", "health_check": {"enabled": False}},
        retries={"attempts_per_provider": 1},
        circuit_breaker={"consecutive_failures": 1, "open_base": 0.2, "open_max": 0.2},
    )
    async with host.client() as client:
        assert await ask(client) == "fake-b"
        assert await ask(client) == "fake-b"
        assert len(a.chat_requests()) == 1  # open: skipped
        a.set_default(ok())

        async def back_on_a() -> bool:
            return await ask(client) == "fake-a"

        await until(back_on_a)
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["circuits"]["gpt-4"]["state"] == "closed"
    assert view["circuits"]["gpt-4"]["opened"] == 1  # how often it opened stays visible after it closed


# -- /health and /v1/models --------------------------------------------------------------------------


async def test_health_reports_each_provider(fakes, proxy, http) -> None:
    (a,) = await fakes("a", api_key="sk-status-page-key-a-0c0c")
    (b,) = await fakes("b")
    a.set_default(ok(latency=0.05))
    b.set_default(server_error(502))
    host = await proxy([entry(a), entry(b, weight=2)], routing=ROUND_ROBIN, retries={"attempts_per_provider": 1})
    async with host.client(api_key="sk-client-on-health-5a5a") as client:
        for _ in range(4):
            assert await ask(client) == "fake-a"
    body = await health(http, host)
    assert body["status"] == "ok"
    assert "proxy" in body["approaches"]
    proxy_view = body["proxy"]
    assert proxy_view["configured"] is True
    assert proxy_view["strategy"] == "round_robin"
    a_view, b_view = proxy_view["providers"]["a"], proxy_view["providers"]["b"]
    assert a_view["healthy"] is True and a_view["failures"] == 0 and a_view["last_error_class"] is None
    assert a_view["latency_ms"]["samples"] == 4
    assert a_view["latency_ms"]["p50"] >= 50
    assert b_view["failures"] >= 1 and b_view["last_error_class"] == "transient"
    assert "502" in b_view["last_error"]
    assert b_view["weight"] == 2
    text = repr(body)
    assert "sk-status-page-key-a-0c0c" not in text and "sk-client-on-health-5a5a" not in text


async def test_models_lists_aliases_and_what_providers_report(fakes, proxy) -> None:
    (a,) = await fakes("a", models=("a-model-1", "shared"))
    (b,) = await fakes("b", models=("b-model-2", "shared"))
    host = await proxy(
        [entry(a, model_map={"alias-x": "a-model-1"}), entry(b, model_map={"alias-y": "b-model-2"})], routing=CHECKED
    )
    expected = {"alias-x", "alias-y", "a-model-1", "b-model-2", "shared"}
    async with host.client() as client:

        async def listed() -> bool:
            return {m.id for m in (await client.models.list()).data} >= expected

        await until(listed)
        models = (await client.models.list()).data
    ids = [m.id for m in models]
    assert len(ids) == len(set(ids))  # deduplicated
    assert {m.id: m.object for m in models if m.id in expected} == dict.fromkeys(expected, "model")


async def test_models_lists_aliases_before_any_check(fakes, proxy) -> None:
    (a,) = await fakes("a", models=("a-model-1",))
    host = await proxy([entry(a, model_map={"alias-x": "a-model-1"})], routing=ROUND_ROBIN)
    async with host.client() as client:
        ids = {m.id for m in (await client.models.list()).data}
    assert "alias-x" in ids


async def test_an_auth_failure_holds_the_circuit_until_a_health_check_passes(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b")
    a.script(error(401, code="invalid_api_key", message="Incorrect API key provided (simulated)."))
    host = await proxy(
        [entry(a), entry(b)],
        retries={"attempts_per_provider": 1},
        routing={"strategy": "failover", "health_check": {"enabled": True, "interval": 1.0, "timeout": 0.2}},
    )
    # right after a check, so the next one is about a second away
    await until(lambda: _checked(a, 1))
    async with host.client() as client:
        assert await ask(client) == "fake-b"  # a answered 401: failed over
        view = (await health(http, host))["proxy"]["providers"]["a"]
        assert view["circuits"]["*"]["state"] == "open" and view["circuits"]["*"]["until_health_check"] is True
        assert view["last_error_class"] == "provider_config"
        assert await ask(client) == "fake-b"
        assert len(a.chat_requests()) == 1  # held open: not tried again

        # only a passing check can close it (it has no timer): a serves again after the next check
        async def back_on_a() -> bool:
            return await ask(client) == "fake-a"

        await until(back_on_a)
    assert sum(s.path == "/v1/models" for s in a.requests) >= 2


async def _checked(provider, n: int) -> bool:
    return sum(s.path == "/v1/models" for s in provider.requests) >= n


async def test_a_provider_whose_check_cannot_be_built_is_a_config_error_and_the_others_are_still_checked(
    fakes, proxy, http
) -> None:
    (a,) = await fakes("a")
    (b,) = await fakes("b")
    with_credentials = a.base_url.replace("http://", "http://user:pass@")  # and an api_key: aiohttp refuses both
    host = await proxy([entry(a, base_url=with_credentials, api_key="sk-also-a-key"), entry(b)], routing=CHECKED)

    async def checked() -> bool:
        providers = (await health(http, host))["proxy"]["providers"]
        return providers["a"]["last_error_class"] == "provider_config"

    await until(checked)
    providers = (await health(http, host))["proxy"]["providers"]
    assert "could not be built" in providers["a"]["last_error"] and "pass" not in providers["a"]["last_error"]
    assert providers["b"]["healthy"] is True
    assert any(s.path == "/v1/models" for s in b.requests)  # the round went on for the others
