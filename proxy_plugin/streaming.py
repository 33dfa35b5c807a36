"""The streamed exchange: relay SSE events as they arrive, fail over before the first byte,
and continue a broken stream on another provider after it.

:class:`Relay` is what the client has received so far and how to continue it
elsewhere; :class:`StreamedExchange` opens one attempt (up to its first relayable event) and
relays it, turning every failure into an :class:`~proxy_plugin.attempts.Outcome` for
the dispatch loop (:mod:`proxy_plugin.dispatch`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson

from proxy_plugin.attempts import MAX_ERROR_BODY, Attempts, Outcome
from proxy_plugin.classify import Failure
from proxy_plugin.dispatch import NEXT, RETRY
from proxy_plugin.errors import ProxyError, caller_error
from proxy_plugin.provider import Provider
from proxy_plugin.sse import DONE_EVENT, DONE_PAYLOAD, data_events, event
from proxy_plugin.upstream import Connection

if TYPE_CHECKING:
    from proxy_plugin.dispatch import Observer
    from proxy_plugin.pool import Pool

#: The outcome of an attempt whose stream is open (its first event in hand).
OPENED = Outcome(ok=True)

logger = logging.getLogger(__name__)


class StreamBrokenError(Exception):
    """The upstream stream ended or stalled before its answer was complete."""

    def __init__(self, detail: str, failure: Failure = Failure.TRANSIENT, connection_level: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.failure = failure
        self.connection_level = connection_level


class DivergedError(Exception):
    """A restarted answer does not extend what the client already has."""


class Relay:
    """What the client has received so far, and how to continue it elsewhere."""

    def __init__(self, body: dict[str, Any], want_usage: bool = False) -> None:
        options = body.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        # usage asked of the upstream for the gate, and its chunk kept from a client that did not ask
        self.hide_usage = want_usage and not asked
        if self.hide_usage:
            body = {**body, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}
        self.body = body
        self.usage: dict[str, Any] | None = None  # the usage the current attempt's stream reported
        self._text: list[str] = []  # content of choice 0 already sent to the client, in pieces
        self._restart = ""        # restart mode: the text the new answer must repeat first
        self.sent = False         # anything at all reached the client
        self.finished = False     # a finish_reason was relayed
        self.done = False         # [DONE] was relayed
        self.continuable = body.get("n", 1) in (1, None)
        self.skip = 0             # restart mode: characters of the new answer to drop
        self.continuing = False   # the current attempt continues an answer already started

    @property
    def text(self) -> str:
        """The content of choice 0 sent so far (joined when asked: appending stays linear)."""
        parts = self._text
        if len(parts) > 1:
            parts[:] = ["".join(parts)]
        return parts[0] if parts else ""

    def request_for(self, provider: Provider, mapped: str, prefill: bool) -> bytes:
        """The body to send: the original, or a continuation with the partial answer as prefill."""
        body = self.body if mapped == self.body["model"] else {**self.body, "model": mapped}
        self.skip = 0
        self.continuing = self.sent
        text = self.text
        if self.sent and text:
            if prefill:
                body = {**body, "messages": [*body["messages"], {"role": "assistant", "content": text}]}
            else:
                self.skip = len(text)
                self._restart = text
        return orjson.dumps(body)

    def accept(self, payload: bytes, prefilled: bool) -> bytes | None:
        """Check one upstream data payload; return the bytes to relay (None: drop it)."""
        if payload == DONE_PAYLOAD:
            self.done = True
            return DONE_EVENT
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            logger.warning("skipped a malformed SSE event from upstream (%d bytes)", len(payload))
            return None
        if not isinstance(chunk, dict):
            logger.warning("skipped an SSE event that is not a JSON object")
            return None
        if "error" in chunk:
            raise StreamBrokenError(f"error event mid-stream ({_code(chunk)})")
        choices = chunk.get("choices") or ()
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            if self.hide_usage and not choices:
                return None  # the usage chunk the gate asked for; this client did not
        rewritten = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or delta.get("function_call"):
                self.continuable = False
            if choice.get("index", 0) == 0:
                content = delta.get("content")
                if isinstance(content, str) and content:
                    if self.skip:
                        content = self._skip(content, delta)
                        rewritten = True
                    self._text.append(content)
                elif self.continuing and not choice.get("finish_reason") and len(choices) == 1:
                    return None  # the role-only opening chunk of a continuation
            if choice.get("finish_reason"):
                if self.skip:
                    raise DivergedError("the restarted answer ended before reaching what was already sent")
                self.finished = True
        if rewritten:
            if not any((c.get("delta") or {}).get("content") or c.get("finish_reason") for c in choices if isinstance(c, dict)):
                return None
            return event(orjson.dumps(chunk))
        return event(payload)

    def _skip(self, content: str, delta: dict[str, Any]) -> str:
        """Drop the part of a restarted answer the client already has; check it matches."""
        restart = self._restart
        already = restart[len(restart) - self.skip:]
        take = min(len(content), self.skip)
        if content[:take] != already[:take]:
            raise DivergedError("the restarted answer diverged from what was already sent")
        self.skip -= take
        rest = content[take:]
        delta["content"] = rest
        return rest


def _code(chunk: dict[str, Any]) -> str:
    error = chunk.get("error")
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or "error")
    return "error"




class StreamedExchange:
    """A streaming request: relayed event by event, a chat completion continued elsewhere if it breaks.

    ``path`` None is a chat completion; ``"/completions"`` a legacy completion (chunks with
    ``choices[].text``), which fails over before its first event like chat but is never
    continued after a break: the client gets an error event instead of a clean finish.
    """

    __slots__ = ("_conn", "_deadline", "_events", "_first", "_started", "broke", "broken", "model", "observer", "path",
                 "pool", "prefill", "prefilled", "relayed")

    def __init__(self, pool: Pool, body: dict[str, Any], observer: Observer | None = None,
                 path: str | None = None) -> None:
        self.pool = pool
        self.model: str = body["model"]
        self.observer = observer
        self.path = path
        self.relayed = Relay(body, observer is not None and observer.wants_usage)
        if path is not None:
            self.relayed.continuable = False  # continuation (prefill or restart) is a chat feature
        self.prefill = False      # the provider being tried takes a partial answer as prefill
        self.prefilled = False    # the current attempt sent one
        self.broke: Outcome | None = None   # how the last relayed stream ended (None: complete)
        self.broken: str | None = None      # why the first stream that reached the client broke
        self._conn: Connection | None = None
        self._events: AsyncGenerator[bytes, None] | None = None
        self._first = b""
        self._started = 0.0
        self._deadline = 0.0

    @property
    def body(self) -> dict[str, Any]:
        """The request as it goes upstream (usage asked for when the gate wants it)."""
        return self.relayed.body

    def start(self, provider: Provider) -> None:
        """Continue by prefill where the provider supports it."""
        self.prefill = provider.config.supports_prefill

    def may_try(self) -> bool:
        """No once the client has part of an answer that cannot be continued (several choices, tool calls)."""
        relayed = self.relayed
        return not relayed.sent or relayed.continuable

    async def attempt(self, provider: Provider, mapped: str, run: Attempts) -> Outcome:
        """Send the request and read up to the first relayable event: ``OPENED``, or the failure."""
        relayed = self.relayed
        relayed.usage = None
        prefill = self.prefill and relayed.sent
        payload = relayed.request_for(provider, mapped, prefill)
        prefilled = self.prefilled = prefill and bool(relayed.text)
        timeouts = provider.timeouts
        started = time.monotonic()
        attempt_deadline = started + timeouts.request
        left = run.remaining()
        if left is not None:
            attempt_deadline = min(attempt_deadline, started + left)
        first_limit = min(timeouts.first_token or timeouts.request, attempt_deadline - started)
        loop_time = asyncio.get_running_loop().time
        conn: Connection | None = None
        events: AsyncGenerator[bytes, None] | None = None
        try:
            try:
                # the first token's deadline bounds connecting, the headers and every read up to the first event
                endpoint = provider.endpoint if self.path is None else provider.endpoints[self.path]
                conn = await self.pool.client.send(endpoint, payload, timeouts.connect, loop_time() + first_limit)
                if conn.status != 200:
                    return Outcome.of_status(conn.status, await conn.read(MAX_ERROR_BODY), conn.headers,
                                             self.pool.redact)
                events = data_events(conn)
                first = None
                async for data in events:
                    first = relayed.accept(data, prefilled)
                    if first is not None:
                        break
            except DivergedError as exc:
                raise self._diverged(exc) from None
            except StreamBrokenError as exc:
                return Outcome(exc.failure, None, self.pool.redact.text(exc.detail))  # built from an upstream body
            except Exception as exc:  # transport failures are classified, others re-raised
                outcome = Outcome.of_exception(exc, timeout="no first token in time")
                if outcome is None:
                    raise
                left = run.remaining()
                if isinstance(exc, TimeoutError) and left is not None and left <= 0.005:
                    outcome = Outcome(None, None, "request deadline reached before the first token")
                return outcome
            if first is None:
                return Outcome(Failure.TRANSIENT, None, "stream ended before any event")
            self._conn, self._events, self._first = conn, events, first
            self._started, self._deadline = started, attempt_deadline
            conn = events = None  # the relay owns them now
            return OPENED
        finally:
            if events is not None:
                await events.aclose()  # here, not later from the garbage collector's finalizer
            if conn is not None:
                conn.close()

    async def relay(self, provider: Provider, mapped: str) -> AsyncGenerator[bytes, None]:
        """Relay the open stream to its end; ``broke`` says how it ended."""
        relayed = self.relayed
        conn, events = self._conn, self._events
        assert conn is not None and events is not None
        self._conn = self._events = None
        self.broke = None
        prefilled = self.prefilled
        attempt_deadline = self._deadline
        timeouts = provider.timeouts
        loop_time = asyncio.get_running_loop().time
        try:
            relayed.sent = True
            yield self._first
            idle = timeouts.idle or timeouts.request
            last_read = loop_time() + (attempt_deadline - time.monotonic())  # the attempt's deadline on the loop's clock
            try:
                while not relayed.done:
                    # the connection's own read deadline: a timer only when a read has to wait
                    conn.read_deadline = min(loop_time() + idle, last_read)
                    data = await anext(events, None)
                    if data is None:
                        break
                    part = relayed.accept(data, prefilled)
                    if part is not None:
                        yield part
            except StreamBrokenError as exc:
                self.broke = Outcome(exc.failure, None, self.pool.redact.text(exc.detail))  # built from an upstream body
                return
            except DivergedError as exc:
                raise self._diverged(exc) from None
            except Exception as exc:  # transport failures are classified, others re-raised
                outcome = Outcome.of_exception(exc, timeout="stream stalled (idle timeout)", whole_provider=False)
                if outcome is None:
                    raise
                outcome.timeout = False  # it did answer: the same provider may continue the stream
                if isinstance(exc, TimeoutError) and _deadline_passed(attempt_deadline):
                    # the request's own time ran out on a stream that was still flowing: not the provider's fault
                    outcome = Outcome(None, None, "request deadline reached mid-stream")
                self.broke = outcome
                return
            if not relayed.done:
                if not relayed.finished:
                    self.broke = Outcome(Failure.TRANSIENT, None, "stream cut before the answer finished")
                    return
                relayed.done = True
                yield DONE_EVENT
            provider.state.record_success(mapped, time.monotonic() - self._started)
            if self.observer is not None and relayed.usage is not None:
                self.observer.record(provider.name, mapped, relayed.usage)
        finally:
            await events.aclose()  # here, not later from the garbage collector's finalizer
            self.pool.client.release_streamed(conn) if relayed.done else conn.close()

    def refused(self, outcome: Outcome, provider: Provider) -> str:
        """A caller's error before anything was sent is the client's; after, try the provider without prefill."""
        if not self.relayed.sent:
            raise caller_error(provider.name, outcome.status or 400, outcome.body)[0]
        if self.prefilled:
            self.prefill = False  # the provider rejected the prefill: restart there instead
            logger.info("provider %s rejected a prefill continuation; restarting instead", provider.name)
            return RETRY
        return NEXT

    def failed(self, outcome: Outcome) -> None:
        """Remember why the stream the client is reading first broke."""
        if self.relayed.sent and self.broken is None:
            self.broken = outcome.detail

    def exhausted(self, run: Attempts) -> Exception:
        """The error for the client: the stream could not be finished, or nobody answered at all."""
        relayed = self.relayed
        if relayed.sent:
            if self.path is not None:
                why = f"a {self.path} stream is not continued elsewhere"
            elif not relayed.continuable:
                why = "this kind of answer (several choices or tool calls) cannot be continued elsewhere"
            else:
                why = "no other provider could continue it: " + run.summary()
            return ProxyError(502, f"the stream from the upstream broke ({self.broken}); {why}",
                              "upstream_error", "stream_interrupted")
        return run.exhausted()

    def close(self) -> None:
        """Close a stream that was opened but never relayed (the request was cancelled in between)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = self._events = None

    def _diverged(self, exc: DivergedError) -> ProxyError:
        return ProxyError(502, f"the stream from the upstream broke ({self.broken}) and could not be "
                               f"continued: {exc}", "upstream_error", "stream_interrupted")


def _deadline_passed(deadline: float) -> bool:
    """Whether a timeout that just fired was the attempt's deadline (not an idle gap)."""
    return time.monotonic() >= deadline - 0.005
