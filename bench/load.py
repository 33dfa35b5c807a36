"""Load generators: ``wrk`` when installed, and a built-in Python one that is always there.

The Python generator is a minimal keep-alive HTTP/1.1 client on ``asyncio.Protocol``
(uvloop when installed): the request bytes are built once, the response parser only
finds the status, the body length (``Content-Length`` or chunked) and, for streams, the
SSE event boundaries. That keeps it well clear of being the bottleneck (an aiohttp
client costs several times more CPU per request); ``bench.run`` measures its ceiling
against the direct upstream and reports it.

Three ways to drive load, all returning a :class:`Stats`:

- :func:`closed_loop`: ``concurrency`` connections each send the next request as soon
  as the previous answer is complete, for ``duration`` seconds or ``total`` requests;
  with several ports (``Target.more_ports``: replicas) the connections go to each in turn;
- :func:`open_loop`: requests at a fixed rate whatever the answers do (new connections
  are opened when every open one is busy), latency from the actual send;
- :func:`run_wrk`: ``wrk`` at a fixed concurrency (non-streaming only).

For streams the client records the time to the first SSE event (TTFB), the gap before
every later event, the number of events, the number of HTTP chunks that carried more
than one event, and events that arrived in the same read as the previous one
(coalesced): a relay that passes chunks one for one shows none of either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import shutil
import subprocess
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Sequence
from typing import Any

import orjson

PATH = "/v1/chat/completions"
PERCENTILES = (50, 90, 99)
MAX_OPEN_LOOP_CONNECTIONS = 1024
STRAGGLER_GRACE = 30.0


def request_bytes(host: str, port: int, body: dict[str, Any], api_key: str = "bench", path: str = PATH) -> bytes:
    """One complete HTTP/1.1 POST, built once and sent as is."""
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def distribution(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p90/p99/max/mean of ``values`` (seconds) in milliseconds."""
    ordered = sorted(values)
    out = {f"p{p}": percentile(ordered, p) * scale for p in PERCENTILES}
    out["max"] = ordered[-1] * scale if ordered else math.nan
    out["mean"] = (sum(ordered) / len(ordered)) * scale if ordered else math.nan
    return out


@dataclasses.dataclass
class Stats:
    """What one load run measured. Latencies are seconds; :meth:`summary` gives milliseconds."""

    engine: str = "python"
    elapsed: float = 0.0
    ok: int = 0
    errors: int = 0
    latencies: array = dataclasses.field(default_factory=lambda: array("d"))
    ttfb: array = dataclasses.field(default_factory=lambda: array("d"))
    gaps: array = dataclasses.field(default_factory=lambda: array("d"))
    events: int = 0
    streams: int = 0
    bad_streams: int = 0          # a stream without [DONE] or with an unexpected event count
    multi_event_chunks: int = 0   # HTTP chunks that carried more than one SSE event
    coalesced: int = 0            # events that completed in the same read as the previous one
    lag_max: float = 0.0          # open loop: how far behind schedule the latest send was
    statuses: dict[int, int] = dataclasses.field(default_factory=dict)  # answers other than 200, by status
    wrk_latency_ms: dict[str, float] | None = None
    keep_samples: bool = True

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary: throughput, latency percentiles (ms), stream figures."""
        out: dict[str, Any] = {
            "engine": self.engine,
            "requests": self.ok,
            "errors": self.errors,
            "elapsed_s": self.elapsed,
            "rps": self.ok / self.elapsed if self.elapsed > 0 else math.nan,
            "latency_ms": self.wrk_latency_ms if self.wrk_latency_ms is not None else distribution(self.latencies),
        }
        if self.streams:
            out["stream"] = {
                "streams": self.streams,
                "events_per_stream": self.events / self.streams,
                "bad_streams": self.bad_streams,
                "multi_event_chunks": self.multi_event_chunks,
                "coalesced_events": self.coalesced,
                "ttfb_ms": distribution(self.ttfb),
                "inter_chunk_ms": distribution(self.gaps),
            }
        if self.lag_max:
            out["send_lag_max_ms"] = self.lag_max * 1000.0
        if self.statuses:
            out["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        return out


_HEAD, _BODY, _SIZE, _DATA, _CRLF, _TRAILER = range(6)


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _HEAD
        self.remaining = 0
        self.waiter: asyncio.Future[int] | None = None
        self.lost = False
        # per-response stream state
        self.sse = False
        self.stats: Stats | None = None
        self.tail = b""
        self.started = 0.0
        self.last_event = 0.0
        self.events = 0
        self.chunk_events = 0
        self.done = False
        self.status = 0

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"connection closed mid-response: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        while buf or self.state == _BODY and self.remaining == 0:
            state = self.state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                del buf[: end + 4]
                self.status = int(head[9:12])
                if b"\r\ntransfer-encoding: chunked" in head:
                    self.state = _SIZE
                else:
                    at = head.find(b"\r\ncontent-length:")
                    if at < 0:
                        self._fail("response without Content-Length or chunked encoding")
                        return
                    stop = head.find(b"\r\n", at + 2)
                    self.remaining = int(head[at + 17: stop if stop > 0 else None])
                    self.state = _BODY
            elif state == _BODY:
                take = min(len(buf), self.remaining)
                if take:
                    if self.sse:
                        self._body(bytes(buf[:take]), now)
                    del buf[:take]
                    self.remaining -= take
                if self.remaining:
                    return
                self._complete(now)
            elif state == _SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[: end + 2]
                if size:
                    self.remaining = size
                    self.chunk_events = self.events
                    self.state = _DATA
                else:
                    self.state = _TRAILER
            elif state == _DATA:
                take = min(len(buf), self.remaining)
                if self.sse:
                    self._body(bytes(buf[:take]), now)
                del buf[:take]
                self.remaining -= take
                if self.remaining:
                    return
                if self.sse and self.events - self.chunk_events > 1 and self.stats is not None:
                    self.stats.multi_event_chunks += 1
                self.state = _CRLF
            elif state == _CRLF:
                if len(buf) < 2:
                    return
                del buf[:2]
                self.state = _SIZE
            else:  # _TRAILER: lines until an empty one
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._complete(now)

    # -- parsing helpers -------------------------------------------------------------

    def _body(self, piece: bytes, now: float) -> None:
        """Count the SSE events that ``piece`` completes and time them."""
        data = self.tail + piece if self.tail else piece
        n = data.count(b"\n\n")
        if not n:
            self.tail = data
            return
        stats = self.stats
        if stats is not None:
            if self.events == 0:
                stats.ttfb.append(now - self.started)
            elif stats.keep_samples:
                stats.gaps.append(now - self.last_event)
            if n > 1:  # events after the first in one read arrived together with it
                stats.coalesced += n - 1
                if stats.keep_samples:
                    stats.gaps.extend([0.0] * (n - 1))
        self.events += n
        self.last_event = now
        last = data.rfind(b"\n\n")
        if b"[DONE]" in data:
            self.done = True
        self.tail = data[last + 2:]

    def _complete(self, now: float) -> None:
        self.state = _HEAD
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(self.status)

    def _fail(self, why: str) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    # -- use -------------------------------------------------------------------------

    async def send(self, raw: bytes, sse: bool, stats: Stats, started: float) -> int:
        """Send ``raw`` and wait for the whole answer; returns the HTTP status."""
        if self.lost or self.transport is None:
            raise ConnectionError("connection is closed")
        self.sse = sse
        self.stats = stats
        self.tail = b""
        self.events = 0
        self.done = False
        self.started = started
        self.last_event = started
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await waiter

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int) -> Connection:
    """Open one connection."""
    _transport, protocol = await asyncio.get_running_loop().create_connection(Connection, host, port)
    return protocol


@dataclasses.dataclass(frozen=True)
class Target:
    """Where to send, what to send. ``bodies`` are used in turn (a mix of kinds).

    ``more_ports``: further servers (replicas) on ``host``; connections are spread over
    ``port`` and these in turn (connection ``i`` goes to :meth:`port_of` ``(i)``).
    """

    host: str
    port: int
    bodies: tuple[dict[str, Any], ...]
    expected_events: int | None = None  # events a streamed answer must have (None: not checked)
    api_key: str = "bench"
    more_ports: tuple[int, ...] = ()

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port the load goes to."""
        return (self.port, *self.more_ports)

    def port_of(self, i: int) -> int:
        """The port of the ``i``-th connection: the ports in turn."""
        ports = self.ports
        return ports[i % len(ports)]

    def requests(self, port: int | None = None) -> list[tuple[bytes, bool]]:
        """(request bytes, is a stream) for each body, addressed to ``port`` (default: the first)."""
        port = self.port if port is None else port
        return [(request_bytes(self.host, port, b, self.api_key), b.get("stream") is True) for b in self.bodies]


async def _one(conn: Connection, raw: bytes, sse: bool, stats: Stats, target: Target, started: float) -> bool:
    """One request on ``conn``; records it in ``stats``; False when the connection is no longer usable."""
    try:
        status = await conn.send(raw, sse, stats, started)
    except (ConnectionError, OSError):
        stats.errors += 1
        return False
    finished = time.perf_counter()
    if status != 200:
        stats.errors += 1
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        return True
    stats.ok += 1
    if stats.keep_samples:
        stats.latencies.append(finished - started)
    if sse:
        stats.streams += 1
        stats.events += conn.events
        if not conn.done or (target.expected_events is not None and conn.events != target.expected_events):
            stats.bad_streams += 1
    return True


async def closed_loop(target: Target, concurrency: int, duration: float | None = None, total: int | None = None,
                      keep_samples: bool = True) -> Stats:
    """``concurrency`` connections sending back to back, for ``duration`` seconds or ``total`` requests."""
    stats = Stats(keep_samples=keep_samples)
    by_port = {port: target.requests(port) for port in target.ports}
    ports = [target.port_of(i) for i in range(concurrency)]
    conns = [await connect(target.host, port) for port in ports]
    issued = 0
    start = time.perf_counter()
    end = start + duration if duration is not None else math.inf

    async def worker(conn: Connection, port: int) -> None:
        nonlocal issued
        requests = by_port[port]
        while True:
            if total is not None and issued >= total:
                return
            now = time.perf_counter()
            if now >= end:
                return
            raw, sse = requests[issued % len(requests)]
            issued += 1
            if not await _one(conn, raw, sse, stats, target, now):
                conn.close()
                conn = await connect(target.host, port)
                conns.append(conn)

    workers = [asyncio.ensure_future(worker(c, p)) for c, p in zip(conns, ports, strict=True)]
    try:
        await asyncio.wait_for(asyncio.gather(*workers), timeout=(duration or 3600.0) + STRAGGLER_GRACE)
    finally:
        stats.elapsed = time.perf_counter() - start
        for conn in conns:
            conn.close()
    return stats


async def open_loop(target: Target, rate: float, duration: float, connections: int = 16) -> Stats:
    """Send at ``rate`` requests per second for ``duration`` seconds, whatever the answers do (one port only)."""
    if target.more_ports:
        raise ValueError("open_loop sends to one port; closed_loop spreads over several")
    stats = Stats()
    requests = target.requests()
    idle: deque[Connection] = deque([await connect(target.host, target.port) for _ in range(connections)])
    every: list[Connection] = list(idle)
    pending: set[asyncio.Task[None]] = set()
    count = max(1, int(rate * duration))
    interval = 1.0 / rate

    async def one(conn: Connection, raw: bytes, sse: bool) -> None:
        if await _one(conn, raw, sse, stats, target, time.perf_counter()):
            idle.append(conn)
        else:
            conn.close()

    start = time.perf_counter() + 0.005
    try:
        for i in range(count):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0.0002:
                await asyncio.sleep(delay)
            lag = time.perf_counter() - due
            stats.lag_max = max(stats.lag_max, lag)
            if idle:
                conn = idle.popleft()
            elif len(every) < MAX_OPEN_LOOP_CONNECTIONS:
                conn = await connect(target.host, target.port)
                every.append(conn)
            else:
                stats.errors += 1  # the generator itself is out of connections: counted, not hidden
                continue
            raw, sse = requests[i % len(requests)]
            task = asyncio.ensure_future(one(conn, raw, sse))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait_for(asyncio.gather(*pending), timeout=STRAGGLER_GRACE)
    finally:
        stats.elapsed = time.perf_counter() - start
        for conn in every:
            conn.close()
    return stats


# -- wrk ---------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\\nBENCH_WRK {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"connect\\": %%d, \\"read\\": %%d, " ..
    "\\"write\\": %%d, \\"status\\": %%d, \\"timeout\\": %%d, \\"p50\\": %%d, \\"p90\\": %%d, \\"p99\\": %%d, " ..
    "\\"max\\": %%d, \\"mean\\": %%f}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def wrk_path() -> str | None:
    """The ``wrk`` binary, if installed."""
    return shutil.which("wrk")


def run_wrk(target: Target, concurrency: int, duration: float, threads: int = 1) -> Stats:
    """Run ``wrk`` (non-streaming bodies only: it cannot time SSE events)."""
    binary = wrk_path()
    if binary is None:
        raise RuntimeError("wrk is not installed")
    if len(target.bodies) != 1 or target.bodies[0].get("stream") is True:
        raise ValueError("wrk runs one non-streaming body")
    if target.more_ports:
        raise ValueError("wrk sends to one port; closed_loop spreads over several")
    script = WRK_SCRIPT % {"body": orjson.dumps(target.bodies[0]).decode(), "key": target.api_key}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        seconds = max(1, round(duration))
        proc = subprocess.run(
            [binary, "-t", str(min(threads, concurrency)), "-c", str(concurrency), "-d", f"{seconds}s",
             "--timeout", "10s", "-s", f.name, f"http://{target.host}:{target.port}{PATH}"],
            capture_output=True, text=True, timeout=seconds + 60, check=False,
        )
    finally:
        os.unlink(f.name)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_WRK ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    data = orjson.loads(line[len("BENCH_WRK "):])
    errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
    stats = Stats(engine="wrk", elapsed=data["duration_us"] / 1e6, ok=data["requests"] - data["status"], errors=errors)
    stats.wrk_latency_ms = {k: data[k] / 1000.0 for k in ("p50", "p90", "p99", "max", "mean")}
    return stats
