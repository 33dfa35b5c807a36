"""The proxy's admin routes: ``POST /admin/clear-cache``.

They follow the host's admin rule without importing it: with ``HULUMANAGE_ADMIN_TOKEN``
set, that token as a bearer token; otherwise loopback callers only, addressing the
server by a loopback name (a page rebinding its own name to 127.0.0.1 is refused) and
not from a browser page (a request carrying ``Origin`` is refused: it is cross-site).
"""

from __future__ import annotations

import hmac
import ipaddress
import os

import orjson
from aiohttp import web

from proxy_plugin.approach import RUNTIME

FORBIDDEN = {"error": {"message": "admin calls are allowed from loopback only, or with HULUMANAGE_ADMIN_TOKEN as "
                                 "bearer token", "type": "permission_error", "code": "forbidden"}}


def _loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """``Host`` without its port (``[::1]:8000`` -> ``::1``)."""
    if host.startswith("["):
        return host[1:host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def admin_permitted(request: web.Request) -> bool:
    """The admin rule (module docstring)."""
    token = os.environ.get("HULUMANAGE_ADMIN_TOKEN")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())
    if "Origin" in request.headers or not _loopback(request.remote or ""):
        return False
    host = _host_name(request.host)
    return host.lower() == "localhost" or _loopback(host)


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def clear_cache(request: web.Request) -> web.Response:
    """``POST /admin/clear-cache``: empty the response cache; says how many entries it held."""
    if not admin_permitted(request):
        return _json(403, FORBIDDEN)
    runtime = request.app.get(RUNTIME)
    cleared = 0 if runtime is None else runtime.gate.cache.clear()
    return _json(200, {"message": "Cache cleared successfully", "entries_cleared": cleared})
