"""Errors the proxy answers with; the host turns them into OpenAI-shaped responses.

``ProxyError`` meets the host by duck typing (``status_code``, ``message``, ...); the host's
``ApiError`` is its deliberate twin (docs/internals.md, "Deliberate copies").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

_TAGS = re.compile(rb"<[^>]*>")
_SPACE = re.compile(rb"\s+")


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
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason  # a gateway control's refusal: rpm, tpm, parallel, budget or auth (metrics)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.code = code
        self.headers = dict(headers or {})
        self.body = body


def bad_request(message: str, code: str) -> ProxyError:
    """A 400 for a request the proxy cannot serve as asked."""
    return ProxyError(400, message, "invalid_request_error", code)


def caller_error(provider: str, status: int, body: bytes) -> tuple[ProxyError, bytes]:
    """The error for a request the provider refused as the caller's fault, and the body to relay.

    A provider's OpenAI-shaped body is relayed as it is. Anything else (a plain-text 413,
    an HTML error page) becomes an OpenAI-shaped error naming the provider and the status,
    with the start of its text; it is never relabelled as JSON.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        message = str(data["error"].get("message") or f"the provider {provider} rejected the request ({status})")
        return ProxyError(status, message, "invalid_request_error", body=data), body
    text = _SPACE.sub(b" ", _TAGS.sub(b" ", body[:4096])).strip()[:200].decode("utf-8", "replace")
    message = f"provider {provider} answered {status} with a body that is not an OpenAI error" + (
        f": {text}" if text else " (empty)")
    error = ProxyError(status, message, "invalid_request_error", "upstream_error_not_json")
    payload = {"error": {"message": message, "type": error.type, "code": error.code}}
    return error, orjson.dumps(payload)
