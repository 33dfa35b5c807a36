"""The host's own commands, ``serve`` and ``demo``, registered through ``register_commands``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import pluggy

logger = logging.getLogger("hulumanage")


def run_serve(options: argparse.Namespace, pm: pluggy.PluginManager) -> int:
    """``hulumanage [serve]``: serve until SIGINT/SIGTERM; a startup failure is one error line, status 2."""
    from hulumanage.loop import install_uvloop
    from hulumanage.server import serve

    install_uvloop()
    try:
        return asyncio.run(serve(options, pm))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # startup failures are shown as one clear line
        if options.log_level == "DEBUG":
            logger.exception("startup failed")
        print(f"hulumanage: error: {exc}", file=sys.stderr)
        return 2


def run_demo(options: argparse.Namespace, pm: pluggy.PluginManager) -> int:
    """``hulumanage demo``: the proxy on simulated providers."""
    from hulumanage.demo import run_demo as demo

    try:
        return asyncio.run(demo(options, pm))
    except KeyboardInterrupt:
        return 130
