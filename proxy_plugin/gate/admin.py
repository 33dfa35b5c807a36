"""``GET /admin/spend``: spend and budgets since the counters began (restarts included), under the admin rule
(:func:`proxy_plugin.admin.admin_refusal`). A client key never opens it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from proxy_plugin.admin import admin_hosts, admin_refusal


def spend_handler(options: Any, spend_of: Callable[[web.Application], dict[str, Any] | None]) -> Any:
    """The ``GET /admin/spend`` handler; ``spend_of(app)`` is the gate's snapshot (None: proxy not configured)."""
    hosts = admin_hosts(options)

    async def spend(request: web.Request) -> web.Response:
        refused = admin_refusal(request, hosts)
        if refused is not None:
            return refused
        body = spend_of(request.app)
        if body is None:
            body = {"keys": {}, "providers": {}, "models": {}, "budgets": [], "unpriced": [], "configured": False}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    return spend
