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

from hulumanage.call import Call

if TYPE_CHECKING:
    import openai

logger = logging.getLogger(__name__)


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
) -> LazyClient:
    """A client whose calls run ``chain[0]`` (with deeper layers below it), or ``base`` when empty."""
    slug, rest = (chain[0], chain[1:]) if chain else (base, ())

    def make_call(body: dict[str, Any]) -> tuple[Any, Call]:
        approach = approaches[slug]
        call = Call(
            request=body,
            extra=extra,
            stream=body.get("stream") is True,
            client=layer_client(
                rest, approaches=approaches, base=base, app=app, extra=extra, api_key=api_key, full_chain=full_chain
            ),
            app=app,
            approaches=approaches,
            api_key=api_key,
            chain=full_chain,
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
