"""The config validation engine: parsed YAML in, frozen typed dataclasses out, precise errors.

Decision (kept, not pydantic): this small engine stays, in its own module, rather than
pydantic v2. Reasons: (1) today's messages are pinned by tests (key paths like
``providers[1].wieght``, did-you-mean, ``(from '${VAR}')`` for templated values, a
secret shown only by its kind) and ``${VAR}`` must be expanded per field *before*
conversion, knowing whether the field is secret; with pydantic that is a
before-validator on every field plus a formatter re-mapping each error type to these
words, about as much code as this engine and more fragile across pydantic releases.
(2) Startup is no argument either way (openai already loads pydantic); this engine
costs nothing at import beyond the standard library. (3) A new section is as short
here as a pydantic model: one frozen dataclass (below). The engine knows nothing of
HTTP, providers or routing; field checks live in ``checks.py``.

Declaring a section
-------------------
A section is a frozen, slotted dataclass whose fields are declared with :func:`opt`;
the field's annotation is its type and ``opt``'s arguments its rules::

    @dataclasses.dataclass(frozen=True, slots=True)
    class CacheConfig:               # (give it a docstring: what the section controls)
        enabled: bool = opt(False)
        ttl: float = opt(300.0, gt=0)
        max_entries: int | None = opt(None, ge=1)   # ``X | None``: null (or "" / "null") is None
        backend: str = opt("memory", check=backend_name)
        redis_password: str | None = opt(None, secret=True)
        labels: Mapping[str, str] = opt(factory=empty_map)

then a field ``cache: CacheConfig = dataclasses.field(default_factory=CacheConfig)`` on
``ProxyConfig`` (``schema.py``): every dataclass-typed field there is a top-level section,
validated in field order, named in unknown-key suggestions. That is all; a nested
section is a dataclass-typed field inside a section, a required field an ``opt()``
without default. A rule spanning fields goes in ``loader.parse_config``.

Supported field types: ``str``, ``bool``, ``int``, ``float``, a nested config dataclass,
``Mapping[str, str]`` (read-only after validation), ``X | None`` of those scalars,
``tuple[X, ...]`` (a YAML list of strings or of a nested config dataclass; ``check`` then
gets the whole tuple) and ``Mapping[str, Section]`` (a mapping of names to a nested config
dataclass, e.g. per-model prices).
Rules (``opt`` arguments):

- ``gt`` / ``ge`` / ``le``: numeric bounds ("must be > 0, got 0").
- ``check``: a function returning the normalized value or raising ``ValueError(problem)``;
  for a ``Mapping`` field it gets each ``(key, value)`` item and returns the value.
- ``secret``: never echoed in an error (only its kind: "a string"), kept out of ``repr``,
  and a string with leading or trailing whitespace is refused.

A string value may hold ``${VAR}`` references, expanded by the :class:`Context` before
conversion; a templated value converts from text ("8" -> 8, "yes" -> True).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import operator
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Protocol

_EMPTY: Mapping[str, str] = types.MappingProxyType({})
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_NULLS = ("", "null", "none", "~")


def opt(
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


def empty_map() -> Mapping[str, str]:
    """Return the shared empty read-only mapping (default for map fields)."""
    return _EMPTY


def _hashable(value: Any) -> Any:
    """Turn read-only mappings into something hashable, recursively."""
    if isinstance(value, Mapping):
        return frozenset((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, tuple):
        return tuple(_hashable(v) for v in value)
    return value


def hash_fields(obj: Any) -> int:
    """Hash a config object by value although it holds ``MappingProxyType`` fields."""
    return hash(tuple(_hashable(getattr(obj, f.name)) for f in dataclasses.fields(obj)))


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


def field_value(cls: type, name: str, raw: Any, ctx: Context) -> Any:
    """Validate ``raw`` as the value of field ``name`` of config dataclass ``cls`` (a top-level scalar key)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _value(_hints(cls)[name], raw, field.metadata, ctx, name)


def _string_map(raw: Any, meta: Mapping[str, Any], ctx: Context, path: str) -> Mapping[str, str]:
    """Validate a mapping of non-empty string keys to (interpolated) string values."""
    secret, check = bool(meta.get("secret")), meta.get("check")
    out = {}
    for key, value in _mapping(raw, ctx, path).items():
        if not isinstance(key, str) or not key:
            raise ctx.error(path, f"keys must be non-empty strings, got {describe(key)} (quote it)")
        sub = f"{path}[{key!r}]"
        if not isinstance(value, str):
            raise ctx.error(sub, f"expected a string, got {describe(value, secret)}")
        value, _ = ctx.interpolate(value, sub, secret)
        if check is not None:
            try:
                value = check((key, value))
            except ValueError as e:
                raise ctx.error(sub, str(e)) from None
        out[key] = value
    return types.MappingProxyType(out)


def _sequence(item: Any, raw: Any, meta: Mapping[str, Any], ctx: Context, path: str) -> tuple[Any, ...]:
    """Validate a YAML list (null: empty) of strings or of a nested config dataclass into a tuple."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ctx.error(path, f"expected a list, got {describe(raw)}")
    out: list[Any] = []
    for i, value in enumerate(raw):
        sub = f"{path}[{i}]"
        if dataclasses.is_dataclass(item):
            out.append(build(typing.cast(type, item), value, ctx, sub))
            continue
        value, templated = ctx.interpolate(value, sub, False) if isinstance(value, str) else (value, False)
        out.append(_scalar(item, value, value, templated, False, ctx, sub))
    result = tuple(out)
    if meta.get("check"):
        try:
            result = meta["check"](result)
        except ValueError as e:
            raise ctx.error(path, str(e)) from None
    return result


def _section_map(item: type, raw: Any, ctx: Context, path: str) -> Mapping[str, Any]:
    """Validate a mapping of non-empty string names to a nested config dataclass (read-only)."""
    out = {}
    for key, value in _mapping(raw, ctx, path).items():
        if not isinstance(key, str) or not key:
            raise ctx.error(path, f"keys must be non-empty strings, got {describe(key)} (quote it)")
        out[key] = build(item, value, ctx, f"{path}[{key!r}]")
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
        return build(typing.cast(type, kind), raw, ctx, path)
    if typing.get_origin(kind) is tuple:
        return None if optional and raw is None else _sequence(typing.get_args(kind)[0], raw, meta, ctx, path)
    if typing.get_origin(kind) is Mapping:
        item = typing.get_args(kind)[1]
        if dataclasses.is_dataclass(item):
            return _section_map(typing.cast(type, item), raw, ctx, path)
        return _string_map(raw, meta, ctx, path)
    value, templated = ctx.interpolate(raw, path, secret) if isinstance(raw, str) else (raw, False)
    if optional and (
        value is None or value == "" or (templated and isinstance(value, str) and value.strip().lower() in _NULLS)
    ):
        return None
    value = _scalar(kind, value, raw, templated, secret, ctx, path)
    if secret and isinstance(value, str) and value != value.strip():
        raise ctx.error(path, "has leading or trailing whitespace (a stray newline?)")
    for bound, ok, op in (("gt", operator.gt, ">"), ("ge", operator.ge, ">="), ("le", operator.le, "<=")):
        limit = meta.get(bound)
        if limit is not None and not ok(value, limit):
            raise ctx.error(path, f"must be {op} {limit}, got {value!r}")
    if meta.get("check"):
        try:
            value = meta["check"](value)
        except ValueError as e:
            raise ctx.error(path, str(e)) from None
    return value
