"""Streaming dispatch: relay SSE events as they arrive, fail over before the first byte,
and continue a broken stream on another provider after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from proxy_plugin.attempts import MAX_ERROR_BODY, Attempts, Outcome
from proxy_plugin.classify import Failure
from proxy_plugin.errors import ProxyError
from proxy_plugin.pool import Pool
from proxy_plugin.provider import Provider
from proxy_plugin.sse import DONE_EVENT, DONE_PAYLOAD, data_events, event
from proxy_plugin.upstream import Connection

logger = logging.getLogger(__name__)


class StreamBroken(Exception):
    """The upstream stream ended or stalled before its answer was complete."""

    def __init__(self, detail: str, failure: Failure = Failure.TRANSIENT, connection_level: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.failure = failure
        self.connection_level = connection_level


class Diverged(Exception):
    """A restarted answer does not extend what the client already has."""


class Relay:
    """What the client has received so far, and how to continue it elsewhere."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self._text: list[str] = []  # content of choice 0 already sent to the client, in pieces
        self._restart = ""        # restart mode: the text the new answer must repeat first
        self.sent = False         # anything at all reached the client
        self.finished = False     # a finish_reason was relayed
        self.done = False         # [DONE] was relayed
        self.continuable = body.get("n", 1) in (1, None)
        self.skip = 0             # restart mode: characters of the new answer to drop
        self.broken: str | None = None   # why the first stream broke
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
            raise StreamBroken(f"error event mid-stream ({_code(chunk)})")
        choices = chunk.get("choices") or ()
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
                    raise Diverged("the restarted answer ended before reaching what was already sent")
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
            raise Diverged("the restarted answer diverged from what was already sent")
        self.skip -= take
        rest = content[take:]
        delta["content"] = rest
        return rest


def _code(chunk: dict[str, Any]) -> str:
    error = chunk.get("error")
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or "error")
    return "error"


async def stream(pool: Pool, body: dict[str, Any]) -> AsyncIterator[bytes]:
    """Relay one streaming request through the pool (an async generator of SSE bytes)."""
    model = body["model"]
    async with pool.admission():
        run = pool.attempts(model)
        relay = Relay(body)
        async with contextlib.aclosing(run.candidates()) as candidates:
            async for provider, mapped in candidates:
                prefill = provider.config.supports_prefill
                for attempt in range(pool.config.retries.attempts_per_provider):
                    if relay.sent and not relay.continuable:
                        break
                    payload = relay.request_for(provider, mapped, prefill and relay.sent)
                    prefilled = prefill and relay.sent and bool(relay.text)
                    try:
                        async for part in _attempt(pool, provider, mapped, payload, run, relay, prefilled):
                            yield part
                    except _Failed as failed:
                        outcome = failed.outcome
                        if outcome.failure is Failure.CALLER:
                            if not relay.sent:
                                raise ProxyError(outcome.status or 400, f"the provider rejected the request ({outcome.detail})",
                                                 "invalid_request_error", body=_json(outcome.body)) from None
                            if prefilled:
                                prefill = False  # the provider rejected the prefill: restart there instead
                                logger.info("provider %s rejected a prefill continuation; restarting instead", provider.name)
                                continue
                            break
                        run.record(provider, mapped, outcome)
                        if relay.sent and relay.broken is None:
                            relay.broken = outcome.detail
                        if not await run.retry_same(outcome, attempt, provider, mapped):
                            break
                        continue
                    except Diverged as exc:
                        raise ProxyError(502, f"the stream from the upstream broke ({relay.broken}) and could not be "
                                              f"continued: {exc}", "upstream_error", "stream_interrupted") from None
                    return
        if relay.sent:
            if not relay.continuable:
                why = "this kind of answer (several choices or tool calls) cannot be continued elsewhere"
            else:
                why = "no other provider could continue it: " + "; ".join(f"{n}: {w}" for n, w in run.errors)
            raise ProxyError(502, f"the stream from the upstream broke ({relay.broken}); {why}",
                             "upstream_error", "stream_interrupted")
        raise run.exhausted()


def _deadline_passed(deadline: float) -> bool:
    """Whether a timeout that just fired was the attempt's deadline (not an idle gap)."""
    return time.monotonic() >= deadline - 0.005


class _Failed(Exception):
    """An attempt failed; carries its outcome to the dispatch loop."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


async def _attempt(
    pool: Pool, provider: Provider, mapped: str, payload: bytes, run: Attempts, relay: Relay, prefilled: bool,
) -> AsyncIterator[bytes]:
    """One streaming attempt: yields relayed bytes; raises _Failed when it goes wrong."""
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
            conn = await pool.client.send(provider.endpoint, payload, timeouts.connect, loop_time() + first_limit)
            if conn.status != 200:
                body = await conn.read(MAX_ERROR_BODY)
                raise _Failed(Outcome.of_status(conn.status, body, conn.headers))
            events = data_events(conn)
            first = None
            async for data in events:
                first = relay.accept(data, prefilled)
                if first is not None:
                    break
        except (_Failed, Diverged):
            raise
        except StreamBroken as exc:
            raise _Failed(Outcome(exc.failure, None, exc.detail)) from None
        except Exception as exc:  # transport failures are classified, others re-raised
            outcome = Outcome.of_exception(exc, timeout="no first token in time")
            if outcome is None:
                raise
            left = run.remaining()
            if isinstance(exc, TimeoutError) and left is not None and left <= 0.005:
                outcome = Outcome(None, None, "request deadline reached before the first token")
            raise _Failed(outcome) from None
        if first is None:
            raise _Failed(Outcome(Failure.TRANSIENT, None, "stream ended before any event"))
        relay.sent = True
        yield first
        idle = timeouts.idle or timeouts.request
        last_read = loop_time() + (attempt_deadline - time.monotonic())  # the attempt's deadline on the loop's clock
        assert conn is not None
        try:
            while not relay.done:
                # the connection's own read deadline: a timer only when a read has to wait
                conn.read_deadline = min(loop_time() + idle, last_read)
                data = await anext(events, None)
                if data is None:
                    break
                part = relay.accept(data, prefilled)
                if part is not None:
                    yield part
        except StreamBroken as exc:
            raise _Failed(Outcome(exc.failure, None, exc.detail)) from None
        except Diverged:
            raise
        except Exception as exc:  # transport failures are classified, others re-raised
            outcome = Outcome.of_exception(exc, timeout="stream stalled (idle timeout)", whole_provider=False)
            if outcome is None:
                raise
            if isinstance(exc, TimeoutError) and _deadline_passed(attempt_deadline):
                # the request's own time ran out on a stream that was still flowing: not the provider's fault
                outcome = Outcome(None, None, "request deadline reached mid-stream")
            raise _Failed(outcome) from None
        if not relay.done:
            if not relay.finished:
                raise _Failed(Outcome(Failure.TRANSIENT, None, "stream cut before the answer finished"))
            relay.done = True
            yield DONE_EVENT
        provider.record_success(mapped, time.monotonic() - started)
    finally:
        if events is not None:
            await events.aclose()  # here, not later from the garbage collector's finalizer
        if conn is not None:
            pool.client.release_streamed(conn) if relay.done else conn.close()
