"""Field checks for config values: each returns the normalized value or raises ``ValueError(problem)``.

Used as ``opt(check=...)`` in ``schema.py``. A problem text never quotes a secret's
value. Strategy names come from the routing registry, the one list of them.
"""

from __future__ import annotations

import difflib
from urllib.parse import urlsplit

from proxy_plugin.routing.registry import NAMES as STRATEGIES

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def header_problem(text: str) -> str | None:
    """Why ``text`` cannot travel in an HTTP header ("line breaks", "not Latin-1"), or None."""
    if "\r" in text or "\n" in text:
        return "line breaks"
    if not text.isascii():
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            return "not Latin-1"
    return None


def header_text(value: str) -> str:
    """Check a value sent in an HTTP header (an API key): one line of Latin-1 text. Never echoes it."""
    problem = header_problem(value)
    if problem == "line breaks":
        raise ValueError("must not contain line breaks (it is sent in an HTTP header)")
    if problem is not None:
        raise ValueError("must be Latin-1 text (it is sent in an HTTP header); check for pasted quotes or spaces")
    return value


def header_item(item: tuple[str, str]) -> str:
    """Check one ``(name, value)`` of a headers mapping; return the value. Never echoes either."""
    name, value = item
    problem = header_problem(name + value)
    if problem == "line breaks":
        raise ValueError("header names and values must not contain line breaks")
    if problem is not None:
        raise ValueError("header names and values must be Latin-1 text")
    return value


def http_url(value: str) -> str:
    """Check an http(s) base URL and strip trailing slashes."""
    bad = ValueError(f"expected an http:// or https:// URL, got {value!r}")
    if not value or any(c.isspace() for c in value):
        raise bad
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    return value.rstrip("/")


def non_empty(value: str) -> str:
    """Reject an empty or blank string."""
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def strategy(value: str) -> str:
    """Check a routing strategy name against the registry, suggesting the closest one."""
    if value in STRATEGIES:
        return value
    close = difflib.get_close_matches(value, STRATEGIES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    allowed = ", ".join(repr(s) for s in STRATEGIES)
    raise ValueError(f"unknown strategy {value!r}{hint}; expected one of {allowed}")


def log_level(value: str) -> str:
    """Check a log level name, case-insensitively; return it upper-case."""
    if value.upper() in LOG_LEVELS:
        return value.upper()
    raise ValueError(f"unknown log level {value!r}; expected one of {', '.join(LOG_LEVELS)}")


# --- gateway controls: client keys, budgets, state ----------------------------------

PERIODS = ("day", "week", "month", "total")
STATE_BACKENDS = ("sqlite", "memory", "redis")
REDIS_DOWN_POLICIES = ("local", "closed")


def period(value: str) -> str:
    """Check a budget period: ``day``, ``week``, ``month`` (UTC calendar) or ``total``."""
    if value.lower() in PERIODS:
        return value.lower()
    raise ValueError(f"unknown period {value!r}; expected one of {', '.join(PERIODS)}")


def sha256_hex(value: str) -> str:
    """Check a hex SHA-256 digest (64 hex characters); return it lower-case. Never echoes it."""
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("must be 64 hexadecimal characters (the SHA-256 of the key, e.g. from `sha256sum`)")
    return text


def state_backend(value: str) -> str:
    """Check a state backend name."""
    if value in STATE_BACKENDS:
        return value
    raise ValueError(f"unknown state backend {value!r}; expected one of {', '.join(STATE_BACKENDS)}")


def redis_url(value: str) -> str:
    """Check a Redis URL (``redis://``, ``rediss://`` or ``unix://``). Never echoes it (it may hold a password)."""
    if value.split("://", 1)[0].lower() in ("redis", "rediss", "unix") and "://" in value:
        return value
    raise ValueError("must be a redis://, rediss:// or unix:// URL")


def redis_down(value: str) -> str:
    """Check ``on_redis_down``: ``local`` or ``closed``."""
    if value.lower() in REDIS_DOWN_POLICIES:
        return value.lower()
    raise ValueError(f"unknown policy {value!r}; expected one of {', '.join(REDIS_DOWN_POLICIES)}")


def globs(value: tuple[str, ...]) -> tuple[str, ...]:
    """Check a list of model globs: non-empty strings."""
    for glob in value:
        if not glob.strip():
            raise ValueError("model globs must not be empty")
    return value
