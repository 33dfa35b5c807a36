"""Failure classes: the one place that decides what a failed attempt means.

| class            | what                                                        | the proxy                                   |
|------------------|-------------------------------------------------------------|---------------------------------------------|
| TRANSIENT        | connection refused/reset, timeouts, 408, 429, 500, 502-504  | retry on the same provider (backoff), then fail over; counts against the provider |
| PROVIDER_CONFIG  | 401, 403, 404 from the provider                             | fail over at once; counts against the provider |
| CONTEXT_LENGTH   | 400 with code ``context_length_exceeded``                   | fail over to a provider whose mapped model differs; nobody is marked |
| CALLER           | other 400, 413, 422, content-policy 400s                    | returned to the caller as it is; nobody is marked |
| BAD_RESPONSE     | 200 whose body is not a completion, other 4xx/5xx           | fail over; counts against the provider |

Classification looks at status codes, error codes and exception types, never
at the text of messages.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import math
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from proxy_plugin.upstream import UpstreamError


class Failure(enum.Enum):
    """What a failed attempt means for the request and for the provider."""

    TRANSIENT = "transient"
    PROVIDER_CONFIG = "provider_config"
    CONTEXT_LENGTH = "context_length"
    CALLER = "caller"
    BAD_RESPONSE = "bad_response"

    @property
    def counts_against_provider(self) -> bool:
        """Whether this failure is recorded against the provider's health."""
        return self in (Failure.TRANSIENT, Failure.PROVIDER_CONFIG, Failure.BAD_RESPONSE)


TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
PROVIDER_CONFIG_STATUS = frozenset({401, 403, 404})
CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})


def error_code(body: bytes) -> str | None:
    """The ``error.code`` (or ``error.type``) of an OpenAI-shaped error body, if any."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return code if isinstance(code, str) else None
    return None


def classify_status(status: int, body: bytes) -> Failure:
    """Classify an upstream HTTP error response."""
    if status in TRANSIENT_STATUS:
        return Failure.TRANSIENT
    if status in PROVIDER_CONFIG_STATUS:
        return Failure.PROVIDER_CONFIG
    if status == 400 and error_code(body) in CONTEXT_CODES:
        return Failure.CONTEXT_LENGTH
    if status in (400, 413, 422):
        return Failure.CALLER
    return Failure.BAD_RESPONSE


def classify_exception(exc: BaseException) -> Failure | None:
    """Classify an exception raised while talking to a provider (None: not ours to handle)."""
    if isinstance(exc, (UpstreamError, aiohttp.ClientError, TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return Failure.TRANSIENT
    return None


def connection_level(exc: BaseException) -> bool:
    """Failures that say the provider as a whole is unreachable (not one model)."""
    if isinstance(exc, UpstreamError):
        return exc.connection_level
    return isinstance(
        exc, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError, aiohttp.ClientOSError)
    )


def describe_exception(exc: BaseException) -> str:
    """A short, secret-free description of a transport failure."""
    if isinstance(exc, UpstreamError):
        return exc.what
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused" if isinstance(exc.os_error, ConnectionRefusedError) else "cannot connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response cut short"
    if isinstance(exc, (aiohttp.ClientOSError, ConnectionError)):
        return "connection reset"
    return type(exc).__name__


def retry_after(headers: Mapping[str, Any], now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), if any."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
