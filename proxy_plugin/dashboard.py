"""``GET /dashboard``: a status page people look at, and ``GET /dashboard/status.json``, what it shows.

The page (``dashboard.html``, shipped as package data, read once) is one self-contained file:
inline CSS and JavaScript, no CDN, no build step. Every ``?refresh=`` seconds (default 3) it
fetches ``status.json`` and keeps the answers of the last few minutes in memory, so rates (requests
and failures per minute, requests per second), traffic shares and the latency chart come from the
differences between two answers; the server keeps no history for it.

``status.json`` is assembled from what exists already: :meth:`ProxyRuntime.snapshot` (providers,
circuits, in flight), the ``/metrics`` JSON summary (requests, errors, cache) and
:meth:`RequestGate.spend` (each budget's current period). It carries counters, names from the
configuration and figures: never a provider key, a client key, a header or a base URL (a URL may
hold a key in its query). Both routes follow the admin rule (:func:`proxy_plugin.admin.admin_refusal`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from proxy_plugin.admin import admin_hosts, admin_refusal
from proxy_plugin.metrics_http import summary
from proxy_plugin.runtime import ProxyRuntime

#: What a browser may do with the page: its own inline code, fetches to this server, nothing else.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def provider_state(view: dict[str, Any]) -> str:
    """One word for a provider: ``down`` (its health check fails), ``open`` or ``half_open`` (its own
    circuit), ``degraded`` (a model's circuit is open), else ``up``."""
    if not view["healthy"]:
        return "down"
    circuits = view.get("circuits", {})
    own = circuits.get("*", {}).get("state", "closed")
    if own != "closed":
        return str(own)
    if any(c.get("state") != "closed" for c in circuits.values()):
        return "degraded"
    return "up"


def _provider(name: str, view: dict[str, Any]) -> dict[str, Any]:
    circuits = view.get("circuits", {})
    return {
        "name": name,
        "state": provider_state(view),
        "healthy": view["healthy"],
        "circuit": circuits.get("*", {}).get("state", "closed"),
        "open_model_circuits": sorted(k for k, c in circuits.items() if k != "*" and c.get("state") != "closed"),
        "fallback_only": view["fallback_only"],
        "in_flight": view["in_flight"],
        "max_concurrent": view["max_concurrent"],
        "requests": view["requests"],
        "failures": view["failures"],
        "last_error_class": view["last_error_class"],
        "latency_ms": {"p50": view["latency_ms"]["p50"], "p95": view["latency_ms"]["p95"]},
    }


def status(runtime: ProxyRuntime) -> dict[str, Any]:
    """The body of ``GET /dashboard/status.json``."""
    snap = runtime.snapshot()
    metrics = summary(runtime)
    spend = runtime.gate.spend()
    performance = metrics["performance"]
    return {
        "time": round(time.monotonic(), 3),  # the page divides counter differences by differences of this
        "timestamp": metrics["timestamp"],
        "strategy": snap["strategy"],
        "reloads": snap["reloads"],
        "overall": {
            "requests": performance["total_requests"],
            "errors": performance["errors"],
            "average_latency_seconds": performance["average_latency_seconds"],
            "in_flight": snap["in_flight"],
            "queue_limit": snap["queue_limit"],
            "queue_rejected": snap["queue_rejected"],
            "cache": {k: metrics["cache"][k] for k in ("hits", "misses", "hit_rate")},
        },
        "providers": [_provider(name, view) for name, view in snap["providers"].items()],
        "budgets": spend["budgets"],
        "spend_usd": round(sum(p["usd"] for p in spend["providers"].values()), 9),
    }


def _page() -> bytes:
    return resources.files("proxy_plugin").joinpath("dashboard.html").read_bytes()


def routes(options: Any, runtime_of: Callable[[web.Application], ProxyRuntime | None]) -> list[web.RouteDef]:
    """``GET /dashboard`` and ``GET /dashboard/status.json``; ``runtime_of(app)``: the proxy's runtime or None."""
    hosts = admin_hosts(options)
    page = _page()

    async def dashboard(request: web.Request) -> web.Response:
        refused = admin_refusal(request, hosts)
        if refused is not None:
            return refused
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    async def status_json(request: web.Request) -> web.Response:
        refused = admin_refusal(request, hosts)
        if refused is not None:
            return refused
        runtime = runtime_of(request.app)
        body = {"configured": False} if runtime is None else {"configured": True, **status(runtime)}
        return web.Response(body=orjson.dumps(body), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    return [web.get("/dashboard", dashboard), web.get("/dashboard/status.json", status_json)]
