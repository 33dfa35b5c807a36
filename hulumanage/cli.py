"""The ``hulumanage`` command: serve approaches over HTTP, or run the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import pluggy

from hulumanage import __version__
from hulumanage.plugins import PluginError, get_plugin_manager

logger = logging.getLogger("hulumanage")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser(pm: pluggy.PluginManager) -> argparse.ArgumentParser:
    """The argument parser, with the flags plugins add through ``add_options``."""
    parser = argparse.ArgumentParser(
        prog="hulumanage",
        description="An OpenAI-compatible server whose approaches come from plugins.",
    )
    parser.add_argument("command", nargs="?", choices=("serve", "demo"), default="serve",
                        help="serve (default) runs the server; demo runs the proxy on simulated providers")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--approach", default="none", help="default approach for requests that name none (default none)")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
                        help="upstream of the 'none' approach (default $OPENAI_BASE_URL, else the OpenAI API)")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        default=(os.environ.get("HULUMANAGE_LOG_LEVEL") or "INFO").upper(),
                        help="log level (default $HULUMANAGE_LOG_LEVEL or INFO); DEBUG logs each routing decision")
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM, how long requests in flight may take to finish (default 30)")
    parser.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                        help="serve chat completions through aiohttp too, not the lean HTTP/1.1 fast path "
                             "(same answers, more CPU per request; for comparison or if the fast path misbehaves)")
    parser.add_argument("--version", action="version", version=f"hulumanage {__version__}")
    demo = parser.add_argument_group("demo", "options of `hulumanage demo`")
    demo.add_argument("--requests", type=int, default=300, metavar="N", help="requests the demo sends (default 300)")
    demo.add_argument("--concurrency", type=int, default=16, metavar="N", help="demo requests in flight at once (default 16)")
    demo.add_argument("--seed", type=int, default=42, help="seed of the demo's simulated providers and request mix (default 42)")
    pm.hook.add_options(parser=parser)
    return parser


def parse_args(argv: Sequence[str] | None = None, pm: pluggy.PluginManager | None = None) -> argparse.Namespace:
    """Parse ``argv`` with the plugins' flags."""
    return build_parser(pm or get_plugin_manager()).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    try:
        pm = get_plugin_manager()
    except PluginError as exc:
        print(f"hulumanage: error: {exc}", file=sys.stderr)
        return 2
    options = build_parser(pm).parse_args(argv)
    logging.basicConfig(level=options.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if options.command == "demo":
        from hulumanage.demo import run_demo

        try:
            return asyncio.run(run_demo(options, pm))
        except KeyboardInterrupt:
            return 130
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


if __name__ == "__main__":
    sys.exit(main())
