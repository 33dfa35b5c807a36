"""Run the app until SIGINT/SIGTERM; SIGHUP reloads plugin configuration."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

import pluggy
from aiohttp import web

from hulumanage.admin import reload_plugins
from hulumanage.app import make_app
from hulumanage.fastsite import FastSite

logger = logging.getLogger("hulumanage")


async def serve(options: argparse.Namespace, pm: pluggy.PluginManager) -> int:
    """Start the server, wait for a stop signal, shut down gracefully."""
    app = make_app(options, pm)
    access_log = logging.getLogger("aiohttp.access") if options.log_level == "DEBUG" else None
    runner = web.AppRunner(app, access_log=access_log, shutdown_timeout=options.grace, handler_cancellation=True)
    try:
        await runner.setup()  # runs the plugins' startup: a bad config fails here
    except BaseException:
        await runner.cleanup()  # close what started before the failure (the host's HTTP session)
        raise
    site = FastSite(runner, options.host, options.port, access_log=access_log, fast=options.fast_path,
                    max_connections=options.max_connections)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc} (is another server running? try --port)") from exc
    # Everything loaded at startup lives until shutdown: keep it out of the collector's
    # full passes, which otherwise walk it every few thousand requests (p99 spikes).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    reloads: set[asyncio.Task[None]] = set()  # kept until they end (the loop holds tasks only weakly)

    def on_hup() -> None:
        async def do() -> None:
            try:
                await reload_plugins(app)
                logger.info("configuration reloaded")
            except Exception as exc:  # noqa: BLE001 - a bad reload keeps the old config
                logger.error("reload rejected, the previous configuration keeps serving: %s", exc)

        task = loop.create_task(do())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    print(f"hulumanage serving on http://{options.host}:{options.port}/v1 (approach {options.approach})", file=sys.stderr, flush=True)
    await stop.wait()
    logger.info("shutting down: finishing in-flight requests (up to %ss)", options.grace)
    await runner.cleanup()
    return 0
