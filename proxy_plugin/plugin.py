"""The hookimpls that register the ``proxy`` approach with a hulumanage host."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from proxy_plugin import dashboard, hookimpl
from proxy_plugin.admin import clear_cache_handler
from proxy_plugin.approach import RUNTIME, ProxyApproach
from proxy_plugin.clock import SYSTEM, Clock
from proxy_plugin.config import ConfigError, find_config_path
from proxy_plugin.gate.admin import spend_handler
from proxy_plugin.metrics_http import handler as metrics_handler
from proxy_plugin.runtime import ProxyRuntime

logger = logging.getLogger(__name__)

#: What the runtime started by ``lifespan`` reads time from. A test running the real server
#: in-process sets this to a ``ManualClock`` (no environment variable, no host import).
clock_factory: Callable[[], Clock] = lambda: SYSTEM


@hookimpl
def register_approaches(register: Any) -> None:
    """Register ``proxy``."""
    register(ProxyApproach())


@hookimpl
def add_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--proxy-config``."""
    parser.add_argument("--proxy-config", metavar="PATH", default=None,
                        help="proxy providers file (default $HULUMANAGE_PROXY_CONFIG, else ~/.hulumanage/proxy_config.yaml)")


class ProxyNotConfiguredError(Exception):
    """``--approach proxy`` with no configuration file anywhere."""


@hookimpl
def lifespan(app: web.Application, options: argparse.Namespace) -> AsyncIterator[None]:
    """Load the config and start the pool at startup; close it at shutdown."""
    return _lifespan(app, options)


async def _lifespan(app: web.Application, options: argparse.Namespace) -> AsyncIterator[None]:
    path, looked = find_config_path(getattr(options, "proxy_config", None), os.environ)
    if path is None:
        if getattr(options, "approach", None) == "proxy":
            raise ProxyNotConfiguredError(
                "--approach proxy needs a providers file, and none was found (looked at: "
                + ", ".join(looked)
                + "). Copy proxy_config.example.yaml to one of those places, or pass --proxy-config PATH; "
                "or try `hulumanage demo`, which needs no configuration."
            )
        logger.info("proxy approach available but not configured (looked at: %s)", ", ".join(looked))
        yield
        return
    runtime = ProxyRuntime(path, clock=clock_factory())
    await runtime.start()
    app[RUNTIME] = runtime
    _warn_if_open(runtime, options)
    try:
        yield
    finally:
        await runtime.close()


def _warn_if_open(runtime: ProxyRuntime, options: argparse.Namespace) -> None:
    """A warning when the server listens beyond loopback with no client keys: anyone who reaches it spends the keys."""
    host = str(getattr(options, "host", None) or "127.0.0.1")
    if host in ("localhost", "127.0.0.1", "::1") or runtime.config.clients.keys:
        return
    logger.warning("listening on %s with no client keys configured (clients.keys): anyone who reaches the port "
                   "spends the providers' keys", host)


def _spend(app: web.Application) -> dict[str, Any] | None:
    runtime = app.get(RUNTIME)
    return None if runtime is None else runtime.gate.spend()


@hookimpl
def health(app: web.Application) -> dict[str, Any]:
    """The proxy's providers, circuits and queue for ``/health``."""
    runtime = app.get(RUNTIME)
    if runtime is None:
        return {"proxy": {"configured": False}}
    return {"proxy": {"configured": True, **runtime.snapshot()}}


@hookimpl
def list_models(app: web.Application) -> list[dict[str, Any]]:
    """Exactly what is served: every ``model_map`` alias, each provider's ``models`` named without a
    wildcard, and the models the providers' health checks report that their ``models`` globs
    admit (a glob alone lists nothing: it cannot be enumerated)."""
    runtime = app.get(RUNTIME)
    if runtime is None:
        return []
    models: dict[str, dict[str, Any]] = {}
    for provider in runtime.current.providers:
        for alias in provider.config.model_map:
            models.setdefault(alias, {"id": alias, "object": "model", "created": 0, "owned_by": "proxy"})
    for provider in runtime.current.providers:
        named = [m for m in provider.config.models or () if not any(c in m for c in "*?[")]
        for model in (*named, *provider.models):
            if provider.serves(model):
                models.setdefault(model, {"id": model, "object": "model", "created": 0, "owned_by": provider.name})
    return list(models.values())


@hookimpl
def register_routes(app: web.Application, options: argparse.Namespace) -> None:
    """The proxy's own routes.

    ``GET /metrics`` (Prometheus text, or a JSON summary; ``metrics:`` in the proxy
    configuration); the admin routes (the admin rule: ``HULUMANAGE_ADMIN_TOKEN``, else
    loopback) ``POST /admin/clear-cache`` and ``GET /admin/spend`` (spend and budgets); the status page
    ``GET /dashboard`` and its ``GET /dashboard/status.json`` (admin rule too).
    """
    app.router.add_get("/metrics", metrics_handler(lambda app: app.get(RUNTIME)))
    app.router.add_post("/admin/clear-cache", clear_cache_handler(options))
    app.router.add_get("/admin/spend", spend_handler(options, _spend))
    app.router.add_routes(dashboard.routes(options, lambda app: app.get(RUNTIME)))


@hookimpl
def register_commands(register: Any) -> None:
    """Register ``simulate``: the routing strategies on virtual time (:mod:`proxy_plugin.sim`)."""
    from proxy_plugin.sim import command

    register("simulate", command.HELP, command.add_arguments, command.run)


@hookimpl
def request_gate(app: web.Application) -> Any:
    """The proxy's request gate (keys, limits, budgets, cost, cache, metrics), when the proxy is configured."""
    runtime = app.get(RUNTIME)
    return None if runtime is None else runtime.gate


@hookimpl
def reload(app: web.Application) -> Any:
    """Prepare a reload of the providers file: an awaitable of a prepared reload (``apply()``,
    ``discard()``); the host applies it once every plugin has prepared. An invalid file
    raises, and the old pool keeps serving."""
    runtime = app.get(RUNTIME)
    if runtime is None:
        return None
    return runtime.prepare_reload()


@hookimpl(specname="register_commands")
def register_check_command(register: Any) -> None:
    """Register ``hulumanage check`` (validate a providers file, summarize it, ``--probe`` the providers)."""
    from proxy_plugin import check

    register("check", "validate a proxy providers file as startup does; --probe asks each provider's /models",
             check.add_check_arguments, check.run_command)


__all__ = ["ConfigError"]
