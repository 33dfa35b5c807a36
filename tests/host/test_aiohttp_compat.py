"""The aiohttp internals the fast path relies on (``hulumanage/aiohttp_compat.py``) are still there.

When an aiohttp release moves one of them, these fail naming the attribute, before any
request would go wrong; the fix goes into ``aiohttp_compat.py`` alone.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from hulumanage import aiohttp_compat as compat
from hulumanage.fastsite import FastSite


@pytest.mark.parametrize(("owner", "attribute"), [(o, a) for o, a, _ in compat.REQUIRED],
                         ids=[f"{o}.{a}" for o, a, _ in compat.REQUIRED])
def test_every_internal_the_fast_path_uses_exists(owner: str, attribute: str) -> None:
    assert f"{owner}.{attribute}" not in compat.missing(), (
        f"aiohttp moved {owner}.{attribute}: update hulumanage/aiohttp_compat.py")


async def test_the_internals_work_on_a_live_runner_site_and_connection() -> None:
    app = web.Application()
    runner = web.AppRunner(app, shutdown_timeout=7)
    await runner.setup()
    try:
        assert compat.shutdown_timeout(runner) == 7.0, "aiohttp moved BaseRunner._shutdown_timeout"
        site = FastSite(runner, "127.0.0.1", 0, backlog=17)
        assert compat.site_backlog(site) == 17, "aiohttp moved BaseSite._backlog"
        assert compat.protocol_factory(runner) is runner.server, "aiohttp moved BaseRunner.server"
        assert compat.aiohttp_busy(runner) is False, "aiohttp moved Server.connections or RequestHandler._request_in_progress"

        # a connection handed over to aiohttp with bytes already read: aiohttp answers them
        left, right = socket.socketpair()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, left)
        compat.hand_over(runner, transport, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        right.setblocking(False)
        answer = await asyncio.wait_for(loop.sock_recv(right, 4096), 5)
        assert answer.startswith(b"HTTP/1.1 404"), answer
        right.close()

        compat.set_shutdown_timeout(runner, 0.5)
        assert compat.shutdown_timeout(runner) == 0.5
    finally:
        await runner.cleanup()
