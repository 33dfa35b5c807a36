"""The ``proxy`` approach: answer a request from the provider pool, or wrap another approach."""

from __future__ import annotations

from typing import Any, ClassVar

from aiohttp import web

from proxy_plugin.errors import ProxyError, bad_request
from proxy_plugin.runtime import ProxyRuntime

RUNTIME = web.AppKey("proxy_plugin_runtime", ProxyRuntime)
NOT_CONFIGURED = (
    "the proxy approach is not configured: start the server with --proxy-config PATH or set "
    "HULUMANAGE_PROXY_CONFIG (copy proxy_config.example.yaml to start)"
)


class ProxyApproach:
    """Load balancing, health checks and failover across OpenAI-compatible providers."""

    slug = "proxy"
    description = "load-balance across configured providers with health checks and failover"
    params: ClassVar[dict[str, str]] = {"proxy_wrap": "run this approach with a client backed by the provider pool (e.g. 'moa')"}
    terminal = True

    async def run(self, call: Any) -> Any:
        """Serve ``call`` from the pool; with ``proxy_wrap`` run that approach on a pool-backed client."""
        runtime = call.app.get(RUNTIME) if call.app is not None else None
        if runtime is None:
            raise ProxyError(503, NOT_CONFIGURED, "server_error", "proxy_not_configured")
        wrap = call.extra.get("proxy_wrap")
        if wrap is not None:
            return await self._wrapped(call, runtime, wrap)
        ticket = getattr(call, "ticket", None)
        if call.stream:
            return runtime.current.stream(call.request, ticket)
        return await runtime.current.complete(call.request, ticket)

    async def embeddings(self, call: Any) -> Any:
        """``POST /v1/embeddings`` from the pool: routing, ``model_map``, keys, retries, failover; the JSON relayed."""
        return await self._route(call, "/embeddings")

    async def completions(self, call: Any) -> Any:
        """``POST /v1/completions`` (legacy, ``prompt``) from the pool; streams relayed, never continued elsewhere."""
        return await self._route(call, "/completions")

    async def _route(self, call: Any, path: str) -> Any:
        """Serve a route other than chat from the pool (``proxy_wrap`` is chat's alone)."""
        runtime = call.app.get(RUNTIME) if call.app is not None else None
        if runtime is None:
            raise ProxyError(503, NOT_CONFIGURED, "server_error", "proxy_not_configured")
        if call.extra.get("proxy_wrap") is not None:
            raise bad_request(f"proxy_wrap applies to chat completions only, not to {path}", "invalid_proxy_wrap")
        ticket = getattr(call, "ticket", None)
        if call.stream:
            return runtime.current.stream(call.request, ticket, path)
        return await runtime.current.complete(call.request, ticket, path)

    async def _wrapped(self, call: Any, runtime: ProxyRuntime, wrap: Any) -> Any:
        """Run the approach named by ``proxy_wrap`` with a client backed by the pool."""
        from proxy_plugin.wrap import WRAPPED_CALL, pool_client

        known = ", ".join(sorted(call.approaches))
        if not isinstance(wrap, str) or not wrap.strip():
            raise bad_request(f"proxy_wrap must name an approach; known approaches: {known}", "invalid_proxy_wrap")
        slug = wrap.strip()
        if "&" in slug:
            raise bad_request(f"proxy_wrap takes one approach, got {slug!r}; compose layers with a model such as "
                              f"'{slug}&proxy-{call.request['model']}'", "invalid_proxy_wrap")
        if slug not in call.approaches:
            raise bad_request(f"unknown approach {slug!r} in proxy_wrap; known approaches: {known}", "unknown_approach")
        allowed = getattr(call, "allowed", None)
        if allowed is not None and slug not in allowed:
            raise ProxyError(403, f"approach {slug!r} in proxy_wrap is not allowed on this server; allowed approaches: "
                                  f"{', '.join(sorted(allowed))}", "permission_error", "approach_not_allowed")
        if slug == self.slug or slug in call.chain:
            raise bad_request(f"proxy_wrap {slug!r} would run the proxy inside itself (a cycle)", "approach_cycle")
        if getattr(call.approaches[slug], "terminal", False):
            raise bad_request(f"proxy_wrap {slug!r} names an approach that calls its own upstream, around the provider "
                              f"pool; wrap one that makes its calls through its client", "invalid_proxy_wrap")
        extra = {k: v for k, v in call.extra.items() if k != "proxy_wrap"}
        inner = call.replace(client=pool_client(runtime, call.approaches), extra=extra, chain=(*call.chain, slug))
        # every pool call of the wrapped run counts and reports to the gate, a stream's later calls
        # too: the variable stays set in this request's context (the next wrapped request sets its own)
        WRAPPED_CALL.set(call)
        return await call.approaches[slug].run(inner)

    def fanout(self, call: Any) -> int:
        """The upstream calls one request can cause: one, or what the ``proxy_wrap`` approach declares."""
        slug = call.extra.get("proxy_wrap")
        slug = slug.strip() if isinstance(slug, str) else None
        if slug is None or slug == self.slug or slug in call.chain:
            return 1  # no wrap, or one that run() refuses with its own error
        declare = getattr(call.approaches.get(slug), "fanout", None)
        if declare is None:
            return 1
        inner = call.replace(extra={k: v for k, v in call.extra.items() if k != "proxy_wrap"})
        return int(declare(inner))
