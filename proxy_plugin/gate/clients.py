"""Who is calling and what they may use: client keys (compared by SHA-256, in constant time) and model globs.

Built once per configuration. A key is a secret: it is hashed on arrival and never kept,
logged or echoed; errors name nothing of it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from typing import Any

from proxy_plugin.config.clients import key_digest
from proxy_plugin.config.schema import ClientKeyConfig, ClientsConfig
from proxy_plugin.errors import ProxyError

ANONYMOUS = "anonymous"


class Client:
    """Who is calling: a client key's id, or ``anonymous`` (with the caller's IP)."""

    __slots__ = ("id", "ip", "key")

    def __init__(self, id: str, ip: str, key: Any = None) -> None:
        self.id = id
        self.ip = ip
        self.key: ClientKeyConfig | None = key  # the key's configuration (limits, budget, models), None when anonymous

    def __repr__(self) -> str:
        return f"Client(id={self.id!r}, ip={self.ip!r})"


def invalid_key(problem: str) -> ProxyError:
    """The 401 for a missing, unknown or malformed gateway key."""
    return ProxyError(401, f"{problem}: send a gateway key as 'Authorization: Bearer <key>'",
                      "invalid_request_error", "invalid_api_key", reason="auth")


class Keyring:
    """The configured client keys by digest, and each key's allowed models."""

    __slots__ = ("_by_digest", "_models")

    def __init__(self, clients: ClientsConfig) -> None:
        self._by_digest: dict[bytes, tuple[bytes, ClientKeyConfig]] = {}
        self._models: dict[str, re.Pattern[str]] = {}
        for key in clients.keys:
            digest = key_digest(key)
            self._by_digest[digest] = (digest, key)
            if key.models:
                self._models[key.id] = re.compile("|".join(fnmatch.translate(g) for g in key.models))

    @property
    def required(self) -> bool:
        """Whether any key is configured (then every chat request needs one)."""
        return bool(self._by_digest)

    def find(self, api_key: str | None) -> ClientKeyConfig:
        """The key's configuration; a 401 when it is missing or unknown."""
        if not api_key:
            raise invalid_key("missing gateway key")
        digest = hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).digest()
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found[0], digest):
            raise invalid_key("invalid gateway key")
        return found[1]

    def check_model(self, client: Client, model: str) -> None:
        """A 403 when ``model`` (as requested, after the approach prefix) is outside the key's globs."""
        if client.key is None:
            return
        allowed = self._models.get(client.key.id)
        if allowed is not None and not allowed.fullmatch(model):
            raise ProxyError(403, f"the model {model[:200]!r} is not allowed for client {client.id!r} "
                                  f"(allowed: {', '.join(client.key.models)})",
                             "permission_error", "model_not_allowed")
