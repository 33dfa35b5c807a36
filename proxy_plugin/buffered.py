"""The buffered exchange: one POST, one whole JSON answer relayed as the upstream's bytes."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson

from proxy_plugin.attempts import Attempts, Outcome
from proxy_plugin.classify import Failure
from proxy_plugin.errors import caller_error
from proxy_plugin.provider import Provider
from proxy_plugin.upstream import Connection

if TYPE_CHECKING:
    from proxy_plugin.dispatch import Observer
    from proxy_plugin.pool import Pool

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclasses.dataclass(frozen=True, slots=True)
class RawResponse:
    """Upstream bytes for the host to relay untouched.

    A deliberate copy of the host's own (``hulumanage.call.RawResponse``): the host
    relays any object with ``status``, ``body`` and ``headers``, so the plugin needs no
    host import (docs/internals.md, "Copies across the boundary").
    """

    status: int
    body: bytes
    headers: dict[str, str]


#: What a 200 answer of each route must hold to be relayed: a list under this key (else a bad response).
SHAPES = {None: "choices", "/completions": "choices", "/embeddings": "data"}


class BufferedExchange:
    """A non-streaming request: the first provider's complete answer wins.

    ``path`` None is a chat completion (the provider's ``endpoint``); else one of
    :data:`~proxy_plugin.provider.ROUTES` (its ``endpoints[path]``). The answer's shape is
    checked per route (:data:`SHAPES`) and relayed as the upstream's bytes.
    """

    __slots__ = ("body", "model", "observer", "path", "pool", "shape")

    broke: Outcome | None = None  # a buffered answer has no stream to break

    def __init__(self, pool: Pool, body: dict[str, Any], observer: Observer | None = None,
                 path: str | None = None) -> None:
        self.pool = pool
        self.body = body
        self.model: str = body["model"]
        self.observer = observer
        self.path = path
        self.shape = SHAPES[path]

    def start(self, provider: Provider) -> None:
        """Nothing to prepare per provider."""

    def may_try(self) -> bool:
        """Every attempt starts from scratch."""
        return True

    async def attempt(self, provider: Provider, mapped: str, run: Attempts) -> Outcome:
        """One upstream POST: the answer, or the failure's outcome."""
        body = self.body
        payload = orjson.dumps(body if mapped == self.model else {**body, "model": mapped})
        client = self.pool.client
        timeouts = provider.timeouts
        limit = timeouts.request
        left = run.remaining()
        if left is not None:
            limit = min(limit, left)
        started = time.monotonic()
        conn: Connection | None = None
        try:
            deadline = asyncio.get_running_loop().time() + limit
            endpoint = provider.endpoint if self.path is None else provider.endpoints[self.path]
            conn = await client.send(endpoint, payload, timeouts.connect, deadline)
            answer = await conn.read()
            status = conn.status
            headers = conn.headers
        except Exception as exc:  # classified, re-raised when not a transport failure
            outcome = Outcome.of_exception(exc)
            if outcome is None:
                raise
            return outcome
        finally:
            if conn is not None:
                client.release(conn)
        if status == 200:
            completion = _shaped(answer, self.shape)
            if completion is not None:
                provider.state.record_success(mapped, time.monotonic() - started)
                usage = completion.get("usage")
                if self.observer is not None and isinstance(usage, dict):
                    self.observer.record(provider.name, mapped, usage)
                return Outcome(ok=True, answer=RawResponse(200, answer, JSON_HEADERS))
            return Outcome(Failure.BAD_RESPONSE, 200, f"200 with a body that is not JSON with {self.shape!r}")
        return Outcome.of_status(status, answer, headers, self.pool.redact)

    def relay(self, provider: Provider, mapped: str) -> AsyncGenerator[Any, None]:
        """Never called: a buffered attempt returns its whole answer."""
        raise NotImplementedError

    def refused(self, outcome: Outcome, provider: Provider) -> RawResponse:
        """The provider's own error for a request that is the caller's fault (OpenAI-shaped: as it sent it)."""
        status = outcome.status or 400
        _error, body = caller_error(provider.name, status, outcome.body)
        return RawResponse(status, body, JSON_HEADERS)

    def failed(self, outcome: Outcome) -> None:
        """Nothing to remember: the next attempt starts from scratch."""

    def exhausted(self, run: Attempts) -> Exception:
        """The error naming what each provider did."""
        return run.exhausted()

    def close(self) -> None:
        """Every connection is released as its attempt ends."""


def _shaped(body: bytes, shape: str) -> dict[str, Any] | None:
    """A 200 body as a JSON object with a list under ``shape``, else None (checked, then relayed as the same bytes)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get(shape), list) else None
