"""Rules of the ``clients`` section that span keys: each key given once (``key`` or ``key_sha256``), ids and keys unique.

A key is a secret: an error names the key path and the other entry, never the key.
"""

from __future__ import annotations

import hashlib
from typing import Any

from proxy_plugin.config.schema import ClientKeyConfig, ClientsConfig


def key_digest(key: ClientKeyConfig) -> bytes:
    """The SHA-256 digest of a client key (from ``key``, or ``key_sha256`` as given)."""
    if key.key is not None:
        return hashlib.sha256(key.key.encode()).digest()
    assert key.key_sha256 is not None
    return bytes.fromhex(key.key_sha256)


def check_clients(ctx: Any, clients: ClientsConfig) -> None:
    """Each key has exactly one of ``key`` / ``key_sha256``; no id or key twice (``ctx.error`` raised)."""
    ids: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for i, key in enumerate(clients.keys):
        path = f"clients.keys[{i}]"
        if (key.key is None) == (key.key_sha256 is None):
            raise ctx.error(path, "needs exactly one of 'key' or 'key_sha256'")
        if key.id in ids:
            raise ctx.error(f"{path}.id", f"duplicate client id {key.id!r} (also clients.keys[{ids[key.id]}])")
        digest = key_digest(key)
        if digest in digests:
            field = "key" if key.key is not None else "key_sha256"
            raise ctx.error(f"{path}.{field}", f"the same key as clients.keys[{digests[digest]}] (keys must differ)")
        ids[key.id] = i
        digests[digest] = i
