"""``GET /metrics``: the Prometheus text format, or a JSON summary with ``Accept: application/json``.

With ``metrics.public: false`` the route follows the admin rule
(:func:`proxy_plugin.admin.admin_refusal`, without its ``Host`` check: a scraper may name the
server as it likes): the ``HULUMANAGE_ADMIN_TOKEN`` bearer token when it is set, otherwise
loopback clients only. With ``metrics.enabled:
false`` the route answers 404. The JSON summary's cache size and rate-limiter figures
come from the request gate when it offers them (``cache_size()``, ``limiter_summary()``),
else they are 0.
"""

from __future__ import annotations

import datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy_plugin.admin import admin_refusal
from proxy_plugin.runtime import ProxyRuntime

LIMITER_FIELDS = ("active_clients", "max_requests_per_window", "window_seconds")


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def summary(runtime: ProxyRuntime) -> dict[str, Any]:
    """The JSON summary: performance, cache, rate limiter, timestamp (ISO 8601, UTC)."""
    gate: Any = runtime.gate
    out = runtime.metrics.summary()
    size = getattr(gate, "cache_size", None)
    out["cache"]["cache_size"] = size() if callable(size) else 0
    limiter = getattr(gate, "limiter_summary", None)
    figures = limiter() if callable(limiter) else {}
    out["rate_limiter"] = {name: figures.get(name, 0) for name in LIMITER_FIELDS}
    out["timestamp"] = datetime.datetime.now(datetime.UTC).isoformat()
    return out


def handler(runtime_of: Any) -> Any:
    """The ``/metrics`` handler; ``runtime_of(app)`` is the proxy's runtime (None: the proxy is not configured)."""

    async def metrics(request: web.Request) -> web.Response:
        runtime: ProxyRuntime | None = runtime_of(request.app)
        if runtime is None or not runtime.config.metrics.enabled:
            return _error(404, "metrics are off (metrics.enabled in the proxy configuration)", "not_found")
        if not runtime.config.metrics.public and admin_refusal(request, None) is not None:
            return _error(403, "/metrics is not public (metrics.public: false): use the admin token "
                               "(HULUMANAGE_ADMIN_TOKEN) or a loopback address", "forbidden")
        if "application/json" in request.headers.get("Accept", ""):
            return web.Response(body=orjson.dumps(summary(runtime)), content_type="application/json")
        return web.Response(body=generate_latest(runtime.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
