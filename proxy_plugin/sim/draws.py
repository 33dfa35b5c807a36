"""Every request's fate at every provider, drawn from the seed before any routing.

For request ``i``: its arrival (a Poisson process at :data:`~.scenarios.RATE`), its tokens, and
for each provider and each attempt there (up to ``ATTEMPTS``) whether it succeeds and how long
it takes, from the provider's condition at the request's arrival. The draws depend only on
the seed, the scenario and the number of requests, so every strategy and the oracle face the
same world.
"""

from __future__ import annotations

import dataclasses
import math
import random
import zlib

from proxy_plugin.sim.scenarios import FAIL_LATENCY, RATE, REQUEST_TIMEOUT, WORST_TOKENS, Scenario

ATTEMPTS = 2


@dataclasses.dataclass(slots=True)
class Attempt:
    """One pre-drawn attempt: success, seconds, failure kind and Retry-After."""

    ok: bool
    seconds: float
    kind: str = ""
    retry_after: float = 0.0


@dataclasses.dataclass(slots=True)
class Request:
    """One pre-drawn request."""

    arrival: float
    tokens: tuple[float, float]
    attempts: list[list[Attempt]]  # [provider][attempt]


def draw(scenario: Scenario, requests: int, seed: int) -> list[Request]:
    """The draws for ``requests`` requests of ``scenario`` (seeded by the seed and the scenario's name)."""
    rng = random.Random(seed * 1_000_003 + zlib.crc32(scenario.name.encode()))
    out = []
    t = 0.0
    for _ in range(requests):
        t += rng.expovariate(RATE)
        tokens = (min(WORST_TOKENS[0], 1000.0 * math.exp(0.5 * rng.gauss(0, 1) - 0.125)),
                  min(WORST_TOKENS[1], 300.0 * math.exp(0.5 * rng.gauss(0, 1) - 0.125)))
        per_provider = []
        for spec in scenario.providers:
            cond = spec.condition(t)
            tries = []
            for _ in range(ATTEMPTS):
                u, z = rng.random(), rng.gauss(0, 1)
                if u < cond.fail:
                    seconds = REQUEST_TIMEOUT if cond.kind == "timeout" else FAIL_LATENCY * math.exp(0.3 * z)
                    tries.append(Attempt(False, seconds, cond.kind, cond.retry_after))
                else:
                    tries.append(Attempt(True, min(REQUEST_TIMEOUT, spec.median * cond.slow * math.exp(spec.sigma * z))))
            per_provider.append(tries)
        out.append(Request(t, tokens, per_provider))
    return out
