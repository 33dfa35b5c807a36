"""The command line: one ``argparse`` parser with a subparser per command.

``hulumanage [serve] [flags]`` and ``hulumanage COMMAND [flags]``: the commands come
from the ``register_commands`` hook (the host's ``serve`` and ``demo`` included); each
command's parser has its own flags, ``--log-level`` and every plugin's ``add_options``
flags. Used by the CLI (``cli.py``), the demo (which builds the options of the server it
runs) and the tests, so none of them imports another to parse a command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import pluggy

from hulumanage import __version__
from hulumanage.plugins import Command, collect_commands, get_plugin_manager

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_COMMAND = "serve"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hulumanage serve`` (the default command)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--approach", default="none", help="default approach for requests that name none (default none)")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
                        help="upstream of the 'none' approach (default $OPENAI_BASE_URL, else the OpenAI API)")
    parser.add_argument("--allow-approaches", metavar="A,B", default=None,
                        help="approaches clients may select by model prefix or hulumanage_approach (default: every "
                             "approach but 'none' when --approach is proxy, else every approach); the --approach "
                             "default is always allowed")
    parser.add_argument("--max-fanout", type=int, default=32, metavar="N",
                        help="most upstream calls one client request may cause (bon samples and ratings, moa "
                             "proposals, composed layers); a request over it is a 400 (default 32)")
    parser.add_argument("--cors-origins", metavar="ORIGINS", default=None,
                        help="comma-separated origins (https://app.example.com) whose browser pages may call this "
                             "server, answered with CORS headers; requests from any other Origin are refused "
                             "(default: none; '*' allows every origin)")
    parser.add_argument("--allowed-hosts", metavar="NAMES", default=None,
                        help="comma-separated Host names admin requests may use besides loopback names and the "
                             "listening address (default: none)")
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM, how long requests in flight may take to finish (default 30)")
    parser.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                        help="serve chat completions through aiohttp too, not the lean HTTP/1.1 fast path "
                             "(same answers, more CPU per request; for comparison or if the fast path misbehaves)")
    parser.add_argument("--access-log", metavar="PATH|-", default=None,
                        help="write the access log (one JSON line per chat request, logger hulumanage.access) to "
                             "PATH, or to stdout with '-', at INFO whatever --log-level says, and not to stderr "
                             "(default: stderr with the other logs, when --log-level is INFO or DEBUG)")
    # -- connections (the connection cap; read deadlines are in fastpath/fastguard) --
    parser.add_argument("--max-connections", type=int, default=None, metavar="N",
                        help="most client connections open at once; past it a new connection is accepted and "
                             "closed at once (default: half the soft file-descriptor limit, ulimit -n, after 64 "
                             "kept for files; the other half stays for upstream connections)")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hulumanage demo``."""
    parser.add_argument("--requests", type=int, default=300, metavar="N", help="requests the demo sends (default 300)")
    parser.add_argument("--concurrency", type=int, default=16, metavar="N",
                        help="demo requests in flight at once (default 16)")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the demo's simulated providers and request mix (default 42)")


def _add_common(parser: argparse.ArgumentParser, pm: pluggy.PluginManager) -> None:
    """What every command's parser has: ``--log-level`` and the plugins' flags."""
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        default=(os.environ.get("HULUMANAGE_LOG_LEVEL") or "INFO").upper(),
                        help="log level (default $HULUMANAGE_LOG_LEVEL or INFO); DEBUG logs each routing decision")
    pm.hook.add_options(parser=parser)


def build_parser(pm: pluggy.PluginManager, commands: Mapping[str, Command] | None = None) -> argparse.ArgumentParser:
    """The top-level parser: one subparser per registered command (``options.command`` names it)."""
    commands = collect_commands(pm) if commands is None else commands
    others = ", ".join(f"{name} ({c.help})" if c.help else name for name, c in commands.items() if name != DEFAULT_COMMAND)
    parser = argparse.ArgumentParser(
        prog="hulumanage",
        description="An OpenAI-compatible server whose approaches come from plugins.",
    )
    parser.add_argument("--version", action="version", version=f"hulumanage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in commands.items():
        epilog = None
        if name == DEFAULT_COMMAND and others:
            epilog = f"other commands: {others}; `hulumanage COMMAND --help` shows their flags"
        command_parser = sub.add_parser(name, help=command.help, description=command.help or None, epilog=epilog)
        if name == DEFAULT_COMMAND:
            command_parser.usage = f"hulumanage [{DEFAULT_COMMAND}] [options]"
        if command.add_arguments is not None:
            command.add_arguments(command_parser)
        _add_common(command_parser, pm)
    return parser


def with_command(argv: Sequence[str], commands: Mapping[str, Command]) -> list[str]:
    """``argv`` with ``serve`` put first when it names no command (``hulumanage --approach proxy``)."""
    args = list(argv)
    if args and (args[0] in commands or args[0] == "--version"):
        return args
    return [DEFAULT_COMMAND, *args]


def parse_args(argv: Sequence[str] | None = None, pm: pluggy.PluginManager | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) with the registered commands and the plugins' flags."""
    pm = pm or get_plugin_manager()
    commands = collect_commands(pm)
    return build_parser(pm, commands).parse_args(with_command(sys.argv[1:] if argv is None else argv, commands))
