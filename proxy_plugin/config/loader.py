"""Load the proxy configuration: find the file, read YAML, interpolate ``${VAR}``, validate.

Every problem is a :class:`ConfigError` naming the file, the key path and what is
wrong. Secret values (``api_key``, ``headers``) are never echoed. The process
environment is always passed in as ``environ``, so these functions are pure.
Sections are declared in ``schema.py`` and validated by ``engine.py``; this module
adds what spans them (the providers list, cross-field rules).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from proxy_plugin.config.clients import check_clients
from proxy_plugin.config.engine import build, describe, field_value, unknown_key
from proxy_plugin.config.interpolate import interpolate
from proxy_plugin.config.schema import SCALARS, SECTIONS, ProviderConfig, ProxyConfig

ENV_VAR = "HULUMANAGE_PROXY_CONFIG"
DEFAULT_PATH = "~/.hulumanage/proxy_config.yaml"


class ConfigError(Exception):
    """A configuration problem: ``str(e)`` is ``"{file}: {key_path}: {problem}"``."""

    def __init__(self, file: str, key_path: str, problem: str) -> None:
        """Record where (file, key path) and what (problem) went wrong."""
        self.file, self.key_path, self.problem = file, key_path, problem
        where = f"{file}: {key_path}" if key_path else file
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the three fields (the default would pass only the message)."""
        return (type(self), (self.file, self.key_path, self.problem))


@dataclasses.dataclass(frozen=True, slots=True)
class _Ctx:
    """What every validation step needs: the source name and the environment."""

    source: str
    environ: Mapping[str, str]

    def error(self, path: str, problem: str) -> ConfigError:
        """Build a ConfigError for ``path`` in this source."""
        return ConfigError(self.source, path, problem)

    def interpolate(self, raw: str, path: str, secret: bool) -> tuple[str, bool]:
        """Return ``raw`` with references expanded, and whether it held any reference."""
        return interpolate(raw, self, path, secret)


# --- finding and reading the file -------------------------------------------------


def _expand_user(path: str, environ: Mapping[str, str]) -> Path:
    """Expand a leading ``~`` with ``environ["HOME"]`` when set, else the OS's idea of home."""
    home = environ.get("HOME")
    if home and (path == "~" or path.startswith("~/")):
        return Path(home + path[1:])
    return Path(os.path.expanduser(path))


def find_config_path(cli_path: str | None, environ: Mapping[str, str]) -> tuple[Path | None, list[str]]:
    """Find the config file: ``--proxy-config``, else ``$HULUMANAGE_PROXY_CONFIG``, else the default.

    Returns ``(path or None if the default does not exist, the places looked at)``.
    A path given on the command line or in the environment must exist (ConfigError).
    """
    for given, origin in ((cli_path, "--proxy-config"), (environ.get(ENV_VAR), f"${ENV_VAR}")):
        if given:
            path = _expand_user(given, environ)
            if not path.exists():
                raise ConfigError(str(path), origin, "file does not exist")
            if not path.is_file():
                raise ConfigError(str(path), origin, "not a regular file")
            return path, [str(path)]
    path = _expand_user(DEFAULT_PATH, environ)
    return (path if path.is_file() else None), [str(path)]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe YAML loader that rejects duplicate keys in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Construct a mapping, failing on a key written twice (merge keys excepted)."""
        seen: list[Any] = []
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path, environ: Mapping[str, str]) -> ProxyConfig:
    """Read the YAML file at ``path``, interpolate, validate; return a ProxyConfig."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(source, "", f"cannot read the file: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "", "cannot read the file: it is not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as e:
        # Built by hand: str(e) would quote the offending line, which may hold a secret.
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            problem = f"{problem} ({e.context})"
        raise ConfigError(source, where, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(source, "", f"YAML syntax error: {e}") from None
    return parse_config(data, environ, source)


def _providers(raw: Any, ctx: _Ctx) -> tuple[ProviderConfig, ...]:
    """Validate the ``providers`` list: at least one, each valid, names unique."""
    if raw is None or (isinstance(raw, list) and not raw):
        raise ctx.error("providers", "must list at least one provider")
    if not isinstance(raw, list):
        raise ctx.error("providers", f"expected a list of providers, got {describe(raw)}")
    providers: list[ProviderConfig] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ctx.error(f"providers[{i}]", f"expected a mapping, got {describe(item)}")
        provider = build(ProviderConfig, item, ctx, f"providers[{i}]")
        if provider.name in seen:
            raise ctx.error(
                f"providers[{i}].name",
                f"duplicate provider name {provider.name!r} (also providers[{seen[provider.name]}])",
            )
        seen[provider.name] = i
        providers.append(provider)
    return tuple(providers)


def _at_least(ctx: _Ctx, section: Any, path: str, high: str, low: str) -> None:
    """Check the cross-field rule ``section.high >= section.low``."""
    if getattr(section, high) < getattr(section, low):
        raise ctx.error(
            f"{path}.{high}", f"must be >= {low} ({getattr(section, low)!r}), got {getattr(section, high)!r}"
        )


def parse_config(data: Any, environ: Mapping[str, str], source: str = "<config>") -> ProxyConfig:
    """Validate already-parsed YAML ``data`` into a ProxyConfig (see ``load_config``)."""
    ctx = _Ctx(source, environ)
    if data is None:
        raise ctx.error("", "the file is empty; it needs at least a 'providers' list")
    if not isinstance(data, Mapping):
        raise ctx.error("", f"expected a mapping at the top level, got {describe(data)}")
    allowed = ["providers", *SECTIONS, *SCALARS]
    for key in data:
        if key not in allowed:
            raise unknown_key(ctx, "", key, allowed)
    if "providers" not in data:
        raise ctx.error("providers", "required key is missing (the list of upstream providers)")
    providers = _providers(data["providers"], ctx)
    sections = {name: build(cls, data.get(name), ctx, name) for name, cls in SECTIONS.items()}
    _at_least(ctx, sections["retries"], "retries", "backoff_max", "backoff_base")
    _at_least(ctx, sections["circuit_breaker"], "circuit_breaker", "open_max", "open_base")
    check_clients(ctx, sections["clients"])
    scalars = {name: field_value(ProxyConfig, name, data[name], ctx) for name in SCALARS if name in data}
    return ProxyConfig(providers=providers, source=source, **sections, **scalars)
