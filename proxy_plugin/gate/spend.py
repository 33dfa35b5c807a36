"""Spend: answered requests, tokens and USD by client (key id or ``anonymous``), provider and provider model.

Counters in the state store (``spend|<keys|providers|models>|<name>|<field>``), so they
count since the counters began, restarts included (with a durable backend). ``requests``
counts answered client requests under ``keys``, and upstream answers under ``providers``
and ``models`` (a composed request that called upstream three times is one request of
its key and three of the providers). Refused, failed and cache-hit requests are not spend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from proxy_plugin.state.base import StateStore

SEP = "\x1f"
PREFIX = "spend" + SEP
FIELDS = ("requests", "prompt_tokens", "completion_tokens", "usd")
KINDS = ("keys", "providers", "models")

#: One upstream answer of a request: (provider, provider model, prompt tokens, completion tokens, usd)
Part = tuple[str, str, int, int, float]


_NAMES: dict[tuple[str, str], tuple[str, str, str, str]] = {}
_NAMES_KEPT = 4096  # (kind, name) pairs whose counter names are kept made (model names come from clients)


def _counter_names(kind: str, name: str) -> tuple[str, str, str, str]:
    """The four counter names of ``name`` under ``kind`` (made once, then looked up)."""
    names = _NAMES.get((kind, name))
    if names is None:
        if len(_NAMES) >= _NAMES_KEPT:
            _NAMES.clear()
        base = f"{PREFIX}{kind}{SEP}{name}{SEP}"
        names = _NAMES[(kind, name)] = (base + "requests", base + "prompt_tokens", base + "completion_tokens",
                                        base + "usd")
    return names


def record(store: StateStore, client: str, parts: Sequence[Part]) -> None:
    """One answered request of ``client`` and the upstream answers it took."""
    if len(parts) == 1:  # the usual request: one upstream answer
        provider, model, prompt, completion, usd = parts[0]
        p, m, k = (_counter_names("providers", provider), _counter_names("models", model),
                   _counter_names("keys", client))
        store.add_many(((p[0], 1), (p[1], prompt), (p[2], completion), (p[3], usd),
                        (m[0], 1), (m[1], prompt), (m[2], completion), (m[3], usd),
                        (k[0], 1), (k[1], prompt), (k[2], completion), (k[3], usd)))
        return
    prompt_sum = completion_sum = 0
    usd_sum = 0.0
    amounts: list[tuple[str, float]] = []
    for provider, model, prompt, completion, usd in parts:
        for names in (_counter_names("providers", provider), _counter_names("models", model)):
            amounts += ((names[0], 1), (names[1], prompt), (names[2], completion), (names[3], usd))
        prompt_sum, completion_sum, usd_sum = prompt_sum + prompt, completion_sum + completion, usd_sum + usd
    names = _counter_names("keys", client)
    amounts += ((names[0], 1), (names[1], prompt_sum), (names[2], completion_sum), (names[3], usd_sum))
    store.add_many(amounts)


def snapshot(store: StateStore) -> dict[str, dict[str, dict[str, Any]]]:
    """``keys``, ``providers`` and ``models``, each name with all four fields."""
    out: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
    for name, value in store.counters(PREFIX).items():
        head, _, field = name.rpartition(SEP)
        _, kind, who = head.split(SEP, 2)
        if kind not in out or field not in FIELDS:
            continue
        entry = out[kind].setdefault(who, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0})
        entry[field] = round(value, 9) if field == "usd" else round(value)
    for kind in KINDS:
        out[kind] = dict(sorted(out[kind].items()))
    return out
