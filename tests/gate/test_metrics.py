"""``GET /metrics``: Prometheus series that match the traffic sent, the JSON summary, the admin rule."""

from __future__ import annotations

import asyncio
import datetime

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.helpers import USER, entry

from hulumanage.sim import ok, server_error
from proxy_plugin.approach import RUNTIME

MAPPED = {"model_map": {"gpt-4": "gpt-4"}}
NO_BREAKER = {"circuit_breaker": {"enabled": False}, "retries": {"attempts_per_provider": 1}}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http, host, **headers: str) -> Samples:
    """Every sample of ``/metrics``, by (sample name, labels)."""
    async with http.get(f"{host.url}/metrics", headers=headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_series_match_the_traffic_sent(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b")
    a.set_default(server_error(500))
    host = await proxy([entry(a, **MAPPED), entry(b, **MAPPED)], **NO_BREAKER)
    prompt = completion = 0
    async with host.client() as client:
        for _ in range(3):
            answer = await client.chat.completions.create(model="gpt-4", messages=USER)
            prompt += answer.usage.prompt_tokens
            completion += answer.usage.completion_tokens
        stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True,
                                                      stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.usage is not None:
                prompt += chunk.usage.prompt_tokens
                completion += chunk.usage.completion_tokens
        b.script(server_error(503))
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(model="gpt-4", messages=USER)
    for _ in range(2):  # neither counts as a request
        await http.get(f"{host.url}/health")
        await scrape(http, host)
    m = await scrape(http, host)
    assert value(m, "hulumanage_requests_total", approach="proxy", model="gpt-4", status="200") == 4
    assert value(m, "hulumanage_requests_total", approach="proxy", model="gpt-4", status="502") == 1
    assert sum(v for (name, _), v in m.items() if name == "hulumanage_requests_total") == 5
    assert value(m, "hulumanage_request_duration_seconds_count", approach="proxy", model="gpt-4") == 5
    assert value(m, "hulumanage_time_to_first_token_seconds_count", approach="proxy", model="gpt-4") == 1
    assert value(m, "hulumanage_overhead_seconds_count") == 5
    overhead = value(m, "hulumanage_overhead_seconds_sum")
    duration = value(m, "hulumanage_request_duration_seconds_sum", approach="proxy", model="gpt-4")
    assert overhead is not None and duration is not None and 0 < overhead < duration
    assert value(m, "hulumanage_provider_requests_total", provider="a", model="gpt-4", outcome="transient") == 5
    assert value(m, "hulumanage_provider_requests_total", provider="b", model="gpt-4", outcome="ok") == 4
    assert value(m, "hulumanage_provider_requests_total", provider="b", model="gpt-4", outcome="transient") == 1
    assert value(m, "hulumanage_provider_latency_seconds_count", provider="b") == 4
    assert value(m, "hulumanage_provider_latency_seconds_count", provider="a") is None  # successful attempts only
    assert value(m, "hulumanage_failovers_total", provider="a") == 5
    assert value(m, "hulumanage_failovers_total", provider="b") == 0
    assert value(m, "hulumanage_tokens_total", provider="b", model="gpt-4", type="prompt") == prompt > 0
    assert value(m, "hulumanage_tokens_total", provider="b", model="gpt-4", type="completion") == completion > 0
    assert not any(name == "hulumanage_cost_usd_total" for name, _ in m)  # no prices: nothing spent
    for provider in ("a", "b"):
        assert value(m, "hulumanage_provider_up", provider=provider) == 1
        assert value(m, "hulumanage_circuit_open", provider=provider) == 0
        assert value(m, "hulumanage_in_flight", provider=provider) == 0
    assert value(m, "hulumanage_queue_waiting") == 0
    for reason in ("rpm", "tpm", "parallel", "budget", "auth"):
        assert value(m, "hulumanage_rate_limited_total", reason=reason) == 0
    for result in ("hit", "miss", "bypass"):
        assert value(m, "hulumanage_cache_requests_total", result=result) == 0
    assert value(m, "hulumanage_cache_saved_usd_total") == 0
    assert not any(name.startswith("hulumanage_client_") for name, _ in m)  # per_client is off


async def test_state_gauges_are_read_when_scraped(fakes, proxy, http) -> None:
    a, b = await fakes("a", "b")
    a.set_default(server_error(500))
    b.set_default(ok(latency=0.5))
    host = await proxy([entry(a), entry(b)], retries={"attempts_per_provider": 1}, queue={"max_concurrent": 1},
                       circuit_breaker={"consecutive_failures": 1, "open_base": 60, "open_max": 60})
    async with host.client() as client:
        await client.chat.completions.create(model="gpt-4", messages=USER)  # a fails: its circuit opens
        slow = [asyncio.create_task(client.chat.completions.create(model="gpt-4", messages=USER)) for _ in range(2)]
        await b.wait_for_requests(2, chat_only=True)  # one on b, one waiting for the queue
        m = await scrape(http, host)
        assert value(m, "hulumanage_circuit_open", provider="a") == 1
        assert value(m, "hulumanage_circuit_open", provider="b") == 0
        assert value(m, "hulumanage_in_flight", provider="b") == 1
        assert value(m, "hulumanage_queue_waiting") == 1
        await asyncio.gather(*slow)
    m = await scrape(http, host)
    assert value(m, "hulumanage_in_flight", provider="b") == 0 and value(m, "hulumanage_queue_waiting") == 0


async def test_the_json_summary(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)])
    completion = 0
    async with host.client() as client:
        answer = await client.chat.completions.create(model="gpt-4", messages=USER)
        completion += answer.usage.completion_tokens
        stream = await client.chat.completions.create(model="gpt-4", messages=USER, stream=True,
                                                      stream_options={"include_usage": True})
        async for chunk in stream:
            completion += chunk.usage.completion_tokens if chunk.usage is not None else 0
    async with http.get(f"{host.url}/metrics", headers={"Accept": "application/json"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        summary = await resp.json()
    assert set(summary) == {"performance", "cache", "rate_limiter", "timestamp"}
    performance = summary["performance"]
    assert set(performance) == {"total_requests", "streaming_requests", "non_streaming_requests",
                                "total_tokens_generated", "average_latency_seconds", "errors"}
    assert (performance["total_requests"], performance["streaming_requests"],
            performance["non_streaming_requests"], performance["errors"]) == (2, 1, 1, 0)
    assert performance["total_tokens_generated"] == completion > 0
    assert 0 < performance["average_latency_seconds"] < 5
    assert summary["cache"] == {"hits": 0, "misses": 0, "hit_rate": 0.0, "cache_size": 0}
    assert set(summary["rate_limiter"]) == {"active_clients", "max_requests_per_window", "window_seconds"}
    assert all(isinstance(v, int | float) for part in ("cache", "rate_limiter") for v in summary[part].values())
    stamp = datetime.datetime.fromisoformat(summary["timestamp"])
    assert abs((datetime.datetime.now(datetime.UTC) - stamp).total_seconds()) < 60


async def test_the_json_summary_counts_cache_hits_and_the_rate_limiter(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], cache={"enabled": True}, clients={"anonymous": {"rpm": 50}})
    async with host.client() as client:
        for _ in range(3):  # one miss, then two hits
            await client.chat.completions.create(model="gpt-4", messages=USER, temperature=0)
    async with http.get(f"{host.url}/metrics", headers={"Accept": "application/json"}) as resp:
        summary = await resp.json()
    assert summary["cache"] == {"hits": 2, "misses": 1, "hit_rate": pytest.approx(2 / 3), "cache_size": 1}
    assert summary["rate_limiter"] == {"active_clients": 1, "max_requests_per_window": 50, "window_seconds": 60}


async def test_metrics_not_public_follow_the_admin_rule(fakes, proxy, http, monkeypatch) -> None:
    monkeypatch.setenv("HULUMANAGE_ADMIN_TOKEN", "admin-secret")
    (a,) = await fakes("a")
    private = await proxy([entry(a)], metrics={"public": False})
    public = await proxy([entry(a)])
    url = f"{private.url}/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Accept": "application/json"}):
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 403
            assert "metrics.public" in (await resp.json())["error"]["message"]
    samples = await scrape(http, private, Authorization="Bearer admin-secret")
    assert value(samples, "hulumanage_queue_waiting") == 0
    await scrape(http, public)  # public: no token needed


async def test_metrics_off_is_a_404_and_counts_nothing(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], metrics={"enabled": False})
    async with host.client() as client:
        await client.chat.completions.create(model="gpt-4", messages=USER)
    async with http.get(f"{host.url}/metrics") as resp:
        assert resp.status == 404


async def test_per_client_series_only_when_asked(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)], metrics={"per_client": True})
    async with host.client() as client:
        answer = await client.chat.completions.create(model="gpt-4", messages=USER)
    m = await scrape(http, host)
    assert value(m, "hulumanage_client_requests_total", client="anonymous", status="200") == 1
    assert value(m, "hulumanage_client_tokens_total", client="anonymous", type="completion") == \
        answer.usage.completion_tokens
    # the series never carry a client label
    assert all("client" not in dict(labels) for name, labels in m if not name.startswith("hulumanage_client_"))


async def test_refusals_by_reason_and_only_the_known_reasons(fakes, proxy, http) -> None:
    (a,) = await fakes("a")
    host = await proxy([entry(a)])
    gate = host.app[RUNTIME].gate
    for reason in ("rpm", "rpm", "budget", "made-up"):  # what the limits, budgets and keys call when they refuse
        gate.limited(reason)
    m = await scrape(http, host)
    assert value(m, "hulumanage_rate_limited_total", reason="rpm") == 2
    assert value(m, "hulumanage_rate_limited_total", reason="budget") == 1
    assert {dict(labels)["reason"] for name, labels in m if name == "hulumanage_rate_limited_total"} == {
        "rpm", "tpm", "parallel", "budget", "auth"}


async def test_cost_and_cache_series_match_the_traffic_sent(fakes, proxy, http) -> None:
    """Prices, a budget-free cost, and the cache together: a miss costs, a hit saves what the miss cost."""
    (a,) = await fakes("a")
    prices = {"gpt-4": {"input": 2.0, "output": 8.0}}  # USD per million tokens
    host = await proxy([entry(a, prices=prices, **MAPPED)], cache={"enabled": True})
    async with host.client() as client:
        first = await client.chat.completions.create(model="gpt-4", messages=USER, temperature=0)
        again = await client.chat.completions.create(model="gpt-4", messages=USER, temperature=0)
        await client.chat.completions.create(model="gpt-4", messages=USER)  # temperature 1.0: a bypass
    assert again.choices[0].message.content == first.choices[0].message.content
    assert first.usage is not None
    cost = (first.usage.prompt_tokens * 2.0 + first.usage.completion_tokens * 8.0) / 1e6
    m = await scrape(http, host)
    assert value(m, "hulumanage_cache_requests_total", result="miss") == 1
    assert value(m, "hulumanage_cache_requests_total", result="hit") == 1
    assert value(m, "hulumanage_cache_requests_total", result="bypass") == 1
    assert value(m, "hulumanage_cache_saved_usd_total") == pytest.approx(cost)
    # the miss and the bypass reached the provider and cost; the hit did not
    assert value(m, "hulumanage_cost_usd_total", provider="a", model="gpt-4") == pytest.approx(2 * cost)
    assert len(a.chat_requests()) == 2
