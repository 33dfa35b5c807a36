"""The plugin protocol: hook specifications only."""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("hulumanage")


@hookspec
def register_approaches(register: Any) -> None:
    """Register approaches by calling ``register(approach)`` for each one.

    An approach has a ``slug``, a ``description``, ``params`` (extra_body field
    name -> one-line doc), ``terminal`` (it calls upstream itself) and an async
    ``run(call)``. A slug registered twice is a startup error naming both plugins.

    Optional: ``fanout(call) -> int``, the most upstream calls ``run`` can make for
    ``call`` (e.g. ``bon``: two per sample, a sample call and a rating call). The host
    multiplies the declared counts of a request's layers and answers a 400
    (``fanout_exceeded``) before running anything when the product is over
    ``--max-fanout``; calls of an approach that declares nothing are counted as they
    happen and refused past the cap with the same error.
    """


@hookspec
def add_options(parser: Any) -> None:
    """Add command-line flags to the host's ``argparse.ArgumentParser``."""


@hookspec
def lifespan(app: Any, options: Any) -> Any:
    """Return an async generator (or None) run as an aiohttp ``cleanup_ctx``.

    Code before its ``yield`` runs at startup (an exception aborts startup with
    its message), code after it runs at shutdown.
    """


@hookspec
def register_routes(app: Any, options: Any) -> None:
    """Add extra HTTP routes to the aiohttp application ``app``."""


@hookspec
def health(app: Any) -> Any:
    """Return a JSON-able dict (or an awaitable of one) merged into ``GET /health``."""


@hookspec
def list_models(app: Any) -> Any:
    """Return a list of OpenAI model objects (or an awaitable of one) for ``GET /v1/models``."""


@hookspec
def reload(app: Any) -> Any:
    """Prepare a configuration reload (SIGHUP or ``POST /admin/reload``), all or nothing.

    Return a *prepared reload* (or an awaitable of one): an object with ``apply()``,
    which swaps the new configuration in and returns a JSON-able dict of what was
    reloaded, and optionally ``discard()``. Preparing loads and validates and swaps
    nothing; raise to reject the reload. The host prepares every plugin's reload in
    turn; any exception rejects the whole reload, ``discard()`` is called on the ones
    prepared, and the old configuration keeps serving everywhere. Then it applies
    them all. A plain dict (or None) is the legacy form: the plugin reloaded already.
    """


@hookspec
def register_commands(register: Any) -> None:
    """Register subcommands of the ``hulumanage`` command.

    Call ``register(name, help, add_arguments, run)`` for each: ``name`` is the
    word after ``hulumanage``; ``help`` one line for the command list;
    ``add_arguments(parser)`` (or None) adds the command's flags to its own
    ``argparse`` parser, which also has ``--log-level`` and every plugin's
    ``add_options`` flags; ``run(options, pm)`` runs it with the parsed
    ``argparse.Namespace`` and the plugin manager and returns the exit status
    (an ``int``, or an awaitable of one, run on a new event loop). The host's own
    ``serve`` and ``demo`` come through this hook too. A name registered twice
    is a startup error naming both plugins.
    """


@hookspec(firstresult=True)
def request_gate(app: Any) -> Any:
    """Return the gate every chat request passes through (or None); asked once, after startup.

    The first plugin to return one wins. The gate decides who may call and how much, may
    answer itself (a cache hit), and hears how every request ended; the host calls it for
    every chat request, whatever approach serves it. Its interface is in
    ``hulumanage/gate.py`` and the README.
    """
