"""The plugin manager: entry-point plugins plus the host's built-in defaults."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from hulumanage import hookspecs

logger = logging.getLogger(__name__)

GROUP = "hulumanage"
DEFAULT_PLUGINS = ("hulumanage.default_plugins",)


class PluginError(Exception):
    """A plugin could not be loaded or registered something invalid."""


def get_plugin_manager(environ: Mapping[str, str] | None = None) -> pluggy.PluginManager:
    """Build a plugin manager with the hook specs, entry-point plugins and defaults.

    ``HULUMANAGE_LOAD_PLUGINS=a,b`` limits the entry-point plugins to those names
    (the built-in defaults always load).
    """
    environ = os.environ if environ is None else environ
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    allow = environ.get("HULUMANAGE_LOAD_PLUGINS")
    allowed = {n.strip() for n in allow.split(",") if n.strip()} if allow is not None else None
    for ep in entry_points(group=GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        pm.register(plugin, name=ep.name)
    for modname in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
    return pm


def collect_approaches(pm: pluggy.PluginManager) -> dict[str, Any]:
    """Call ``register_approaches`` on every plugin and return slug -> approach.

    A slug registered twice is a PluginError naming both plugins.
    """
    approaches: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.register_approaches.get_hookimpls():
        owner = impl.plugin_name

        def register(approach: Any, _owner: str = owner) -> None:
            slug = getattr(approach, "slug", None)
            if not isinstance(slug, str) or not slug or "&" in slug or "-" in slug:
                raise PluginError(f"plugin {_owner!r} registered an approach with an invalid slug {slug!r}")
            if not callable(getattr(approach, "run", None)):
                raise PluginError(f"plugin {_owner!r}: approach {slug!r} has no run(call) method")
            if slug in approaches:
                raise PluginError(
                    f"approach {slug!r} is registered by both plugin {owners[slug]!r} and plugin {_owner!r}"
                )
            approaches[slug] = approach
            owners[slug] = _owner

        impl.function(register=register)
    return approaches


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand of ``hulumanage``, as a plugin registered it (``register_commands``)."""

    name: str
    help: str
    add_arguments: Callable[[Any], None] | None
    run: Callable[[Any, pluggy.PluginManager], Any]
    plugin: str


def collect_commands(pm: pluggy.PluginManager) -> dict[str, Command]:
    """Call ``register_commands`` on every plugin and return name -> command.

    A name registered twice is a PluginError naming both plugins.
    """
    commands: dict[str, Command] = {}
    for impl in pm.hook.register_commands.get_hookimpls():
        owner = impl.plugin_name

        def register(
            name: str,
            help: str,  # the word argparse uses
            add_arguments: Callable[[Any], None] | None,
            run: Callable[[Any, pluggy.PluginManager], Any],
            _owner: str = owner,
        ) -> None:
            if not isinstance(name, str) or not name or name.startswith("-") or not name.isprintable() or " " in name:
                raise PluginError(f"plugin {_owner!r} registered a command with an invalid name {name!r}")
            if not callable(run) or (add_arguments is not None and not callable(add_arguments)):
                raise PluginError(f"plugin {_owner!r}: command {name!r} needs a callable run (and add_arguments or None)")
            if name in commands:
                raise PluginError(
                    f"command {name!r} is registered by both plugin {commands[name].plugin!r} and plugin {_owner!r}"
                )
            commands[name] = Command(name, str(help or ""), add_arguments, run, _owner)

        impl.function(register=register)
    return commands


async def settle(results: list[Any]) -> list[Any]:
    """Hook results with awaitables awaited (a hook may return a value or an awaitable)."""
    return [await r if inspect.isawaitable(r) else r for r in results]
