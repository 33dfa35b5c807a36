"""The ``hulumanage`` command: parse the command line, run the command it names.

Commands (``serve``, the default, and ``demo``, plus any a plugin registers through
``register_commands``) and their flags are in ``options.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Sequence

import pluggy

from hulumanage.options import build_parser, with_command
from hulumanage.plugins import PluginError, collect_commands, get_plugin_manager


def main(argv: Sequence[str] | None = None, pm: pluggy.PluginManager | None = None) -> int:
    """Entry point of the console script (``pm``: a plugin manager other than the installed plugins')."""
    try:
        pm = pm or get_plugin_manager()
        commands = collect_commands(pm)
    except PluginError as exc:
        print(f"hulumanage: error: {exc}", file=sys.stderr)
        return 2
    options = build_parser(pm, commands).parse_args(with_command(sys.argv[1:] if argv is None else argv, commands))
    logging.basicConfig(level=options.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = commands[options.command].run(options, pm)
    if inspect.isawaitable(result):
        async def until_done() -> object:
            return await result

        try:
            result = asyncio.run(until_done())
        except KeyboardInterrupt:
            return 130
    return int(result) if result is not None else 0


if __name__ == "__main__":
    sys.exit(main())
