"""The request object handed to an approach, and the raw-response result type."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Approach(Protocol):
    """What a plugin registers: a named strategy that answers one chat request."""

    slug: str
    description: str
    params: Mapping[str, str]
    terminal: bool

    async def run(self, call: Call) -> Any:
        """Answer ``call``: a completion, a RawResponse, or an async iterator of chunks."""


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One request as an approach sees it (see docs/internals.md)."""

    request: dict[str, Any]
    extra: dict[str, Any]
    stream: bool
    client: Any
    app: Any
    approaches: Mapping[str, Any]
    api_key: str | None = None
    chain: tuple[str, ...] = ()
    allowed: frozenset[str] | None = None   # approaches the client may select (None: any)
    fanout: Any = None                      # the request's upstream-call counter: ``take()`` per call, 400 past the cap
    ticket: Any = None                      # the request gate's ticket: ``record(provider, model, usage)`` per upstream answer

    def replace(self, **changes: Any) -> Call:
        """Return a copy of this call with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True, slots=True)
class RawResponse:
    """A complete upstream response whose bytes the host relays untouched."""

    status: int
    body: bytes
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
