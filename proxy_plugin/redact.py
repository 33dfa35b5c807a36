"""Provider secrets out of what a client sees: every configured key and header value, scrubbed.

Providers sometimes echo what they received (``Incorrect API key provided: sk-...``). The
proxy relays a caller's-error body as it is and builds messages and ``/health`` text from
upstream error bodies, so those pass through :class:`Redactor` first. It runs on error
paths only: a successful answer is relayed untouched and costs nothing here.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from proxy_plugin.config import ProviderConfig

#: what a secret is replaced with
REDACTED = "[redacted]"
#: shorter header values (``1``, ``true``, ``v2``) are settings, not secrets, and would mangle bodies
MIN_SECRET = 8


class Redactor:
    """Replaces every known secret in bytes or text with ``[redacted]``."""

    __slots__ = ("_bytes", "_text")

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET:
                forms.add(secret)
                forms.add(orjson.dumps(secret).decode()[1:-1])  # as it reads inside a JSON string
        ordered = sorted(forms, key=len, reverse=True)  # a secret containing another goes first
        self._text = tuple(ordered)
        self._bytes = tuple(s.encode() for s in ordered)

    def bytes(self, data: bytes) -> bytes:
        """``data`` with every secret replaced."""
        for secret in self._bytes:
            if secret in data:
                data = data.replace(secret, REDACTED.encode())
        return data

    def text(self, data: str) -> str:
        """``data`` with every secret replaced."""
        for secret in self._text:
            if secret in data:
                data = data.replace(secret, REDACTED)
        return data


def provider_secrets(providers: Iterable[ProviderConfig]) -> Redactor:
    """A redactor for every provider's API key and configured header values."""
    secrets: list[str] = []
    for p in providers:
        if p.api_key:
            secrets.append(p.api_key)
        secrets.extend(str(v) for v in dict(p.headers).values())
    return Redactor(secrets)
