"""Errors the proxy answers with; the host turns them into OpenAI-shaped responses.

``ProxyError`` meets the host by duck typing (``status_code``, ``message``, ...); the host's
``ApiError`` is its deliberate twin (docs/internals.md, "Deliberate copies").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ProxyError(Exception):
    """An error with an HTTP status, answered as ``{"error": {message, type, code}}``."""

    def __init__(
        self,
        status_code: int,
        message: str,
        type: str = "proxy_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.code = code
        self.headers = dict(headers or {})
        self.body = body


def bad_request(message: str, code: str) -> ProxyError:
    """A 400 for a request the proxy cannot serve as asked."""
    return ProxyError(400, message, "invalid_request_error", code)
