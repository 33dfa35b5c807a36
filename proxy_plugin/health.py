"""Active health checks: a background task that probes each provider's ``/models``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from proxy_plugin.classify import describe_exception
from proxy_plugin.pool import Pool
from proxy_plugin.provider import Provider
from proxy_plugin.state.circuits import SharedCircuits

logger = logging.getLogger(__name__)


def _via(provider: Provider) -> dict[str, Any]:
    """aiohttp's arguments for the provider's egress proxy, the one its chat requests take."""
    proxy = provider.endpoint.proxy
    return {} if proxy is None else {"proxy": proxy.url}  # aiohttp takes the credentials from the URL


async def check(pool: Pool, provider: Provider) -> bool:
    """Probe one provider once (GET {base_url}/models with its key); update its state."""
    hc = pool.config.routing.health_check
    headers = {k: v for k, v in provider.headers.items() if k != "Content-Type"}
    started = time.monotonic()
    try:
        async with asyncio.timeout(hc.timeout):
            async with pool.session.get(provider.models_url, headers=headers, **_via(provider)) as resp:
                body = await resp.read()
                ok = resp.status == 200
                detail = f"health check answered {resp.status}" + (provider.hint_404 if resp.status == 404 else "")
                error_class = "provider_config" if resp.status in (401, 403, 404) else "transient"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        ok, detail, error_class = False, f"health check: {describe_exception(exc)}", "transient"
    except ValueError:  # aiohttp refused to build the request (credentials in base_url and an api_key): the config's
        ok, detail, error_class = False, ("health check: the request could not be built from this provider's "
                                          "base_url and headers (credentials in the URL and an api_key?)"), "provider_config"
    state = provider.state
    state.last_check = time.monotonic() - started
    if ok:
        state.models = _model_ids(body)
        state.check_failures = 0
        state.check_passes += 1
        if not state.healthy and state.check_passes >= hc.healthy_after:
            logger.info("provider %s is healthy again", provider.name)
            state.healthy = True
        state.health_check_passed()
    else:
        state.check_passes = 0
        state.check_failures += 1
        state.last_error, state.last_error_class = detail, error_class
        if state.healthy and state.check_failures >= hc.unhealthy_after:
            logger.warning("provider %s is unhealthy: %s", provider.name, detail)
            state.healthy = False
    return ok


def _model_ids(body: bytes) -> tuple[str, ...]:
    """The model ids of an OpenAI ``/models`` list (empty when it is not one)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ()
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return ()
    return tuple(m["id"] for m in items if isinstance(m, dict) and isinstance(m.get("id"), str))


async def check_all(pool: Pool, shared: SharedCircuits | None = None) -> None:
    """Probe every provider of ``pool`` concurrently (``shared``: only those whose lease this replica holds,
    publishing the verdict; the other replicas take it from Redis)."""
    if shared is None:
        await asyncio.gather(*(check(pool, p) for p in pool.providers))
        return
    interval = pool.config.routing.health_check.interval

    async def one(provider: Provider) -> None:
        if await shared.lease(provider.name, interval):
            await check(pool, provider)
            shared.verdict(provider.name, provider.state.healthy)

    await asyncio.gather(*(one(p) for p in pool.providers))


class HealthChecker:
    """Runs ``check_all`` every ``interval`` seconds on whatever pool is current."""

    def __init__(self, current: Callable[[], Pool]) -> None:
        self._current = current
        self.shared: SharedCircuits | None = None  # state.backend: redis: one replica probes each provider
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        """Start the background task (no-op when checks are disabled)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="proxy-health-checker")

    def poke(self) -> None:
        """Check now (after a reload)."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the task and wait for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            pool = self._current()
            hc = pool.config.routing.health_check
            if hc.enabled:
                try:
                    await check_all(pool, self.shared)
                except Exception:  # a bug here must not stop future checks
                    logger.exception("health check round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(hc.interval):
                    await self._wake.wait()
