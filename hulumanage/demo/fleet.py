"""The demo's simulated providers and the proxy configuration that points at them."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hulumanage.sim import FAST_CHEAP, FLAKY, SLOW_RELIABLE, FakeProvider, Profile, start_fleet

#: The model name the demo's client asks for; each provider maps it to its own model.
ALIAS = "gpt-4o-mini"

#: The demo's timeouts (seconds): short, so a hanging provider is cut quickly.
TIMEOUTS = {"connect": 1.0, "request": 2.0, "first_token": 1.0, "idle": 1.0}
#: Seconds between health checks.
HEALTH_INTERVAL = 1.0
STRATEGY = "weighted"

_HEADER = """\
# Written by `hulumanage demo` for three simulated providers on 127.0.0.1.
# Your own file has the same shape: see proxy_config.example.yaml for every option.
# retries.attempts_per_provider is 1 here so that every failure fails over at once.
"""


@dataclasses.dataclass(frozen=True, slots=True)
class DemoProvider:
    """One simulated provider of the demo: its name, behaviour, routing weight and model."""

    name: str
    profile: Profile
    weight: float
    model: str
    blurb: str


PROVIDERS: tuple[DemoProvider, ...] = (
    DemoProvider("fast-cheap", FAST_CHEAP, 3, "llama-3.1-8b-instant", "20-60 ms, never fails"),
    DemoProvider("slow-reliable", SLOW_RELIABLE, 1, "gpt-4o-mini-2024-07-18", "150-350 ms, never fails"),
    DemoProvider("flaky", FLAKY, 2, "mini-preview", "30-100 ms, 25% 503s, 5% hangs"),
)


def make_providers(seed: int, specs: Sequence[DemoProvider] = PROVIDERS) -> list[FakeProvider]:
    """One FakeProvider per spec, each with a fresh random key; spec ``i`` draws its behaviour seeded ``seed + i``."""
    return [
        FakeProvider(
            spec.name,
            api_key=f"sk-demo-{secrets.token_hex(12)}",
            models=(spec.model,),
            profile=spec.profile,
            seed=seed + i,
        )
        for i, spec in enumerate(specs)
    ]


async def start_providers(seed: int, specs: Sequence[DemoProvider] = PROVIDERS) -> list[FakeProvider]:
    """Start the demo's providers on free ports of 127.0.0.1."""
    return await start_fleet(make_providers(seed, specs))


def proxy_config(providers: Sequence[FakeProvider], log_level: str = "WARNING",
                 specs: Sequence[DemoProvider] = PROVIDERS) -> dict[str, Any]:
    """The proxy configuration (as parsed YAML) for the started ``providers``."""
    by_name = {s.name: s for s in specs}
    return {
        "providers": [
            {
                "name": p.name,
                "base_url": p.base_url,
                "api_key": p.api_key,
                "weight": by_name[p.name].weight,
                "model_map": {ALIAS: by_name[p.name].model},
            }
            for p in providers
        ],
        "routing": {
            "strategy": STRATEGY,
            "health_check": {"enabled": True, "interval": HEALTH_INTERVAL, "timeout": 1.0},
        },
        "timeouts": dict(TIMEOUTS),
        "retries": {"attempts_per_provider": 1},
        # flaky's failures (30%) never open its circuit: an open circuit would move traffic by timing, and
        # `--seed N` keeps the demo's numbers the same on every run
        "circuit_breaker": {"consecutive_failures": 10, "failure_rate": 0.9, "open_base": 1.0, "open_max": 5.0},
        "queue": {"max_concurrent": 64, "timeout": 5.0},
        "monitoring": {"log_level": log_level},
    }


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as ``proxy_config.yaml`` in ``directory`` (readable by the owner only)."""
    path = directory / "proxy_config.yaml"
    path.touch(mode=0o600)
    path.write_text(_HEADER + yaml.safe_dump(config, sort_keys=False))
    return path
