"""``hulumanage sim-providers``: simulated OpenAI-compatible providers on their own, for local development.

``--providers fast,slow,flaky`` starts one provider per built-in profile (the demo's), or
``--config FILE`` a small YAML list::

    providers:
      - name: fast          # required, unique
        profile: fast       # fast | slow | flaky | ok (default ok: instant, never fails)
        port: 8101          # default: the next port after the previous provider's
        error_rate: 0.1     # share of 503 answers (default: the profile's)
        hang_rate: 0.0      # share of hangs (default: the profile's)
        latency: [0.02, 0.06]  # seconds, a number or [min, max] (default: the profile's)
        models: [gpt-4o-mini]
        api_key: sk-local   # if set, requests must send it

Each one's base URL and a proxy config snippet are printed; they serve until Ctrl-C or
SIGTERM (exit 0). An invalid file or flag is one error line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import difflib
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hulumanage.sim import FAST_CHEAP, FLAKY, SLOW_RELIABLE, FakeProvider, Profile

#: The built-in profiles by name (the demo's three, plus ``ok``); the demo's provider names work too.
PROFILES: Mapping[str, Profile] = {"fast": FAST_CHEAP, "slow": SLOW_RELIABLE, "flaky": FLAKY, "ok": Profile()}
ALIASES = {"fast-cheap": "fast", "slow-reliable": "slow"}
FIELDS = ("name", "profile", "port", "error_rate", "hang_rate", "latency", "models", "api_key")
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o")
DEFAULT_PORT = 8101


class SpecError(Exception):
    """A problem with ``--providers`` or the ``--config`` file: one line, exit 2."""


@dataclasses.dataclass(frozen=True, slots=True)
class SimSpec:
    """One simulated provider to start."""

    name: str
    profile: Profile
    port: int | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    api_key: str | None = None


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hulumanage sim-providers``."""
    parser.add_argument("--providers", metavar="P,Q", default=None,
                        help=f"built-in profiles to start, one provider each ({', '.join(PROFILES)}; default "
                             "fast,slow,flaky)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="a YAML list of providers (name, profile, port, error_rate, hang_rate, latency, models, "
                             "api_key) instead of --providers")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port of the first provider, the next ones count up (default {DEFAULT_PORT}; 0: free ports)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the providers' random behaviour (default: random)")


def _profile(name: Any, where: str) -> Profile:
    """The built-in profile called ``name`` (a did-you-mean when there is none)."""
    key = ALIASES.get(str(name), str(name))
    if key not in PROFILES:
        close = difflib.get_close_matches(str(name), [*PROFILES, *ALIASES], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(f"{where}: unknown profile {name!r}{hint}; known: {', '.join(PROFILES)}")
    return PROFILES[key]


def from_names(names: str) -> list[SimSpec]:
    """``fast,slow,flaky``: one provider per profile, named after it (``fast-2`` for a repeat)."""
    specs: list[SimSpec] = []
    seen: dict[str, int] = {}
    for raw in (n.strip() for n in names.split(",")):
        if not raw:
            continue
        profile = _profile(raw, "--providers")
        seen[raw] = seen.get(raw, 0) + 1
        specs.append(SimSpec(raw if seen[raw] == 1 else f"{raw}-{seen[raw]}", profile))
    if not specs:
        raise SpecError("--providers: name at least one profile")
    return specs


def _number(item: Mapping[str, Any], key: str, where: str) -> float | None:
    """A non-negative number field, or None when absent."""
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SpecError(f"{where}.{key}: expected a number >= 0, got {value!r}")
    return float(value)


def _spec(item: Any, where: str) -> SimSpec:
    """One provider of the YAML file."""
    if not isinstance(item, Mapping):
        raise SpecError(f"{where}: expected a mapping with at least a name")
    for key in item:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            raise SpecError(f"{where}.{key}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}.name: required, a non-empty string")
    base = _profile(item.get("profile", "ok"), f"{where}.profile")
    latency = item.get("latency")
    if isinstance(latency, list) and len(latency) == 2:
        low, high = (_number({"latency": v}, "latency", where) for v in latency)
        window = (low or 0.0, high or 0.0)
    elif latency is not None:
        one = _number(item, "latency", where) or 0.0
        window = (one, one)
    else:
        window = base.latency
    error_rate, hang_rate = _number(item, "error_rate", where), _number(item, "hang_rate", where)
    try:
        profile = dataclasses.replace(base, latency=window,
                                      error_rate=base.error_rate if error_rate is None else error_rate,
                                      hang_rate=base.hang_rate if hang_rate is None else hang_rate)
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from None
    port = item.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise SpecError(f"{where}.port: expected a port number, got {port!r}")
    models = item.get("models", list(DEFAULT_MODELS))
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise SpecError(f"{where}.models: expected a list of model names")
    api_key = item.get("api_key")
    if api_key is not None and not isinstance(api_key, str):
        raise SpecError(f"{where}.api_key: expected a string")
    return SimSpec(name, profile, port, tuple(models), api_key)


def from_file(path: str) -> list[SimSpec]:
    """The providers of a YAML file (see the module docstring)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: YAML syntax error: {exc}") from None
    items = data.get("providers") if isinstance(data, Mapping) else data
    if not isinstance(items, list) or not items:
        raise SpecError(f"{path}: providers: expected a non-empty list of providers")
    specs = [_spec(item, f"{path}: providers[{i}]") for i, item in enumerate(items)]
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise SpecError(f"{path}: providers: the name {name!r} is used twice")
    return specs


def blurb(profile: Profile) -> str:
    """``20-60 ms, 25% 503s, 5% hangs``."""
    low, high = (round(v * 1000) for v in profile.latency)
    parts = [f"{low}-{high} ms" if low != high else f"{low} ms"]
    if profile.error_rate:
        parts.append(f"{profile.error_rate:.0%} 503s")
    if profile.hang_rate:
        parts.append(f"{profile.hang_rate:.0%} hangs")
    if not profile.error_rate and not profile.hang_rate:
        parts.append("never fails")
    return ", ".join(parts)


def snippet(providers: Sequence[FakeProvider]) -> str:
    """A proxy config (``providers:`` list) pointing at ``providers``."""
    entries = []
    for p in providers:
        entry: dict[str, Any] = {"name": p.name, "base_url": p.base_url}
        if p.api_key is not None:
            entry["api_key"] = p.api_key
        entries.append(entry)
    return yaml.safe_dump({"providers": entries}, sort_keys=False).rstrip()


async def serve(specs: Sequence[SimSpec], host: str, first_port: int, seed: int | None) -> int:
    """Start ``specs``, print their URLs and a config snippet, serve until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[FakeProvider] = []
    try:
        port = first_port
        for i, spec in enumerate(specs):
            at = spec.port if spec.port is not None else port
            provider = FakeProvider(spec.name, api_key=spec.api_key, models=spec.models, profile=spec.profile,
                                    seed=None if seed is None else seed + i)
            try:
                await provider.start(at, host)
            except OSError as exc:
                await provider.close()
                print(f"hulumanage sim-providers: error: {spec.name}: cannot listen on {host}:{at}: "
                      f"{exc.strerror or exc}", file=sys.stderr)
                return 2
            started.append(provider)
            port = at + 1 if at else 0
        print(f"{len(started)} simulated provider{'s' if len(started) != 1 else ''} "
              "(chat completions, streaming, tools, JSON mode; /models):")
        width = max(len(p.name) for p in started)
        for spec, p in zip(specs, started):
            print(f"  {p.name:<{width}}  {p.base_url}  {blurb(spec.profile)}")
        print("\nPaste into a proxy config (hulumanage check --proxy-config FILE checks it):")
        print(snippet(started))
        print("\nServing until Ctrl-C or SIGTERM.", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for provider in started:
            await provider.close()
    return 0


def run_sim_providers(options: argparse.Namespace, pm: Any) -> Any:
    """The command's ``run``: an exit status, or an awaitable of one."""
    try:
        if options.config and options.providers:
            raise SpecError("give --providers or --config, not both")
        specs = from_file(options.config) if options.config else from_names(options.providers or "fast,slow,flaky")
    except SpecError as exc:
        print(f"hulumanage sim-providers: error: {exc}", file=sys.stderr)
        return 2
    return serve(specs, options.host, options.port, options.seed)
