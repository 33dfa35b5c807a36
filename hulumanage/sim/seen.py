"""What a simulated provider records about each request it receives."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

__all__ = ["Headers", "Seen"]


class Headers(dict[str, str]):
    """A plain ``dict`` of request headers whose keys are lower-case; lookups ignore case."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        """Store ``items`` under lower-case keys (a repeated header keeps its last value)."""
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        """Look ``key`` up case-insensitively."""
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is present, ignoring case."""
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        """Like ``dict.get``, ignoring case."""
        return super().get(key.lower(), default)


@dataclasses.dataclass(frozen=True, slots=True)
class Seen:
    """One request as the provider received it.

    ``behaviour`` is the chat behaviour's name (``"ok"``, ``"hang"``, ...), or for
    requests that got no behaviour: ``"models"`` (GET /v1/models), ``"down"``,
    ``"unauthorized"``, ``"bad_request"`` or ``"not_found"``.
    """

    path: str
    method: str
    headers: Headers
    json: Any
    time: float
    behaviour: str
