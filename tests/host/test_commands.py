"""Subcommands: the host's ``serve`` and ``demo``, and a plugin's own through ``register_commands``.

A plugin's command runs through the real CLI (``hulumanage.cli.main``) in a subprocess, with a
small plugin registered on the plugin manager (as an entry point would, without installing one).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hulumanage.options import parse_args
from hulumanage.plugins import get_plugin_manager

TIMEOUT = 20

PLUGIN = '''
import asyncio

import pluggy

hookimpl = pluggy.HookimplMarker("hulumanage")


def add_arguments(parser):
    parser.add_argument("--times", type=int, default=1)


async def shout(options, pm):
    await asyncio.sleep(0)
    print(" ".join(["HEY"] * options.times), options.proxy_config, options.log_level)
    return 3


@hookimpl
def register_commands(register):
    register("shout-twice", "says HEY", add_arguments, shout)
'''

CLASH = '''
import pluggy

hookimpl = pluggy.HookimplMarker("hulumanage")


@hookimpl
def register_commands(register):
    register("demo", "another demo", None, lambda options, pm: 0)
'''

RUN = textwrap.dedent('''
    import sys
    sys.path.insert(0, {folder!r})
    import {module}
    from hulumanage.cli import main
    from hulumanage.plugins import get_plugin_manager
    pm = get_plugin_manager()
    pm.register({module}, name={module!r})
    sys.exit(main(sys.argv[1:], pm))
''')


def run_cli(tmp_path: Path, source: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``hulumanage argv`` with the plugin ``source`` registered, in a subprocess."""
    (tmp_path / "cmd_plugin.py").write_text(source)
    script = RUN.format(folder=str(tmp_path), module="cmd_plugin")
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


def test_a_plugin_command_runs_through_the_cli_with_its_flags_and_the_plugins_flags(tmp_path: Path) -> None:
    result = run_cli(tmp_path, PLUGIN, "shout-twice", "--times", "2", "--proxy-config", "p.yaml",
                     "--log-level", "warning")
    assert result.returncode == 3, result.stderr  # the awaitable's int is the exit status
    assert result.stdout.strip() == "HEY HEY p.yaml WARNING"


def test_a_plugin_command_is_listed_and_has_its_own_help(tmp_path: Path) -> None:
    listed = run_cli(tmp_path, PLUGIN, "--help")
    assert listed.returncode == 0 and "shout-twice (says HEY)" in listed.stdout
    own = run_cli(tmp_path, PLUGIN, "shout-twice", "--help")
    assert own.returncode == 0 and "--times" in own.stdout and "--proxy-config" in own.stdout
    assert "--approach" not in own.stdout


def test_a_duplicate_command_name_is_a_startup_error_naming_both_plugins(tmp_path: Path) -> None:
    result = run_cli(tmp_path, CLASH, "demo")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hulumanage: error: "), result.stderr
    assert "'demo'" in lines[0] and "'hulumanage.default_plugins'" in lines[0] and "'cmd_plugin'" in lines[0]


def test_serve_is_the_default_command_and_demo_flags_belong_to_demo() -> None:
    pm = get_plugin_manager({"HULUMANAGE_LOAD_PLUGINS": "proxy"})
    served = parse_args(["--approach", "proxy", "--proxy-config", "x.yaml"], pm)
    assert (served.command, served.approach, served.proxy_config) == ("serve", "proxy", "x.yaml")
    assert not hasattr(served, "requests")
    assert parse_args(["serve", "--port", "9"], pm).port == 9
    demo = parse_args(["demo", "--requests", "60", "--seed", "42", "--proxy-config", "y.yaml"], pm)
    assert (demo.command, demo.requests, demo.seed, demo.concurrency, demo.proxy_config) == ("demo", 60, 42, 16, "y.yaml")
    assert not hasattr(demo, "approach")
    with pytest.raises(SystemExit):
        parse_args(["--requests", "60"], pm)
