"""State that outlives one request: counters (spend, budget periods) and budget reservations.

One small interface (:class:`~proxy_plugin.state.base.StateStore`), several backends:
``memory`` (one process, lost at exit) and ``sqlite`` (the embedded default for what must
survive a restart; written off the event loop, batched). A Redis backend for several
replicas (``redis.py``) implements the same interface, its writes batched. :func:`open_store` builds the configured one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from proxy_plugin.config.schema import StateConfig
from proxy_plugin.state.base import StateStore
from proxy_plugin.state.memory import MemoryStore
from proxy_plugin.state.sqlite import SQLiteStore


def expand_path(path: str, environ: Mapping[str, str]) -> str:
    """``path`` with a leading ``~`` taken from ``environ["HOME"]`` when set."""
    home = environ.get("HOME")
    if home and (path == "~" or path.startswith("~/")):
        return home + path[1:]
    return os.path.expanduser(path)


def make_store(config: StateConfig, environ: Mapping[str, str]) -> StateStore:
    """The store ``config`` names (not yet opened: ``await store.open()``)."""
    if config.backend == "memory":
        return MemoryStore()
    if config.backend == "redis":
        from proxy_plugin.state.redis import RedisStore  # imported only when configured

        return RedisStore(config)
    return SQLiteStore(expand_path(config.path, environ))


__all__ = ["MemoryStore", "SQLiteStore", "StateStore", "expand_path", "make_store"]
