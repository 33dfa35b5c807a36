"""The demo's report: the per-provider table, the client's numbers, what happened, what next.

Pure functions of plain data (the ``/health`` JSON, the client's results), so they are
tested without running anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = ("provider", "weight", "requests", "failures", "failovers", "p50 ms", "p95 ms", "last error")
#: Columns aligned left; the others are numbers, aligned right.
LEFT = frozenset({"provider", "last error"})

NEXT_STEPS = """\
Next: run the proxy on your own providers
  1. copy proxy_config.example.yaml (in the project's source) to ~/.hulumanage/proxy_config.yaml
     and list your providers there; keys come from the environment: api_key: ${OPENAI_API_KEY}
  2. hulumanage --approach proxy --proxy-config ~/.hulumanage/proxy_config.yaml
  3. point any OpenAI client at http://127.0.0.1:8000/v1; GET /health shows these numbers live"""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank, as the proxy's ``/health`` does."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _ms(value: Any) -> str:
    """Milliseconds for a table cell ("-" when there is no sample)."""
    return "-" if value is None else f"{float(value):.0f}"


def _number(value: Any) -> str:
    """A count or weight for a table cell, without a useless ``.0``."""
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def provider_rows(providers: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """Table rows from ``/health``'s ``proxy.providers``, in its order."""
    rows = []
    for name, p in providers.items():
        latency = p.get("latency_ms") or {}
        last = p.get("last_error_class")
        if last and p.get("last_error"):
            last = f"{last}: {p['last_error']}"
        rows.append({
            "provider": name,
            "weight": _number(p.get("weight")),
            "requests": _number(p.get("requests", 0)),
            "failures": _number(p.get("failures", 0)),
            "failovers": _number(p.get("failovers", 0)),
            "p50 ms": _ms(latency.get("p50")),
            "p95 ms": _ms(latency.get("p95")),
            "last error": last or "-",
        })
    return rows


def render_table(rows: Sequence[Mapping[str, str]], columns: Sequence[str] = COLUMNS) -> str:
    """A plain-text table: a header, a rule, one line per row; numbers right-aligned."""
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}

    def line(cells: Mapping[str, str]) -> str:
        parts = [str(cells.get(c, "")).ljust(widths[c]) if c in LEFT else str(cells.get(c, "")).rjust(widths[c])
                 for c in columns]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * widths[c] for c in columns)
    return "\n".join([line({c: c for c in columns}), rule, *(line(r) for r in rows)])


def client_summary(sent: int, succeeded: int, latencies: Sequence[float], seconds: float) -> str:
    """The client's line: success rate and latency percentiles."""
    rate = 100.0 * succeeded / sent if sent else 100.0
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    lat = f"latency p50 {_ms(p50 and p50 * 1000)} ms, p95 {_ms(p95 and p95 * 1000)} ms" if latencies else "no latency"
    return f"client: {succeeded}/{sent} succeeded ({rate:.1f}%), {lat}, {seconds:.1f} s in all"


def explain(
    providers: Mapping[str, Mapping[str, Any]],
    name: str,
    errors_503: int,
    hangs: int,
    client_failures: int,
    strategy: str,
    timeouts: Mapping[str, float],
) -> list[str]:
    """Two lines on what happened: provider ``name``'s failures, and how the proxy covered them.

    ``errors_503`` and ``hangs`` are what that provider did, as it recorded them itself.
    """
    failures = int(providers.get(name, {}).get("failures") or 0)
    if failures:
        how = []
        if errors_503:
            how.append(f"answered 503 to {errors_503} requests")
        if hangs:
            how.append(f"hung on {hangs}, cut after {timeouts['first_token']:g}-{timeouts['request']:g} s by the timeouts")
        detail = f" (it {' and '.join(how)})" if how else ""
        if client_failures:
            covered = f"the client still saw {client_failures} errors"
        else:
            covered = "every one of those requests was answered by another provider"
        first = f"{name} failed {failures} times{detail}; {covered}."
    else:
        first = "No provider failed this time (try another --seed)."
    weights = ", ".join(f"{other} {_number(q.get('weight'))}" for other, q in providers.items())
    moved = sum(int(q.get("failovers") or 0) for q in providers.values())
    outcome = f"but {client_failures} failed everywhere" if client_failures else "so no failure reached the client"
    second = (f"The {strategy} strategy picked a provider for each request by weight ({weights}); when one failed, "
              f"the proxy sent the request on to the next one ({moved} failovers), {outcome}.")
    return [first, second]


def walks(seen: Mapping[str, Sequence[tuple[float, int, str]]]) -> dict[int, list[tuple[str, str]]]:
    """Each client request's walk over the providers: index -> [(provider, behaviour)] in arrival order.

    ``seen`` is, per provider, what it recorded: (arrival time, demo request index, behaviour).
    """
    by_index: dict[int, list[tuple[float, str, str]]] = {}
    for name, records in seen.items():
        for at, index, behaviour in records:
            if index >= 0:
                by_index.setdefault(index, []).append((at, name, behaviour))
    return {i: [(name, b) for _, name, b in sorted(steps)] for i, steps in sorted(by_index.items())}


def traffic(walk: Mapping[int, Sequence[tuple[str, str]]], weights: Mapping[str, float], sent: int) -> list[str]:
    """Client requests and upstream attempts counted apart, and why each provider's share is what it is."""
    attempts = sum(len(steps) for steps in walk.values())
    first = {name: 0 for name in weights}
    answered = {name: 0 for name in weights}
    failed = {name: 0 for name in weights}
    for steps in walk.values():
        first[steps[0][0]] = first.get(steps[0][0], 0) + 1
        for name, behaviour in steps:
            if behaviour == "ok":
                answered[name] = answered.get(name, 0) + 1
            else:
                failed[name] = failed.get(name, 0) + 1
    total = sum(weights.values()) or 1.0
    head = (f"client requests: {sent}; upstream attempts: {attempts} "
            f"({len(walk)} first attempts + {attempts - len(walk)} after a failure)")
    lines = [head, "where the client requests went: first pick (by weight), then who answered them:"]
    width = max((len(n) for n in weights), default=0)
    for name, weight in weights.items():
        moved_in = answered[name] - (first[name] - failed[name])
        why = []
        if failed[name]:
            why.append(f"{failed[name]} failed here and moved on")
        if moved_in > 0:
            why.append(f"{moved_in} taken over from a provider that failed")
        because = f" ({'; '.join(why)})" if why else ""
        lines.append(f"  {name:<{width}}  first pick {first[name]:>4} (weight {_number(weight)}/{_number(total)} = "
                     f"{weight / total:.0%} expected), answered {answered[name]:>4}{because}")
    lines.append("(the same --seed gives these counts on every run; latencies and times vary)")
    return lines
