"""The hit lane end to end: bytes the cache answered skip parsing, never the gate's rules.

The host keeps a body the gate answered itself under its exact bytes (``hulumanage.chat.HitLane``);
the same bytes again go straight to the gate after authentication and the content type. These
tests send the same bytes many times through the real server and check what a client sees:
the same answer, and every rule of the gate (keys, rpm, ``Cache-Control``, per-client
namespaces, expiry) applied as on the whole path.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from support.helpers import USER, entry

from hulumanage.chat import HitLane, Prepared
from proxy_plugin.clock import ManualClock

ANSWER = "alpha beta gamma delta epsilon zeta"
ALICE = "sk-alice-0123456789"
BOB = "sk-bob-9876543210"
FRONT_ENDS = pytest.mark.parametrize("front", [(), ("--no-fast-path",)], ids=["fast-path", "aiohttp"])
BODY = orjson.dumps({"model": "gpt-4", "messages": USER, "temperature": 0})


async def post(http: Any, host: Any, raw: bytes = BODY, key: str | None = ALICE,
               **headers: str) -> tuple[int, dict[str, Any], Any]:
    sent = {"Content-Type": "application/json", **headers}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    async with http.post(f"{host.url}/v1/chat/completions", data=raw, headers=sent) as resp:
        return resp.status, orjson.loads(await resp.read()), resp.headers


@FRONT_ENDS
async def test_the_same_bytes_again_are_hits_that_still_pass_keys_rpm_and_the_content_type(
    fakes, proxy, http, clock: ManualClock, front,
) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], argv=("--approach", "proxy", *front), cache={"enabled": True},
                       clients={"keys": [{"id": "alice", "key": ALICE, "rpm": 4}]})
    answers = []
    for expected in ("miss", "hit", "hit", "hit"):  # the third and fourth take the lane
        status, body, headers = await post(http, host)
        assert status == 200 and headers["x-hulumanage-cache"] == expected
        answers.append(body)
        assert headers["x-ratelimit-remaining-requests"] == str(4 - len(answers))
    assert answers[1] == answers[2] == answers[3] == answers[0]  # the very answer, id included
    assert answers[0]["choices"][0]["message"]["content"] == ANSWER
    # the bytes are in the lane, and still: rpm, then keys, then the content type
    status, body, _ = await post(http, host)
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    for key in (None, "sk-wrong"):
        status, body, _ = await post(http, host, key=key)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    clock.advance(61)
    status, body, _ = await post(http, host, **{"Content-Type": "text/plain"})
    assert status == 415
    status, body, headers = await post(http, host)
    assert status == 200 and headers["x-hulumanage-cache"] == "hit" and body == answers[0]
    assert len(a.chat_requests()) == 1


async def test_cache_control_and_expiry_apply_to_bytes_in_the_lane(fakes, proxy, http, clock: ManualClock) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache={"enabled": True, "ttl": 60},
                       clients={"keys": [{"id": "alice", "key": ALICE}]})
    seen = []
    for cache_control, expected in (("", "miss"), ("", "hit"), ("", "hit"), ("no-cache", "bypass"), ("", "hit"),
                                    ("no-store", "bypass"), ("", "hit")):
        headers = {"Cache-Control": cache_control} if cache_control else {}
        status, body, answered = await post(http, host, **headers)
        assert status == 200 and answered["x-hulumanage-cache"] == expected, (len(seen), cache_control)
        seen.append(body["id"])
    assert seen[1] == seen[2] == seen[0] and seen[3] != seen[0]  # no-cache went upstream and refreshed the entry
    assert seen[4] == seen[3] and seen[5] != seen[3] and seen[6] == seen[3]  # no-store's answer was not kept
    assert len(a.chat_requests()) == 3
    clock.advance(60)  # the entry expires while its bytes are in the lane: upstream again, then hits
    assert [(await post(http, host))[2]["x-hulumanage-cache"] for _ in range(3)] == ["miss", "hit", "hit"]
    assert len(a.chat_requests()) == 4


@pytest.mark.parametrize("per_client", [True, False])
async def test_each_key_keeps_its_namespace_with_the_same_bytes(fakes, proxy, http, per_client) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache={"enabled": True, "per_client": per_client},
                       clients={"keys": [{"id": "alice", "key": ALICE}, {"id": "bob", "key": BOB}]})
    results = [(await post(http, host, key=key))[2]["x-hulumanage-cache"] for key in (ALICE, ALICE, ALICE, BOB, BOB,
                                                                                       ALICE)]
    if per_client:  # bob's first request finds alice's bytes in the lane, but not in his namespace
        assert results == ["miss", "hit", "hit", "miss", "hit", "hit"]
        assert len(a.chat_requests()) == 2
    else:
        assert results == ["miss", "hit", "hit", "hit", "hit", "hit"]
        assert len(a.chat_requests()) == 1


async def test_an_approach_parameter_or_model_prefix_in_the_bytes_stays_part_of_the_key(fakes, proxy, http) -> None:
    (a,) = await fakes("a", answer=ANSWER)
    host = await proxy([entry(a)], cache={"enabled": True}, clients={"keys": [{"id": "alice", "key": ALICE}]})
    prefixed = orjson.dumps({"model": "proxy-gpt-4", "messages": USER, "temperature": 0})
    for raw, expected in ((BODY, "miss"), (BODY, "hit"), (BODY, "hit"), (prefixed, "hit"), (prefixed, "hit")):
        status, body, headers = await post(http, host, raw)
        assert status == 200 and headers["x-hulumanage-cache"] == expected
        assert body["choices"][0]["message"]["content"] == ANSWER
    assert len(a.chat_requests()) == 1  # proxy-gpt-4 is gpt-4 through the proxy approach: one entry


def test_the_lane_is_bounded_and_keeps_only_small_bodies() -> None:
    lane = HitLane()
    prepared = Prepared({}, ("proxy",), {}, False, None, 1, {})  # type: ignore[arg-type]
    for i in range(HitLane.ENTRIES + 5):
        lane.keep(b"body %d" % i, prepared)
    assert len(lane.entries) == HitLane.ENTRIES
    assert lane.get(b"body 0") is None and lane.get(b"body 5") is prepared  # the oldest went first
    big = b"x" * (HitLane.MAX_BYTES + 1)
    lane.keep(big, prepared)
    assert lane.get(big) is None
    lane.forget(b"body 5")
    assert lane.get(b"body 5") is None
