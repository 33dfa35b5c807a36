"""The plugin's admin rule, its one copy, and ``POST /admin/clear-cache``.

The rule is the host's, restated here because the plugin never imports the host. In order:

1. ``Host`` must name this server (a loopback name, the listening address or
   ``--allowed-hosts``), against DNS rebinding: else a 421. Routes built without the
   server's options (``/metrics``) skip this check.
2. A request carrying an ``Origin`` other than this server's own comes from a page of
   another site: a 403.
3. ``HULUMANAGE_ADMIN_TOKEN`` as the bearer token when it is set (compared in constant
   time), else loopback peers only: else a 403. A client key never opens an admin route.

Every admin route of the plugin asks :func:`admin_refusal`: ``/admin/clear-cache``,
``/admin/spend`` (:mod:`proxy_plugin.gate.admin`), ``/metrics`` when it is not public
(:mod:`proxy_plugin.metrics_http`) and ``/dashboard`` (:mod:`proxy_plugin.dashboard`).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from proxy_plugin.approach import RUNTIME

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
FORBIDDEN = "admin calls are allowed from loopback only, or with HULUMANAGE_ADMIN_TOKEN as bearer token"


def _host_name(host: str) -> str:
    """The name part of a ``Host`` value: ``[::1]:8000`` -> ``::1``, ``Example.com.:80`` -> ``example.com``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0].rstrip(".")
    return (host.rpartition(":")[0] if ":" in host else host).rstrip(".")


def admin_hosts(options: Any) -> frozenset[str]:
    """The names an admin request's ``Host`` may carry (from the server's options)."""
    listen = str(getattr(options, "host", "127.0.0.1") or "127.0.0.1")
    allowed = getattr(options, "allowed_hosts", None) or ""
    extra = {_host_name(n) for n in str(allowed).split(",") if n.strip()}
    return LOOPBACK | extra | {_host_name(f"[{listen}]" if ":" in listen else listen)}


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "permission_error", "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _permitted(request: web.Request, environ: Mapping[str, str]) -> bool:
    token = environ.get("HULUMANAGE_ADMIN_TOKEN")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def admin_refusal(request: web.Request, hosts: frozenset[str] | None,
                  environ: Mapping[str, str] = os.environ) -> web.Response | None:
    """The 421 / 403 of an admin request that may not pass (the rule: module docstring), or None.

    ``hosts``: the names ``Host`` may carry (:func:`admin_hosts`); None skips the ``Host`` check.
    """
    host = request.headers.get("Host")
    if hosts is not None and host is not None and _host_name(host) not in hosts:
        return _error(421, "admin requests must name this server in Host", "misdirected_request")
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/").lower() != f"{request.scheme}://{host or ''}".lower():
        return _error(403, "admin calls are not allowed from a page of another site (Origin)", "forbidden")
    if not _permitted(request, environ):
        return _error(403, FORBIDDEN, "forbidden")
    return None


def clear_cache_handler(options: Any) -> Callable[[web.Request], Any]:
    """The ``POST /admin/clear-cache`` handler: empty the response cache; says how many entries it held."""
    hosts = admin_hosts(options)

    async def clear_cache(request: web.Request) -> web.Response:
        refused = admin_refusal(request, hosts)
        if refused is not None:
            return refused
        runtime = request.app.get(RUNTIME)
        cleared = 0 if runtime is None else runtime.gate.cache.clear()
        body = {"message": "Cache cleared successfully", "entries_cleared": cleared}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    return clear_cache
