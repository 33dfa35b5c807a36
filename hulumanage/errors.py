"""OpenAI-shaped errors raised inside the host.

Plugins raise their own twin of ``ApiError`` (any exception with an integer ``status_code``);
the proxy keeps small copies of both names here (docs/internals.md, "Deliberate copies").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """An error answered to the client as ``{"error": {...}}`` with ``status_code``."""

    def __init__(
        self,
        status_code: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.code = code
        self.headers = dict(headers or {})


def error_payload(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Map any exception to (status, OpenAI error body, extra headers).

    Exceptions carrying an integer ``status_code`` (ours, the proxy's, the
    openai SDK's ``APIStatusError``) keep their status; anything else is a 500
    whose message does not echo internals.
    """
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or not 400 <= status <= 599:
        return 500, {"error": {"message": "internal error in the approach; see the server log", "type": "server_error", "code": None}}, {}
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        payload = {"error": dict(body["error"])}
    elif isinstance(body, Mapping) and "message" in body:
        payload = {"error": dict(body)}
    else:
        payload = {
            "error": {
                "message": str(getattr(exc, "message", None) or exc),
                "type": getattr(exc, "type", None) or ("server_error" if status >= 500 else "invalid_request_error"),
                "code": getattr(exc, "code", None),
            }
        }
    raw_headers = getattr(exc, "headers", None)
    headers: dict[str, str] = {}
    if isinstance(raw_headers, Mapping):
        # what a client may act on: when to retry, and OpenAI's rate-limit headers (x-ratelimit-*)
        for key, value in raw_headers.items():
            lower = key.lower()
            if lower == "retry-after":
                headers["Retry-After"] = str(value)
            elif lower.startswith("x-ratelimit-"):
                headers[lower] = str(value)
    return status, payload, headers
