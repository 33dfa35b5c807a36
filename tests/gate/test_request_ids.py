"""Request ids and who answered, on every chat answer (JSON, stream, error), both front ends."""

from __future__ import annotations

import re

import openai
import orjson
import pytest
from support.helpers import USER, entry

from hulumanage.sim import server_error

FRONT_ENDS = pytest.mark.parametrize("front", [(), ("--no-fast-path",)], ids=["fast-path", "aiohttp"])
CHAT = orjson.dumps({"model": "gpt-4", "messages": USER})


@FRONT_ENDS
async def test_a_clients_request_id_is_echoed_and_a_new_one_made_otherwise(fakes, proxy, http, front) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front))
    url = f"{host.url}/v1/chat/completions"
    headers = {"Content-Type": "application/json"}
    async with http.post(url, data=CHAT, headers={**headers, "X-Request-Id": "trace.42:a-b"}) as resp:
        assert resp.status == 200 and resp.headers["x-request-id"] == "trace.42:a-b"
    ids = set()
    for bad in (None, "has space", "x" * 129):
        sent = headers if bad is None else {**headers, "X-Request-Id": bad}
        async with http.post(url, data=CHAT, headers=sent) as resp:
            made = resp.headers["x-request-id"]
        assert made != bad and re.fullmatch(r"[0-9a-f]{24}", made)
        ids.add(made)
    assert len(ids) == 3


@FRONT_ENDS
async def test_answers_name_the_provider_and_the_attempts(fakes, proxy, front) -> None:
    a, b = await fakes("a", "b")
    a.set_default(server_error(500))
    host = await proxy([entry(a), entry(b)], argv=("--approach", "proxy", *front),
                       retries={"attempts_per_provider": 1})
    async with host.client() as client:
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4", messages=USER)
        assert raw.headers["x-hulumanage-provider"] == "b"
        assert raw.headers["x-hulumanage-attempts"] == "2"
        assert raw.headers["x-request-id"]
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-4", messages=USER, stream=True
        ) as streamed:
            assert streamed.headers["x-hulumanage-provider"] == "b"
            assert streamed.headers["x-request-id"]


@FRONT_ENDS
async def test_errors_carry_the_request_id_in_the_header_and_the_body(fakes, proxy, front) -> None:
    (a,) = await fakes("a")
    a.set_default(server_error(500))
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front), retries={"attempts_per_provider": 1})
    async with host.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4", messages=USER, extra_headers={"X-Request-Id": "r-1"})
    assert caught.value.response.headers["x-request-id"] == "r-1"
    assert caught.value.body["request_id"] == "r-1"
    assert caught.value.response.headers["x-hulumanage-attempts"] == "1"
