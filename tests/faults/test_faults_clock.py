"""Faults over long stretches of time, run on a virtual clock: the real server in-process, its
circuits, failure times and retry budget reading a ``ManualClock`` that the test moves
(``proxy_plugin.plugin.clock_factory``), so a minute-long outage takes milliseconds.

Requests still travel over real HTTP to real fake providers; only the proxy's notion of
"how long ago" is virtual.
"""

from __future__ import annotations

import openai
import pytest
from support.faults import ANSWER, ask
from support.helpers import entry, health

from hulumanage.sim import error, ok, rate_limited, server_error
from proxy_plugin.clock import ManualClock

FAILOVER = {"strategy": "failover", "health_check": {"enabled": False}}
ONE_TRY = {"attempts_per_provider": 1}


async def test_a_recovered_primary_gets_its_traffic_back_within_15s_however_long_the_outage(
    fakes, proxy, clock: ManualClock,
) -> None:
    """Primary down (500) for 60 virtual seconds, a request every 4 s: probed, not hammered; back within 15 s."""
    a, b = await fakes("a", "b", answer=ANSWER)
    host = await proxy([entry(a), entry(b)], routing=FAILOVER, retries=ONE_TRY)  # default breaker settings
    a.set_default(server_error())
    async with host.client() as client:
        who: list[tuple[float, str]] = []
        t = 0.0
        while t < 60:
            reply = await ask(client, int(t) % 8 == 4)  # plain and streamed in turn
            assert reply.text == ANSWER  # the fallback covers every request of the outage
            who.append((t, *reply.fingerprints))
            clock.advance(4)
            t += 4
        during = len(a.chat_requests())
        # 15 requests: 5 consecutive failures open the circuit (at t=16), then one probe
        # per open period (5 s, then 10 s: the cap) - 8 at most, not all 15
        assert 5 < during <= 8, during
        assert {w for _, w in who} == {"fake-b"}
        a.set_default(ok())
        recovered = t
        while t <= recovered + 15:
            reply = await ask(client, False)
            if reply.fingerprints == {"fake-a"}:
                break
            clock.advance(4)
            t += 4
        assert reply.fingerprints == {"fake-a"}, "the primary got no traffic within 15 s of recovering"
        assert t - recovered <= 15
        # and it keeps it
        assert (await ask(client, True)).fingerprints == {"fake-a"}


@pytest.mark.parametrize("status", [401, 403])
async def test_an_auth_failed_provider_is_probed_again_after_open_max_without_health_checks(
    fakes, proxy, http, clock: ManualClock, status: int,
) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    host = await proxy([entry(a), entry(b)], routing=FAILOVER, retries=ONE_TRY,
                       circuit_breaker={"open_base": 1, "open_max": 30, "max_probe_gap": 60})
    a.set_default(error(status, code="invalid_api_key", message="bad key"))
    async with host.client() as client:
        assert (await ask(client, False)).fingerprints == {"fake-b"}
        assert len(a.chat_requests()) == 1
        circuit = (await health(http, host))["proxy"]["providers"]["a"]["circuits"]["*"]
        assert circuit["state"] == "open" and circuit["until_health_check"] is False
        assert circuit["reopens_in"] == 30
        clock.advance(29)
        assert (await ask(client, True)).fingerprints == {"fake-b"}
        assert len(a.chat_requests()) == 1  # still held open
        a.set_default(ok())  # the key was fixed
        clock.advance(1.5)
        assert (await ask(client, False)).fingerprints == {"fake-a"}  # the probe went through and closed it
        assert (await health(http, host))["proxy"]["providers"]["a"]["circuits"]["*"]["state"] == "closed"


async def test_an_auth_failure_waits_for_the_health_check_when_checks_run(fakes, proxy, http, clock: ManualClock) -> None:
    """With health checks on (a long interval here), the circuit stays held for them, not reopened by time."""
    a, b = await fakes("a", "b", answer=ANSWER)
    checked = {"strategy": "failover", "health_check": {"enabled": True, "interval": 3600}}
    host = await proxy([entry(a), entry(b)], routing=checked, retries=ONE_TRY)
    a.set_default(error(401, code="invalid_api_key", message="bad key"))
    async with host.client() as client:
        assert (await ask(client, False)).fingerprints == {"fake-b"}
        clock.advance(3600)
        assert (await ask(client, False)).fingerprints == {"fake-b"}
    assert len(a.chat_requests()) == 1
    assert (await health(http, host))["proxy"]["providers"]["a"]["circuits"]["*"]["until_health_check"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_the_all_failed_error_names_every_provider_once_with_its_attempts_and_the_skipped_ones(
    fakes, proxy, clock: ManualClock, stream: bool,
) -> None:
    a, b = await fakes("a", "b", answer=ANSWER)
    a.set_default(server_error())
    b.script(rate_limited(retry_after=30))  # past retry_after_max: its circuit opens for min(30, max_probe_gap)
    retries = {"attempts_per_provider": 2, "backoff_base": 0.01, "backoff_max": 0.02, "retry_after_max": 1}
    host = await proxy([entry(a), entry(b)], routing=FAILOVER, retries=retries)
    async with host.client() as client:
        with pytest.raises(openai.APIStatusError) as first:
            await ask(client, stream)
        assert first.value.status_code == 502
        assert first.value.body["message"] == (
            "all providers failed for model 'gpt-4' (a: 500 (server_error) x2; b: 429 (rate_limit_exceeded))")
        clock.advance(2.5)
        with pytest.raises(openai.APIStatusError) as second:
            await ask(client, stream)
        assert second.value.status_code == 502
        assert second.value.body["message"] == (
            "all providers failed for model 'gpt-4' "
            "(a: 500 (server_error) x2; b: skipped, circuit open until 7.5s from now)")
    assert len(a.chat_requests()) == 4 and len(b.chat_requests()) == 1
