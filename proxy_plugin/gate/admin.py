"""``GET /admin/spend``: spend and budgets since the counters began (restarts included), under the host's admin rule.

The rule is the host's, restated here because the plugin never imports the host:
``HULUMANAGE_ADMIN_TOKEN`` as the bearer token when it is set (compared in constant time),
else loopback peers only; the ``Host`` header must name this server (a loopback name, the
listening address or ``--allowed-hosts``), against DNS rebinding. A client key never opens it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0].rstrip(".")
    return (host.rpartition(":")[0] if ":" in host else host).rstrip(".")


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "permission_error", "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def admin_refusal(request: web.Request, hosts: frozenset[str]) -> web.Response | None:
    """The 421 / 403 of an admin request that may not pass, or None."""
    host = request.headers.get("Host")
    if host is not None and _name(host) not in hosts:
        return _error(421, "admin requests must name this server in Host", "misdirected_request")
    token = os.environ.get("HULUMANAGE_ADMIN_TOKEN")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        allowed = hmac.compare_digest(given.encode(), token.encode())
    else:
        try:
            allowed = ipaddress.ip_address(request.remote or "").is_loopback
        except ValueError:
            allowed = False
    if not allowed:
        return _error(403, "admin calls are allowed from loopback only, or with HULUMANAGE_ADMIN_TOKEN as bearer token",
                      "forbidden")
    return None


def admin_hosts(options: Any) -> frozenset[str]:
    """The names an admin request's ``Host`` may carry (from the server's options)."""
    listen = str(getattr(options, "host", "127.0.0.1") or "127.0.0.1")
    allowed = getattr(options, "allowed_hosts", None) or ""
    extra = {_name(n) for n in str(allowed).split(",") if n.strip()}
    return LOOPBACK | extra | {_name(f"[{listen}]" if ":" in listen else listen)}


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
