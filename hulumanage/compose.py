"""Composition: an ``openai.AsyncOpenAI`` whose calls run an approach in-process.

``a&b-model`` runs ``a`` with a client whose ``chat.completions.create`` runs
``b``. The client is a real SDK client on an httpx transport that calls the
next layer's approach directly, so an approach cannot tell it apart from a
client of a remote server, streaming and errors included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hulumanage.appkeys import ALLOWED
from hulumanage.call import Call
from hulumanage.errors import ApiError

if TYPE_CHECKING:
    import openai

logger = logging.getLogger(__name__)


def fanout_error(limit: int, detail: str) -> ApiError:
    """The 400 of a request over ``--max-fanout`` (the same before the run and during it)."""
    return ApiError(
        400,
        f"{detail}; this server allows at most {limit} upstream calls per request (--max-fanout); "
        f"ask for fewer samples (n, bon_n, moa_proposals) or fewer layers",
        code="fanout_exceeded",
    )


def declared_fanout(chain: tuple[str, ...], approaches: Mapping[str, Any], call: Call) -> tuple[int, str]:
    """The worst number of upstream calls the layers of ``chain`` declare for ``call``, and how.

    Each layer's calls run the next one, so the declared counts multiply. A layer without
    the optional ``fanout(call) -> int`` counts as 1 here; the runtime count (``Fanout``)
    bounds it.
    """
    total, parts = 1, []
    for slug in chain:
        declare = getattr(approaches[slug], "fanout", None)
        if declare is not None:
            count = int(declare(call))
            total *= max(count, 1)
            parts.append(f"{slug}: {count}")
    return total, ", ".join(parts)


class Fanout:
    """The upstream calls one client request has caused through composed layers, capped.

    Counted where a layer's client runs a terminal approach (one that calls upstream):
    past ``limit`` the call is refused with the same 400 as the declared check.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> None:
        """Count one upstream call; a 400 past the limit."""
        self.used += 1
        if self.used > self.limit:
            raise fanout_error(self.limit, f"this request tried to make more than {self.limit} upstream calls")


class LazyClient:
    """Stands for an ``openai.AsyncOpenAI``; builds it on first use.

    The direct proxy path never touches its client, so it never pays for one.
    """

    __slots__ = ("_client", "_factory")

    def __init__(self, factory: Callable[[], openai.AsyncOpenAI]) -> None:
        self._factory = factory
        self._client: openai.AsyncOpenAI | None = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._factory()
        return getattr(self._client, name)


def layer_client(
    chain: tuple[str, ...],
    *,
    approaches: Mapping[str, Any],
    base: str,
    app: Any,
    extra: dict[str, Any],
    api_key: str | None,
    full_chain: tuple[str, ...],
    fanout: Fanout,
    ticket: Any = None,
) -> LazyClient:
    """A client whose calls run ``chain[0]`` (with deeper layers below it), or ``base`` when empty.

    Every call that runs a terminal approach counts against ``fanout`` (one per client request).
    """
    slug, rest = (chain[0], chain[1:]) if chain else (base, ())

    def make_call(body: dict[str, Any]) -> tuple[Any, Call]:
        approach = approaches[slug]
        if getattr(approach, "terminal", False):
            fanout.take()
        call = Call(
            request=body,
            extra=extra,
            stream=body.get("stream") is True,
            client=layer_client(
                rest, approaches=approaches, base=base, app=app, extra=extra, api_key=api_key, full_chain=full_chain,
                fanout=fanout, ticket=ticket,
            ),
            app=app,
            approaches=approaches,
            api_key=api_key,
            chain=full_chain,
            allowed=app.get(ALLOWED) if app is not None else None,
            fanout=fanout,
            ticket=ticket,
        )
        return approach, call

    def factory() -> openai.AsyncOpenAI:
        import httpx2
        import openai

        from hulumanage.transport import ApproachTransport

        return openai.AsyncOpenAI(
            api_key=api_key or "unused",
            base_url=f"http://layer.{slug}.invalid/v1",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=ApproachTransport(make_call)),
        )

    return LazyClient(factory)
