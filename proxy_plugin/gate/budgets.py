"""Budgets in USD (one global, one per client key) that never overshoot: reserve the worst case, settle the real cost.

Periods are UTC calendar ``day``, ``week`` (from Monday), ``month``, or ``total`` (never
resets), read from the runtime clock's ``wall()``: each period has its own counter in the
state store (``budget|<scope>|<period>``), so a new period starts at 0 and the old one's
spend stays on record. Before a request goes upstream it reserves its worst-case cost in
every budget that applies, all or none, in one synchronous step (no ``await`` between
the check and the reservation); at the end it settles to the real cost. A request whose
reservation does not fit is refused with a 429 ``budget_exceeded``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from proxy_plugin.config.schema import BudgetConfig
from proxy_plugin.errors import ProxyError
from proxy_plugin.state.base import StateStore

SEP = "\x1f"
PREFIX = "budget" + SEP

#: A budget that applies to a request: (scope, its config), e.g. ("global", ...) or ("key:team-a", ...)
Scope = tuple[str, BudgetConfig]


#: the last period computed for each kind: (start, end as Unix times, its id, its end): a request's
#: lookup is two comparisons until the period turns
_PERIODS: dict[str, tuple[float, float, str, dt.datetime | None]] = {}


def period_bounds(period: str, wall: float) -> tuple[str, dt.datetime | None]:
    """The period holding Unix time ``wall``: its id (``2024-05-01``, ``2024-W18``, ``2024-05``, ``total``) and its end."""
    known = _PERIODS.get(period)
    if known is not None and known[0] <= wall < known[1]:
        return known[2], known[3]
    ident, end = _period_bounds(period, wall)
    start = _period_start(period, wall)
    _PERIODS[period] = (start, end.timestamp() if end is not None else float("inf"), ident, end)
    return ident, end


def period_span(period: str, wall: float) -> tuple[float, float, str]:
    """The period holding ``wall`` as (start, end as Unix times, its id): what a caller may cache until ``end``."""
    period_bounds(period, wall)
    start, end, ident, _ = _PERIODS[period]
    return start, end, ident


def _period_start(period: str, wall: float) -> float:
    """When the period holding ``wall`` began (Unix time; ``total``: always)."""
    now = dt.datetime.fromtimestamp(wall, dt.UTC)
    day = dt.datetime(now.year, now.month, now.day, tzinfo=dt.UTC)
    if period == "day":
        return day.timestamp()
    if period == "week":
        return (day - dt.timedelta(days=now.weekday())).timestamp()
    if period == "month":
        return dt.datetime(now.year, now.month, 1, tzinfo=dt.UTC).timestamp()
    return float("-inf")


def _period_bounds(period: str, wall: float) -> tuple[str, dt.datetime | None]:
    now = dt.datetime.fromtimestamp(wall, dt.UTC)
    day = dt.datetime(now.year, now.month, now.day, tzinfo=dt.UTC)
    if period == "day":
        return day.strftime("%Y-%m-%d"), day + dt.timedelta(days=1)
    if period == "week":
        monday = day - dt.timedelta(days=now.weekday())
        return "W" + monday.strftime("%Y-%m-%d"), monday + dt.timedelta(days=7)
    if period == "month":
        end = dt.datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=dt.UTC)
        return now.strftime("%Y-%m"), end
    return "total", None


def iso(moment: dt.datetime | None) -> str | None:
    """ISO 8601 UTC (``2024-05-02T00:00:00Z``), or None."""
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


_COUNTERS: dict[tuple[str, str], str] = {}


def counter(scope: str, period_id: str) -> str:
    """The store counter of one budget period (made once per scope and period, then looked up)."""
    name = _COUNTERS.get((scope, period_id))
    if name is None:
        if len(_COUNTERS) >= 4096:  # scopes come from the config; periods turn: never many
            _COUNTERS.clear()
        name = _COUNTERS[(scope, period_id)] = f"{PREFIX}{scope}{SEP}{period_id}"
    return name


def _usd(value: float) -> str:
    return f"${value:.6f}".rstrip("0").rstrip(".") if value else "$0"


def reserve(store: StateStore, scopes: Sequence[Scope], usd: float, wall: float) -> list[tuple[str, float]]:
    """Reserve ``usd`` in every budget of ``scopes`` (all or none); the 429 when one does not fit.

    Returns what to settle: (counter, amount reserved) per budget.
    """
    claims = []
    ends = []
    for scope, budget in scopes:
        period_id, end = period_bounds(budget.period, wall)
        assert budget.usd is not None
        claims.append((counter(scope, period_id), usd, budget.usd))
        ends.append(end)
    refused = store.reserve(claims)
    if refused is None:
        return [(name, amount) for name, amount, _ in claims]
    name = claims[refused][0]
    raise budget_refusal(scopes[refused], ends[refused], store.get(name), store.reserved(name), usd, wall)


def claims_of(scopes: Sequence[Scope], wall: float) -> list[tuple[str, float, dt.datetime | None]]:
    """Per budget of ``scopes``: its current period's counter, its limit and the period's end."""
    out = []
    for _scope, budget in scopes:
        period_id, end = period_bounds(budget.period, wall)
        assert budget.usd is not None
        out.append((counter(_scope, period_id), budget.usd, end))
    return out


def budget_refusal(scope: Scope, end: dt.datetime | None, spent: float, held: float, usd: float, wall: float) -> ProxyError:
    """The 429 ``budget_exceeded`` of a budget that a request's worst case ``usd`` does not fit."""
    name, budget = scope
    assert budget.usd is not None
    when = f"resets at {iso(end)}" if end is not None else "never resets (period: total)"
    headers = {} if end is None else {"Retry-After": str(max(1, math.ceil(end.timestamp() - wall)))}
    return ProxyError(
        429,
        f"budget exceeded: the {name} budget ({budget.period}) has spent {_usd(spent)} of {_usd(budget.usd)}"
        f"{f' with {_usd(held)} reserved by requests in flight' if held else ''}; this request could cost "
        f"up to {_usd(usd)}; it {when}",
        "insufficient_quota", "budget_exceeded", headers, reason="budget",
    )


def settle_budgets(store: StateStore, held: Sequence[tuple[str, float]], usd: float) -> None:
    """End the reservations ``held``: each budget's period counter grows by the real cost ``usd``."""
    for name, amount in held:
        store.settle(name, amount, usd)


def snapshot(store: StateStore, scopes: Sequence[Scope], wall: float) -> list[dict[str, Any]]:
    """The ``budgets`` list of ``/admin/spend``: each budget's current period."""
    out = []
    for scope, budget in scopes:
        assert budget.usd is not None
        period_id, end = period_bounds(budget.period, wall)
        name = counter(scope, period_id)
        spent, held = store.get(name), store.reserved(name)
        out.append({
            "scope": scope, "period": budget.period, "limit_usd": budget.usd,
            "spent_usd": round(spent, 9), "reserved_usd": round(held, 9),
            "remaining_usd": round(max(0.0, budget.usd - spent - held), 9), "resets_at": iso(end),
        })
    return out
