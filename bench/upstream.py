"""A fast fake OpenAI-compatible upstream: a small completion, or a stream of N chunks.

Run as ``python -m bench.upstream --ports 0,0 --chunks 16 --gap-ms 2``: it listens on
each port (0: a free one), prints ``READY {"ports": [...]}`` on stdout, and serves until
SIGTERM/SIGINT. Everything it sends is built once at startup, so the upstream costs as
little as an aiohttp server can: the benchmark measures the proxy, not this.

A stream is ``N`` content chunks (the first carries the role), one chunk with
``finish_reason: "stop"`` and ``data: [DONE]``: ``N + 2`` events in all, each written on
its own, ``--gap-ms`` apart. A model name ending in ``-nogap`` (e.g. ``bench-nogap``)
gets the same stream with no pause: the model name is the one field every gateway
forwards, so this works through any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from hulumanage.loop import install_uvloop

MODEL = "bench-model"
ANSWER = "Hello! This is a short answer from the benchmark upstream."
CREATED = 1_700_000_000
JSON = {"Content-Type": "application/json"}
SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"
NO_GAP = "-nogap"


def completion() -> bytes:
    """The body of every non-streaming answer (about 350 bytes)."""
    return orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 11, "total_tokens": 23},
    })


def stream_events(chunks: int) -> list[bytes]:
    """The SSE events of a streamed answer with ``chunks`` content chunks (``chunks + 2`` events)."""

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    events = []
    for i in range(chunks):
        delta = {"content": f"tok{i} "}
        if i == 0:
            delta = {"role": "assistant", **delta}
        events.append(chunk(delta, None))
    events.append(chunk({}, "stop"))
    events.append(DONE)
    return events


class Upstream:
    """The request handler: answers from bytes built in advance."""

    def __init__(self, chunks: int, gap_ms: float) -> None:
        self.chunks = chunks
        self.gap_ms = gap_ms
        self.completion = completion()
        self.models = orjson.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})
        self.events = stream_events(chunks)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """``POST .../chat/completions`` and ``GET .../models``; anything else is a 404."""
        path = request.path
        if request.method == "POST" and path.endswith("/chat/completions"):
            try:
                data = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                return web.Response(status=400, body=b'{"error":{"message":"bad JSON"}}', headers=JSON)
            if isinstance(data, dict) and data.get("stream") is True:
                return await self.stream(request, data)
            return web.Response(body=self.completion, headers=JSON)
        if request.method == "GET" and path.endswith("/models"):
            return web.Response(body=self.models, headers=JSON)
        return web.Response(status=404, body=b'{"error":{"message":"not found"}}', headers=JSON)

    async def stream(self, request: web.BaseRequest, data: dict[str, Any]) -> web.StreamResponse:
        """Write the events one by one, ``gap`` apart."""
        model = data.get("model")
        gap = 0.0 if isinstance(model, str) and model.endswith(NO_GAP) else self.gap_ms / 1000.0
        response = web.StreamResponse(headers=SSE)
        await response.prepare(request)
        for i, event in enumerate(self.events):
            if i and gap > 0:
                await asyncio.sleep(gap)
            await response.write(event)
        await response.write_eof()
        return response


async def serve(ports: Sequence[int], chunks: int, gap_ms: float) -> None:
    """Listen on every port, announce them, serve until a stop signal."""
    upstream = Upstream(chunks, gap_ms)
    runner = web.ServerRunner(web.Server(upstream.handle), access_log=None)
    await runner.setup()
    bound = []
    for port in ports:
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        bound.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("READY " + orjson.dumps({"ports": bound}).decode(), flush=True)
    await stop.wait()
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--ports", default="0", help="comma-separated ports to listen on (0: a free one)")
    parser.add_argument("--chunks", type=int, default=16, help="content chunks in a streamed answer")
    parser.add_argument("--gap-ms", type=float, default=2.0, help="pause before every stream event after the first")
    args = parser.parse_args(argv)
    install_uvloop()
    asyncio.run(serve([int(p) for p in args.ports.split(",")], args.chunks, args.gap_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
