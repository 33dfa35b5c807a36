"""The admission's lean lane to Redis (``proxy_plugin/state/lane.py``) against a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from proxy_plugin.state.lane import lane_for, pack

ECHO = "return {ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[2])}"
#: busy for ARGV[1] seconds of Redis's clock, then answers ARGV[2]
SLOW = """
local t = redis.call('TIME')
local stop = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
repeat t = redis.call('TIME') until tonumber(t[1]) + tonumber(t[2]) / 1e6 >= stop
return ARGV[2]
"""


async def loaded(url: str, script: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        sha = await client.script_load(script)
        return sha.decode() if isinstance(sha, bytes) else str(sha)
    finally:
        await client.aclose()


def test_the_lane_speaks_plain_urls_only() -> None:
    assert lane_for("redis://127.0.0.1:6379/0") is not None
    assert lane_for("redis://:secret@cache.internal/2") is not None
    assert lane_for("unix:///run/redis.sock") is not None
    assert lane_for("rediss://cache.internal:6380/0") is None          # TLS: redis-py's client serves it
    assert lane_for("redis://127.0.0.1:6379/0?socket_keepalive=1") is None
    assert pack("EVALSHA", "ab", 1, "k", 2.5) == b"*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n$3\r\n2.5\r\n"


async def test_concurrent_calls_share_one_connection_and_each_gets_its_reply(redis_server: Any) -> None:
    sha = await loaded(redis_server.url, ECHO)
    lane = lane_for(redis_server.url.rsplit("/", 1)[0] + "/3")  # database 3
    assert lane is not None
    try:
        replies = await asyncio.gather(*(lane.evalsha(sha, ["lane:n"], [f"call-{i}", i]) for i in range(300)))
        assert [r[0] for r in replies] == [f"call-{i}".encode() for i in range(300)]
        assert max(r[1] for r in replies) == sum(range(300))
        client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/3")
        try:
            assert int(await client.get("lane:n")) == sum(range(300))  # written in database 3
        finally:
            await client.aclose()
        with pytest.raises(NoScriptError):
            await lane.evalsha("0" * 40, ["lane:n"], ["x", 1])
    finally:
        lane.close()


async def test_a_caller_that_gave_up_leaves_the_replies_in_order(redis_server: Any) -> None:
    slow, echo = await loaded(redis_server.url, SLOW), await loaded(redis_server.url, ECHO)
    lane = lane_for(redis_server.url)
    assert lane is not None
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await lane.evalsha(slow, [], [0.3, "late"])
        reply = await lane.evalsha(echo, ["lane:m"], ["next", 1])  # the late reply is read and dropped first
        assert reply[0] == b"next"
    finally:
        lane.close()


async def test_a_lost_connection_fails_fast_and_the_next_call_connects_again(redis_server: Any) -> None:
    echo = await loaded(redis_server.url, ECHO)
    lane = lane_for(redis_server.url)
    assert lane is not None
    try:
        assert (await lane.evalsha(echo, ["lane:k"], ["one", 1]))[0] == b"one"
        await redis_server.kill()
        with pytest.raises((RedisConnectionError, OSError)):
            async with asyncio.timeout(2):
                await lane.evalsha(echo, ["lane:k"], ["two", 1])
        await redis_server.start()
        with pytest.raises(NoScriptError):  # a restarted Redis forgot the script: the caller loads it again
            await lane.evalsha(echo, ["lane:k"], ["three", 1])
        echo = await loaded(redis_server.url, ECHO)
        assert (await lane.evalsha(echo, ["lane:k"], ["four", 1]))[0] == b"four"
    finally:
        lane.close()
