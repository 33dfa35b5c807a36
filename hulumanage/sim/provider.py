"""A simulated OpenAI-compatible provider: a real aiohttp server on 127.0.0.1.

Chat requests get a :class:`~hulumanage.sim.behaviour.Behaviour`: the next one queued
with :meth:`FakeProvider.script`, else one drawn from the provider's profile, else the
default (``ok()`` unless changed with :meth:`FakeProvider.set_default`).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from hulumanage.sim import legacy, payload, shapes
from hulumanage.sim.behaviour import Behaviour, Profile, ok
from hulumanage.sim.respond import Gate, check_request, error_response, respond
from hulumanage.sim.seen import Headers, Seen

__all__ = ["DEFAULT_ANSWER", "FakeProvider", "start_fleet"]

DEFAULT_ANSWER = "The quick brown fox jumps over the lazy dog."
#: The largest request body served (aiohttp's ``client_max_size``), as the proxy's own limit.
MAX_BODY = 64 * 1024 * 1024
#: How long ``close()`` lets the server wind down handlers it could not wake.
_SHUTDOWN_TIMEOUT = 0.5


class FakeProvider:
    """A scriptable OpenAI-compatible server for tests, the demo and benchmarks.

    Serves ``POST /v1/chat/completions`` (plain and SSE streaming, ``n``,
    ``stream_options.include_usage``, assistant prefill, a tool call when ``tools`` are given, JSON
    content for ``response_format``; bodies up to 64 MB), ``GET /v1/models``, and ``POST /v1/embeddings``
    and ``/v1/completions`` (:mod:`hulumanage.sim.legacy`, which play the same behaviours).
    Every response carries ``x-fake-provider: <name>`` and every completion or chunk
    ``"system_fingerprint": "fake-<name>"``. Use as ``async with FakeProvider(...) as p``
    or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        api_key: str | None = None,
        models: Sequence[str] = ("gpt-4", "gpt-4o-mini"),
        answer: str = DEFAULT_ANSWER,
        profile: Profile | None = None,
        seed: int | None = None,
    ) -> None:
        """Configure the provider; nothing listens until :meth:`start`.

        ``api_key``: if set, requests must send ``Authorization: Bearer <api_key>``.
        ``profile``: draw each chat request's behaviour from it (``seed`` seeds the draw).
        """
        self.name = name
        self.api_key = api_key
        self.models = tuple(models)
        self.answer = answer
        self.profile = profile
        self.requests: list[Seen] = []
        #: called with each request as it is recorded (after its behaviour was chosen); the demo paces by it
        self.on_request: Callable[[Seen], None] | None = None
        self._rng = random.Random(seed)
        self._script: collections.deque[Behaviour] = collections.deque()
        self._default = ok()
        self._models_status = 200
        self._down_until: float | None = None
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"
        self._gate = Gate()
        self._arrived = asyncio.Condition()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> Self:
        """Listen on ``host:port`` (0: a free port) and return ``self``."""
        if self._runner is not None or self._gate.closed:
            raise RuntimeError(f"provider {self.name!r} was already started")
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        for route in ("embeddings", "completions"):  # hulumanage/sim/legacy.py
            app.router.add_post(f"/v1/{route}", functools.partial(legacy.handle, self, route))
        app.router.add_route("*", "/{tail:.*}", self._handle_other)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        self._host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return self

    async def close(self) -> None:
        """Stop serving: wake every waiting handler, drop open connections, free the port.

        Idempotent; returns promptly even with hung or stalled requests open.
        """
        if self._gate.closed:
            return
        await self._gate.close(_SHUTDOWN_TIMEOUT)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        """Start on a free port."""
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close."""
        await self.close()

    @property
    def port(self) -> int:
        """The TCP port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError(f"provider {self.name!r} is not started")
        return self._port

    @property
    def url(self) -> str:
        """The server root, ``http://127.0.0.1:PORT`` (the listening host)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    # -- control -----------------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours: the next chat requests get them in order, then the default."""
        self._script.extend(behaviours)

    def set_default(self, behaviour: Behaviour) -> None:
        """Answer chat requests with ``behaviour`` once the script is used up.

        Clears the profile. ``down(s)`` is special: it starts an outage now
        (:meth:`down_for`) and leaves the default and profile as they are.
        """
        if behaviour.name == "down":
            self.down_for(behaviour.seconds or 0.0)
            return
        self._default = behaviour
        self.profile = None

    def set_profile(self, profile: Profile | None) -> None:
        """Draw unscripted behaviours from ``profile`` (None: use the default again)."""
        self.profile = profile

    def set_models_status(self, status: int) -> None:
        """Make ``GET /v1/models`` answer ``status`` (200: the model list; else an error)."""
        self._models_status = status

    def down_for(self, seconds: float) -> None:
        """Answer 503 to every request (chat and /models) for ``seconds`` from now.

        Requests during the outage are recorded but do not use up the script.
        """
        self._down_until = time.monotonic() + seconds

    @property
    def is_down(self) -> bool:
        """Whether an outage is in progress."""
        return self._down_until is not None and time.monotonic() < self._down_until

    def release_hangs(self) -> None:
        """Wake every request hanging or stalled right now: they go on to a normal answer."""
        self._gate.release()

    def chat_requests(self) -> list[Seen]:
        """The ``POST /v1/chat/completions`` requests received, in order."""
        return [s for s in self.requests if s.path == "/v1/chat/completions" and s.method == "POST"]

    async def wait_for_requests(self, n: int, timeout: float = 5.0, *, chat_only: bool = False) -> None:
        """Wait until ``n`` requests (only chat ones if ``chat_only``) have arrived.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """

        def enough() -> bool:
            count = len(self.chat_requests()) if chat_only else len(self.requests)
            return count >= n

        try:
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(enough)
        except TimeoutError:
            got = len(self.chat_requests()) if chat_only else len(self.requests)
            raise TimeoutError(f"provider {self.name!r}: expected {n} requests within {timeout} s, got {got}") from None

    # -- handlers ----------------------------------------------------------------

    async def _record(self, request: web.BaseRequest, arrival: float, body: Any, behaviour: str) -> None:
        """Append a :class:`Seen` and wake :meth:`wait_for_requests`."""
        seen = Seen(request.path, request.method, Headers(request.headers.items()), body, arrival, behaviour)
        self.requests.append(seen)
        if self.on_request is not None:
            self.on_request(seen)
        async with self._arrived:
            self._arrived.notify_all()

    def _headers(self, extra: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
        """Response headers: the provider tag plus ``extra``."""
        headers = {"x-fake-provider": self.name}
        headers.update(extra)
        return headers

    def _error(
        self,
        status: int,
        message: str | None = None,
        type: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        """An OpenAI-shaped JSON error response tagged with the provider name."""
        return error_response(status, message, type, code, self._headers())

    def _unavailable(self) -> web.Response:
        """The 503 of an outage."""
        return self._error(503, "The provider is down (simulated outage).", "server_error", "service_unavailable")

    def _authorized(self, request: web.BaseRequest) -> bool:
        """Whether the request carries the right bearer token (always, without an api_key)."""
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _unauthorized(self) -> web.Response:
        """The 401 OpenAI sends for a wrong key."""
        return self._error(401, "Incorrect API key provided (simulated).", "invalid_request_error", "invalid_api_key")

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models``: the model list, or the status set by set_models_status."""
        arrival = time.monotonic()
        if self.is_down:
            await self._record(request, arrival, None, "down")
            return self._unavailable()
        if not self._authorized(request):
            await self._record(request, arrival, None, "unauthorized")
            return self._unauthorized()
        await self._record(request, arrival, None, "models")
        if self._models_status != 200:
            return self._error(self._models_status, f"Simulated /models status {self._models_status}.")
        body = payload.model_list(self.models, self.name, int(time.time()))
        return web.json_response(body, headers=self._headers())

    async def _handle_other(self, request: web.Request) -> web.StreamResponse:
        """Any other path: an OpenAI-shaped 404."""
        await self._record(request, time.monotonic(), None, "not_found")
        return self._error(404, f"Unknown path {request.method} {request.path}.", code="not_found")

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``: check, record, then run the chosen behaviour."""
        arrival = time.monotonic()
        self._gate.enter(request)
        try:
            body, behaviour, early = await self._admitted(request, arrival, check_request)
            if early is not None:
                return early
            assert behaviour is not None
            answer = self._answer(body, behaviour)
            return await respond(request, body, behaviour, answer, self._gate, self._headers())
        finally:
            self._gate.leave(request)

    async def _admitted(
        self, request: web.Request, arrival: float, check: Callable[[Any], str | None],
    ) -> tuple[Any, Behaviour | None, web.StreamResponse | None]:
        """Read, check and record one request: ``(body, the behaviour to play, None)``, or an early answer.

        The early answers, in order: down, unauthorized, a bad request (``check`` names the
        problem), or a scripted ``down`` behaviour. Every request is recorded once.
        """
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if self.is_down:
            await self._record(request, arrival, body, "down")
            return body, None, self._unavailable()
        if not self._authorized(request):
            await self._record(request, arrival, body, "unauthorized")
            return body, None, self._unauthorized()
        problem = check(body)
        if problem is not None:
            await self._record(request, arrival, body, "bad_request")
            return body, None, self._error(400, problem, "invalid_request_error")
        behaviour = self._next_behaviour()
        await self._record(request, arrival, body, behaviour.name)
        if behaviour.name == "down":
            self.down_for(behaviour.seconds or 0.0)
            return body, None, self._unavailable()
        return body, behaviour, None

    def _next_behaviour(self) -> Behaviour:
        """The script's next behaviour, else a profile draw, else the default."""
        if self._script:
            return self._script.popleft()
        if self.profile is not None:
            return self.profile.pick(self._rng)
        return self._default

    def _answer(self, body: dict[str, Any], behaviour: Behaviour) -> payload.Answer:
        """The answer to ``body``: text after prefill, model, ids, choice count."""
        # a scripted content is answered as it is; else the request's shape: JSON, or a tool call
        scripted = behaviour.content is not None
        text = behaviour.content if behaviour.content is not None else self.answer
        text = text if scripted else shapes.json_text(body, text) or text
        return payload.Answer(
            id=f"chatcmpl-{self.name}-{next(self._ids)}",
            created=int(time.time()),
            model=body["model"],
            fingerprint=f"fake-{self.name}",
            text=payload.continuation(text, body["messages"]),
            n=body.get("n") or 1,
            prompt_tokens=payload.count_tokens(body["messages"]),
            tool=None if scripted else shapes.tool_call(body, text),
        )


async def start_fleet(specs: Iterable[FakeProvider | Mapping[str, Any]]) -> list[FakeProvider]:
    """Start several providers: each spec is a FakeProvider or its keyword arguments.

    If one fails to start, the ones already started are closed and the error raised.
    """
    started: list[FakeProvider] = []
    try:
        for spec in specs:
            provider = spec if isinstance(spec, FakeProvider) else FakeProvider(**spec)
            started.append(await provider.start())
    except BaseException:
        for provider in started:
            await provider.close()
        raise
    return started
