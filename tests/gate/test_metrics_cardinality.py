"""Bounded cardinality: whatever model names clients send, ``/metrics`` keeps the same series."""

from __future__ import annotations

import asyncio
import secrets

import orjson
from prometheus_client.parser import text_string_to_metric_families
from support.helpers import USER, entry

from hulumanage.gate import GateRequest
from proxy_plugin.approach import RUNTIME
from proxy_plugin.attempts import Outcome
from proxy_plugin.classify import Failure
from proxy_plugin.gate import Client

USAGE = {"prompt_tokens": 3, "completion_tokens": 5}


async def samples(http, host) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with http.get(f"{host.url}/metrics") as resp:
        text = await resp.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def drive(gate, model: str, kind: int) -> None:
    """One request through the ticket API, as the host and the dispatch loop drive it (``kind``: which outcome)."""
    if kind == 3:  # refused before admission
        gate.refused(429, ("proxy",), model, 0.001)
        return
    ticket = gate.admit(Client("anonymous", "127.0.0.1"),
                        GateRequest({"model": model, "messages": USER}, ("proxy",), kind == 1, "127.0.0.1", "r", ""))
    if kind == 2:  # a failed attempt on a, then nobody answers
        ticket.attempting()
        ticket.attempted("a", model, Outcome(Failure.TRANSIENT, 500), 0.001)
        ticket.finish(502, True, None, 0.002)
        return
    ticket.attempting()
    ticket.answering("a", model)
    ticket.attempted("a", model, Outcome(ok=True), 0.001)
    ticket.record("a", model, USAGE)
    ticket.finish(200, True, 0.0005 if kind == 1 else None, 0.002)


async def test_random_model_names_leave_the_series_count_unchanged(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a, model_map={"gpt-4": "gpt-4-0613"})])
    gate = host.app[RUNTIME].gate
    url = f"{host.url}/v1/chat/completions"

    async def post(model: str) -> None:
        body = orjson.dumps({"model": model, "messages": USER})
        async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200

    for kind in range(4):  # every kind of request once, with a configured and an unknown model
        drive(gate, "gpt-4", kind)
        drive(gate, "not-configured", kind)
    await post("gpt-4")
    await post("not-configured")
    before = await samples(http, host)

    for _ in range(4):  # end to end through the server: 400 requests, 100 at a time
        await asyncio.gather(*(post(f"m-{secrets.token_hex(6)}") for _ in range(100)))
    for i in range(10_000):  # and 10,000 through the ticket API
        drive(gate, f"r-{secrets.token_hex(6)}-{i}", i % 4)
    after = await samples(http, host)

    assert set(after) == set(before)
    requests = {dict(labels)["model"]: v for (name, labels), v in after.items()
                if name == "hulumanage_requests_total" and dict(labels)["status"] == "200"}
    assert set(requests) == {"gpt-4", "other"}
    assert requests["other"] - before[("hulumanage_requests_total", frozenset(
        {("approach", "proxy"), ("model", "other"), ("status", "200")}))] == 400 + 5_000
    tokens = {dict(labels)["model"] for (name, labels), _ in after.items() if name == "hulumanage_tokens_total"}
    assert tokens <= {"gpt-4", "gpt-4-0613", "other"}
