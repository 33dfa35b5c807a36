"""Fixtures of the scale tests: the gate's two Redis scripts on the test's Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis

from proxy_plugin.gate.shared import ADMIT, SETTLE


@pytest.fixture
async def scripts(redis_server: Any) -> AsyncIterator[tuple[Any, Any, Any]]:
    """(client, admit, settle) on the test's Redis."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        yield client, client.register_script(ADMIT), client.register_script(SETTLE)
    finally:
        await client.aclose()
