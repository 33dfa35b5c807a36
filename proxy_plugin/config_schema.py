"""The proxy configuration as frozen, typed objects, and the validator that builds them.

Each field carries its validation rules in ``dataclasses.field(metadata=...)``:
``gt``/``ge``/``le`` bounds, ``check`` (a function that returns the normalized
value or raises ``ValueError(problem)``) and ``secret`` (never echoed in errors,
never shown in ``repr``). :func:`build` reads the field types from the annotations
and the rules from the metadata. Finding and reading the file, ``${VAR}``
interpolation and ``ConfigError`` live in ``config.py`` (the public entry point).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import urlsplit

STRATEGIES = ("weighted", "round_robin", "failover", "least_latency", "least_busy")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_NULLS = ("", "null", "none", "~")


def _opt(
    default: Any = dataclasses.MISSING,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    check: Callable[[Any], Any] | None = None,
    secret: bool = False,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a config field with its validation rules (secret fields stay out of repr)."""
    meta = {"gt": gt, "ge": ge, "le": le, "check": check, "secret": secret}
    if factory is not None:
        return dataclasses.field(default_factory=factory, repr=not secret, metadata=meta)
    return dataclasses.field(default=default, repr=not secret, metadata=meta)


def _empty_map() -> Mapping[str, str]:
    """Return the shared empty read-only mapping (default for map fields)."""
    return _EMPTY


def _hashable(value: Any) -> Any:
    """Turn read-only mappings into something hashable, recursively."""
    if isinstance(value, Mapping):
        return frozenset((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, tuple):
        return tuple(_hashable(v) for v in value)
    return value


def _hash_fields(obj: Any) -> int:
    """Hash a config object by value although it holds ``MappingProxyType`` fields."""
    return hash(tuple(_hashable(getattr(obj, f.name)) for f in dataclasses.fields(obj)))


def _header_problem(text: str) -> str | None:
    """Why ``text`` cannot travel in an HTTP header ("line breaks", "not Latin-1"), or None."""
    if "\r" in text or "\n" in text:
        return "line breaks"
    if not text.isascii():
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            return "not Latin-1"
    return None


def _header_text(value: str) -> str:
    """Check a value sent in an HTTP header (an API key): one line of Latin-1 text. Never echoes it."""
    problem = _header_problem(value)
    if problem == "line breaks":
        raise ValueError("must not contain line breaks (it is sent in an HTTP header)")
    if problem is not None:
        raise ValueError("must be Latin-1 text (it is sent in an HTTP header); check for pasted quotes or spaces")
    return value


def _http_url(value: str) -> str:
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


def _non_empty(value: str) -> str:
    """Reject an empty or blank string."""
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _strategy(value: str) -> str:
    """Check a routing strategy name, suggesting the closest one."""
    if value in STRATEGIES:
        return value
    close = difflib.get_close_matches(value, STRATEGIES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    allowed = ", ".join(repr(s) for s in STRATEGIES)
    raise ValueError(f"unknown strategy {value!r}{hint}; expected one of {allowed}")


def _log_level(value: str) -> str:
    """Check a log level name, case-insensitively; return it upper-case."""
    if value.upper() in LOG_LEVELS:
        return value.upper()
    raise ValueError(f"unknown log level {value!r}; expected one of {', '.join(LOG_LEVELS)}")


@dataclasses.dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Timeouts in seconds for upstream calls; None disables an optional one."""

    connect: float = _opt(5.0, gt=0)
    request: float = _opt(120.0, gt=0)
    first_token: float | None = _opt(30.0, gt=0)
    idle: float | None = _opt(30.0, gt=0)
    total: float | None = _opt(None, gt=0)


@dataclasses.dataclass(frozen=True, slots=True)
class TimeoutOverrides:
    """Per-provider timeouts; None means "use the global value".

    ``total`` is one deadline over every provider a request tries, so it is global only.
    """

    connect: float | None = _opt(None, gt=0)
    request: float | None = _opt(None, gt=0)
    first_token: float | None = _opt(None, gt=0)
    idle: float | None = _opt(None, gt=0)


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One OpenAI-compatible upstream. ``api_key`` and ``headers`` never show in repr."""

    name: str = _opt(check=_non_empty)
    base_url: str = _opt(check=_http_url)
    api_key: str | None = _opt(None, secret=True, check=_header_text)
    weight: float = _opt(1.0, ge=0)
    fallback_only: bool = _opt(False)
    model_map: Mapping[str, str] = _opt(factory=_empty_map)
    max_concurrent: int | None = _opt(None, ge=1)
    slot_wait: float = _opt(0.5, ge=0)
    headers: Mapping[str, str] = _opt(factory=_empty_map, secret=True)
    supports_prefill: bool = _opt(False)
    timeouts: TimeoutOverrides = dataclasses.field(default_factory=TimeoutOverrides)

    def __hash__(self) -> int:
        """Hash by value (the mappings are read-only)."""
        return _hash_fields(self)


@dataclasses.dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """Background health checks of each provider."""

    enabled: bool = _opt(True)
    interval: float = _opt(30.0, gt=0)
    timeout: float = _opt(5.0, gt=0)
    unhealthy_after: int = _opt(1, ge=1)
    healthy_after: int = _opt(1, ge=1)


@dataclasses.dataclass(frozen=True, slots=True)
class RoutingConfig:
    """How a provider is chosen for each request."""

    strategy: str = _opt("weighted", check=_strategy)
    health_check: HealthCheckConfig = dataclasses.field(default_factory=HealthCheckConfig)


@dataclasses.dataclass(frozen=True, slots=True)
class QueueConfig:
    """The global bound on requests in flight, and how long a request may wait."""

    max_concurrent: int = _opt(100, ge=1)
    timeout: float = _opt(30.0, ge=0)


@dataclasses.dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """Logging and metrics switches."""

    log_level: str = _opt("INFO", check=_log_level)
    track_latency: bool = _opt(True)
    track_errors: bool = _opt(True)


@dataclasses.dataclass(frozen=True, slots=True)
class RetryConfig:
    """Retries on the same provider and the retry budget."""

    attempts_per_provider: int = _opt(2, ge=1)
    backoff_base: float = _opt(0.1, ge=0)
    backoff_max: float = _opt(2.0, ge=0)
    retry_after_max: float = _opt(2.0, ge=0)
    budget_ratio: float = _opt(0.2, ge=0, le=1)
    budget_min: int = _opt(10, ge=0)


@dataclasses.dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """When a failing provider is taken out of rotation, and for how long."""

    enabled: bool = _opt(True)
    consecutive_failures: int = _opt(5, ge=1)
    failure_rate: float = _opt(0.5, gt=0, le=1)
    window: float = _opt(30.0, gt=0)
    min_requests: int = _opt(10, ge=1)
    open_base: float = _opt(5.0, gt=0)
    open_max: float = _opt(60.0, gt=0)


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The whole validated proxy configuration; ``source`` is the file it came from."""

    providers: tuple[ProviderConfig, ...]
    routing: RoutingConfig = dataclasses.field(default_factory=RoutingConfig)
    timeouts: TimeoutConfig = dataclasses.field(default_factory=TimeoutConfig)
    queue: QueueConfig = dataclasses.field(default_factory=QueueConfig)
    monitoring: MonitoringConfig = dataclasses.field(default_factory=MonitoringConfig)
    retries: RetryConfig = dataclasses.field(default_factory=RetryConfig)
    circuit_breaker: CircuitBreakerConfig = dataclasses.field(default_factory=CircuitBreakerConfig)
    source: str = "<config>"

    def __hash__(self) -> int:
        """Hash by value (the mappings are read-only)."""
        return _hash_fields(self)

    def timeouts_for(self, provider: ProviderConfig) -> TimeoutConfig:
        """Return the global timeouts with ``provider``'s overrides applied."""
        over = provider.timeouts
        merged = {}
        for f in dataclasses.fields(TimeoutConfig):
            value = getattr(over, f.name, None)
            merged[f.name] = getattr(self.timeouts, f.name) if value is None else value
        return TimeoutConfig(**merged)


# --- validating parsed YAML into these objects -------------------------------------


class Context(Protocol):
    """What validation needs from the loader: error building and ${VAR} interpolation."""

    def error(self, path: str, problem: str) -> Exception:
        """Return the exception to raise for ``problem`` at key ``path``."""

    def interpolate(self, raw: str, path: str, secret: bool) -> tuple[str, bool]:
        """Expand references in ``raw``; return the result and whether it held any."""


def describe(value: Any, secret: bool = False) -> str:
    """Say what ``value`` is for an error message; for secrets, only its kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean" if secret else str(value).lower()
    if isinstance(value, (int, float)):
        return "a number" if secret else repr(value)
    if isinstance(value, str):
        return "a string" if secret else repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _join(path: str, key: Any) -> str:
    """The key path of ``key`` inside ``path``."""
    return f"{path}.{key}" if path else str(key)


def unknown_key(ctx: Context, path: str, key: Any, allowed: list[str]) -> Exception:
    """An unknown-key error with a did-you-mean suggestion."""
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(allowed)
    return ctx.error(_join(path, key), f"unknown key ({hint})")


def _mapping(raw: Any, ctx: Context, path: str) -> Mapping[Any, Any]:
    """Check that ``raw`` is a mapping; YAML null (an empty section) counts as ``{}``."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ctx.error(path, f"expected a mapping, got {describe(raw)}")
    return raw


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a config dataclass."""
    return typing.get_type_hints(cls)


def build(cls: type, raw: Any, ctx: Context, path: str) -> Any:
    """Validate mapping ``raw`` into an instance of the config dataclass ``cls``."""
    data = _mapping(raw, ctx, path)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise unknown_key(ctx, path, key, list(fields))
    values = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name in data:
            values[name] = _value(_hints(cls)[name], data[name], f.metadata, ctx, sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ctx.error(sub, "required key is missing")
    return cls(**values)


def _string_map(raw: Any, ctx: Context, path: str, secret: bool) -> Mapping[str, str]:
    """Validate a mapping of non-empty string keys to (interpolated) string values."""
    out = {}
    for key, value in _mapping(raw, ctx, path).items():
        if not isinstance(key, str) or not key:
            raise ctx.error(path, f"keys must be non-empty strings, got {describe(key)} (quote it)")
        sub = f"{path}[{key!r}]"
        if not isinstance(value, str):
            raise ctx.error(sub, f"expected a string, got {describe(value, secret)}")
        value, _ = ctx.interpolate(value, sub, secret)
        problem = _header_problem(key + value) if secret else None
        if problem == "line breaks":
            raise ctx.error(sub, "header names and values must not contain line breaks")
        if problem is not None:
            raise ctx.error(sub, "header names and values must be Latin-1 text")
        out[key] = value
    return types.MappingProxyType(out)


def _scalar(kind: type, value: Any, raw: Any, templated: bool, secret: bool, ctx: Context, path: str) -> Any:
    """Convert ``value`` (``raw`` after interpolation) to ``kind``, or raise a type error."""
    if kind is str:
        if isinstance(value, str):
            return value
        raise ctx.error(path, f"expected a string, got {describe(value, secret)}")
    word = {bool: "true or false", int: "an integer", float: "a number"}[kind]
    if isinstance(value, str) and templated:
        text = value.strip().lower()
        if kind is bool and text in _TRUE + _FALSE:
            return text in _TRUE
        try:
            converted = int(text) if kind is int else float(text) if kind is float else None
        except ValueError:
            converted = None
        if converted is not None and math.isfinite(converted):
            return converted
        raise ctx.error(path, f"expected {word}, got {value!r} (from {raw!r})")
    if kind is bool and isinstance(value, bool):
        return value
    if kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind is int and isinstance(value, int):
            return value
        if kind is float and math.isfinite(value):
            return float(value)
    hint = " (a quoted string: remove the quotes)" if isinstance(value, str) else ""
    raise ctx.error(path, f"expected {word}, got {describe(value, secret)}{hint}")


def _value(hint: Any, raw: Any, meta: Mapping[str, Any], ctx: Context, path: str) -> Any:
    """Validate one field value: interpolate, convert to ``hint``, check bounds and rules."""
    secret = bool(meta.get("secret"))
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    kind = next(a for a in args if a is not type(None)) if optional else hint
    if dataclasses.is_dataclass(kind):
        return build(kind, raw, ctx, path)
    if typing.get_origin(kind) is Mapping:
        return _string_map(raw, ctx, path, secret)
    value, templated = ctx.interpolate(raw, path, secret) if isinstance(raw, str) else (raw, False)
    if optional and (
        value is None or value == "" or (templated and isinstance(value, str) and value.strip().lower() in _NULLS)
    ):
        return None
    value = _scalar(kind, value, raw, templated, secret, ctx, path)
    if secret and isinstance(value, str) and value != value.strip():
        raise ctx.error(path, "has leading or trailing whitespace (a stray newline?)")
    for bound, ok, op in (
        ("gt", lambda v, b: v > b, ">"),
        ("ge", lambda v, b: v >= b, ">="),
        ("le", lambda v, b: v <= b, "<="),
    ):
        limit = meta.get(bound)
        if limit is not None and not ok(value, limit):
            raise ctx.error(path, f"must be {op} {limit}, got {value!r}")
    if meta.get("check"):
        try:
            value = meta["check"](value)
        except ValueError as e:
            raise ctx.error(path, str(e)) from None
    return value
