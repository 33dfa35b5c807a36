"""Failover through the real server, one failure class at a time.

Provider ``a`` fails in a given way, provider ``b`` is healthy: retryable failures move the
request to ``b`` and are charged to ``a`` (visible in ``/health``); the caller's own errors
come back as they are and nobody is marked; when every provider fails the client gets a
prompt OpenAI-shaped error that says what each provider did, without any key.
"""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from support.helpers import USER, entry, health

from hulumanage.sim import (
    Behaviour,
    content_filter,
    context_length,
    cut,
    error,
    hang,
    malformed,
    rate_limited,
    reset,
    server_error,
)

FAILOVER = {"strategy": "failover", "health_check": {"enabled": False}}


async def answer(client: openai.AsyncOpenAI, stream: bool, **kwargs: Any) -> tuple[str, str | None]:
    """(text, system_fingerprint) of one request, streamed or not."""
    if not stream:
        reply = await client.chat.completions.create(model="gpt-4", messages=USER, **kwargs)
        return reply.choices[0].message.content or "", reply.system_fingerprint
    chunks = [
        c async for c in await client.chat.completions.create(model="gpt-4", messages=USER, stream=True, **kwargs)
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[0].system_fingerprint


TRANSIENT: dict[str, Behaviour | None] = {
    "connection_refused": None,  # a closed port
    "timeout": hang(5),
    "408": error(408, message="Request timeout (simulated)."),
    "429": rate_limited(),
    "500": server_error(500),
    "502": server_error(502),
    "503": server_error(503),
    "504": server_error(504),
}
PROVIDER_CONFIG: dict[str, Behaviour] = {
    "401": error(401, code="invalid_api_key", message="Incorrect API key provided (simulated)."),
    "403": error(403, code="forbidden", message="Not allowed (simulated)."),
    "404": error(404, code="model_not_found", message="The model does not exist (simulated)."),
}
CASES = [(k, b, "transient") for k, b in TRANSIENT.items()] + [
    (k, b, "provider_config") for k, b in PROVIDER_CONFIG.items()
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("case", "behaviour", "error_class"), CASES, ids=[c[0] for c in CASES])
async def test_failure_moves_to_the_next_provider_and_is_recorded(
    fakes, proxy, http, case: str, behaviour: Behaviour | None, error_class: str, stream: bool
) -> None:
    a, b = await fakes("a", "b")
    first = entry("a") if behaviour is None else entry(a)
    if behaviour is not None:
        a.set_default(behaviour)
    host = await proxy([first, entry(b)], routing=FAILOVER, timeouts={"request": 0.3, "connect": 1})
    started = time.monotonic()
    async with host.client() as client:
        text, fingerprint = await answer(client, stream)
    assert time.monotonic() - started < 3.0
    assert fingerprint == "fake-b"
    assert text == b.answer
    assert len(b.chat_requests()) == 1
    if behaviour is not None:
        # quick transient failures are retried on the same provider first; timeouts and configuration errors are not
        assert len(a.chat_requests()) == (2 if error_class == "transient" and case != "timeout" else 1)
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["failures"] >= 1
    assert view["last_error_class"] == error_class
    assert view["last_error"]
    if case.isdigit():
        assert case in view["last_error"]
    assert (await health(http, host))["proxy"]["providers"]["b"]["failures"] == 0


async def test_auth_failure_keeps_the_provider_out_until_a_health_check(fakes, proxy, http) -> None:
    (a,) = await fakes("a", api_key="sk-right-key-for-a")
    (b,) = await fakes("b")
    host = await proxy([entry(a, api_key="sk-wrong-key-3c8d1f"), entry(b)], routing=FAILOVER)
    async with host.client() as client:
        for _ in range(3):
            assert (await answer(client, False))[1] == "fake-b"
    assert len(a.chat_requests()) == 1  # its circuit stays open: not tried again
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["last_error_class"] == "provider_config"
    assert "sk-wrong-key-3c8d1f" not in repr(await health(http, host))


CALLER: dict[str, tuple[Behaviour, type[openai.APIStatusError]]] = {
    "400": (
        error(
            400,
            code="invalid_value",
            message="Invalid value for 'logit_bias' (simulated).",
            type="invalid_request_error",
        ),
        openai.BadRequestError,
    ),
    "400-content-filter": (content_filter(), openai.BadRequestError),
    "422": (
        error(
            422, code="unprocessable", message="Cannot process this request (simulated).", type="invalid_request_error"
        ),
        openai.UnprocessableEntityError,
    ),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", list(CALLER))
async def test_caller_errors_are_returned_as_is(fakes, proxy, http, case: str, stream: bool) -> None:
    behaviour, exc_type = CALLER[case]
    a, b = await fakes("a", "b")
    a.set_default(behaviour)
    host = await proxy([entry(a), entry(b)], routing=FAILOVER)
    async with host.client() as client:
        with pytest.raises(exc_type) as caught:
            await answer(client, stream)
    exc = caught.value
    assert exc.status_code == behaviour.status
    assert exc.body["message"] == behaviour.message
    assert exc.body["code"] == behaviour.code
    assert exc.body["type"] == behaviour.error_type
    assert len(a.chat_requests()) == 1  # no retry
    assert b.chat_requests() == []  # no failover
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["failures"] == 0
    assert view["last_error_class"] is None
    assert view["healthy"] is True and view["available"] is True


async def test_caller_errors_never_open_the_circuit(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.set_default(error(400, code="invalid_value", message="bad (simulated)", type="invalid_request_error"))
    host = await proxy([entry(a), entry(b)], routing=FAILOVER, circuit_breaker={"consecutive_failures": 2})
    async with host.client() as client:
        for _ in range(5):
            with pytest.raises(openai.BadRequestError):
                await answer(client, False)
    assert len(a.chat_requests()) == 5
    assert b.chat_requests() == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_context_length_moves_to_a_provider_with_another_model(fakes, proxy, http, stream: bool) -> None:
    a, b = await fakes("a", "b")
    a.set_default(context_length())
    host = await proxy([entry(a), entry(b, model_map={"gpt-4": "gpt-4-32k"})], routing=FAILOVER)
    async with host.client() as client:
        text, fingerprint = await answer(client, stream)
    assert (text, fingerprint) == (b.answer, "fake-b")
    assert [s.json["model"] for s in b.chat_requests()] == ["gpt-4-32k"]
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["failures"] == 0  # the caller's prompt is too long: not a's fault


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_context_length_with_no_larger_model_is_returned_as_is(fakes, proxy, stream: bool) -> None:
    a, b = await fakes("a", "b")
    a.set_default(context_length())
    host = await proxy([entry(a), entry(b)], routing=FAILOVER)  # b would get the same model
    async with host.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await answer(client, stream)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert caught.value.body["message"] == context_length().message
    assert b.chat_requests() == []


async def test_all_failing_is_a_prompt_502_naming_each_provider(fakes, proxy) -> None:
    (a,) = await fakes("a", api_key="sk-a-expected-41b7")
    (b,) = await fakes("b", api_key="sk-b-secret-90e2")
    a_key, b_key, c_key = "sk-a-configured-wrong-5d3e", "sk-b-secret-90e2", "sk-c-unreachable-7a7a"
    b.set_default(server_error(503))
    host = await proxy(
        [entry(a, api_key=a_key), entry(b, api_key=b_key), entry("c", api_key=c_key)],
        routing=FAILOVER,
        timeouts={"request": 0.3, "connect": 1},
    )
    started = time.monotonic()
    async with host.client(api_key="sk-client-key-e1e1") as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await answer(client, False)
    assert time.monotonic() - started < 3.0
    exc = caught.value
    assert exc.status_code in (502, 503)
    body = exc.body
    assert set(body) >= {"message", "type", "code"}
    message = body["message"]
    assert "a: 401" in message
    assert "b: 503" in message
    assert "c: connection refused" in message
    for secret in (a_key, b_key, c_key, "sk-a-expected-41b7", "sk-client-key-e1e1"):
        assert secret not in repr(exc.body) and secret not in exc.response.text


async def test_all_failing_while_streaming_is_an_error_before_any_byte(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.set_default(server_error(500))
    b.set_default(server_error(502))
    host = await proxy([entry(a), entry(b)], routing=FAILOVER)
    async with host.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await answer(client, True)
    assert caught.value.status_code == 502
    assert "a: 500" in caught.value.body["message"] and "b: 502" in caught.value.body["message"]


async def test_all_rate_limited_is_a_429_with_retry_after(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    a.set_default(rate_limited(retry_after=7))
    b.set_default(rate_limited(retry_after=9))
    host = await proxy([entry(a), entry(b)], routing=FAILOVER)
    async with host.client() as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await answer(client, False)
    assert caught.value.response.headers["Retry-After"] == "7"
    assert "a: 429" in caught.value.body["message"] and "b: 429" in caught.value.body["message"]


BROKEN_200: dict[str, Behaviour] = {"not_json": malformed(0), "cut_body": cut(0), "reset": reset()}


@pytest.mark.parametrize("case", list(BROKEN_200))
async def test_a_broken_response_fails_over(fakes, proxy, http, case: str) -> None:
    a, b = await fakes("a", "b")
    a.set_default(BROKEN_200[case])
    host = await proxy([entry(a), entry(b)], routing=FAILOVER)
    async with host.client() as client:
        text, fingerprint = await answer(client, False)
    assert (text, fingerprint) == (b.answer, "fake-b")
    view = (await health(http, host))["proxy"]["providers"]["a"]
    assert view["failures"] >= 1
