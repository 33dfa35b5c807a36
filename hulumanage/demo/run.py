"""``run_demo``: providers up, host up, load, report, everything down."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import random
import re
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pluggy
from aiohttp import web

from hulumanage.app import make_app
from hulumanage.demo import fleet, report
from hulumanage.demo.load import Progress, send_requests
from hulumanage.fastsite import FastSite
from hulumanage.options import parse_args
from hulumanage.sim import FakeProvider, Seen

DEFAULT_REQUESTS = 300
DEFAULT_CONCURRENCY = 16
DEFAULT_SEED = 42
#: The client's timeout (s): far above the proxy's, which answer first.
CLIENT_TIMEOUT = 20.0
#: The client-side success rate at or above which the demo exits 0.
PASS_RATE = 0.99
#: Loggers held at WARNING during the demo besides the root (unless --log-level DEBUG); the
#: proxy plugin takes its level from the demo config's monitoring.log_level.
QUIET_LOGGERS = ("hulumanage",)
#: What seeds the proxy plugin's random choices (a plugin setting the host only passes on).
SEED_VAR = "HULUMANAGE_PROXY_SEED"
_INDEX = re.compile(r"Demo request (\d+):")


@contextlib.contextmanager
def _quiet(debug: bool) -> Iterator[None]:
    """Keep logging at WARNING for the duration (not when debugging): INFO lines would bury the report."""
    if debug:
        yield
        return
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in QUIET_LOGGERS)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _index(body: Any) -> int:
    """The demo request index a provider saw (``Demo request 17: ...``), -1 when it is not one."""
    try:
        match = _INDEX.match(body["messages"][-1]["content"])
    except (KeyError, IndexError, TypeError):
        return -1
    return int(match[1]) if match else -1


def _arrivals(providers: Sequence[FakeProvider]) -> Callable[[int], Awaitable[object]]:
    """``reached(index)``: completes once a provider has seen demo request ``index``."""
    events: dict[int, asyncio.Event] = collections.defaultdict(asyncio.Event)

    def note(seen: Seen) -> None:
        index = _index(seen.json)
        if index >= 0:
            events[index].set()

    for provider in providers:
        provider.on_request = note
    return lambda index: events[index].wait()


def _listen() -> socket.socket:
    """A socket bound to a free port of 127.0.0.1, so the client can be built before the host starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """``$HULUMANAGE_PROXY_SEED`` set for the demo's proxy (its routing and backoff draws), restored after."""
    before = os.environ.get(SEED_VAR)
    os.environ[SEED_VAR] = str(seed)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SEED_VAR, None)
        else:
            os.environ[SEED_VAR] = before


@contextlib.asynccontextmanager
async def _host(sock: socket.socket, config: Path, log_level: str, pm: pluggy.PluginManager,
                seed: int) -> AsyncIterator[None]:
    """Serve the real host with ``--approach proxy`` on ``sock`` until the block ends."""
    options = parse_args(["--approach", "proxy", "--proxy-config", str(config), "--log-level", log_level], pm)
    with _seeded(seed):
        app = make_app(options, pm)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2, handler_cancellation=True)
    with _seeded(seed):
        await runner.setup()  # the proxy's runtime reads the seed here
    try:
        await FastSite(runner, sock=sock).start()
        yield
    finally:
        await runner.cleanup()


async def _health(url: str) -> dict[str, Any]:
    """The host's ``GET /health`` JSON."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as resp:
        resp.raise_for_status()
        return await resp.json()


def _intro(total: int, concurrency: int, specs: Sequence[fleet.DemoProvider]) -> str:
    """What the demo is about to do."""
    head = (f"hulumanage demo: {total} requests ({concurrency} at a time, about half streaming) through the proxy "
            f"to {len(specs)} simulated providers on 127.0.0.1:")
    lines = [head]
    for spec in specs:
        lines.append(f"  {spec.name:<14} {spec.blurb}; maps {fleet.ALIAS} -> {spec.model}")
    t = fleet.TIMEOUTS
    lines.append(f"strategy {fleet.STRATEGY}; timeouts: first token {t['first_token']:g} s, request {t['request']:g} s; "
                 f"health checks every {fleet.HEALTH_INTERVAL:g} s")
    return "\n".join(lines)


async def run_demo(
    options: argparse.Namespace,
    pm: pluggy.PluginManager,
    *,
    specs: Sequence[fleet.DemoProvider] = fleet.PROVIDERS,
) -> int:
    """Run the demo; 0 when at least 99% of the requests succeeded, 1 when fewer, 2 when it cannot start.

    ``specs`` are the simulated providers (the default three unless a test brings others).
    """
    total = int(getattr(options, "requests", DEFAULT_REQUESTS))
    concurrency = int(getattr(options, "concurrency", DEFAULT_CONCURRENCY))
    seed = int(getattr(options, "seed", DEFAULT_SEED))
    for flag, value in (("--requests", total), ("--concurrency", concurrency)):
        if value < 1:
            print(f"hulumanage demo: error: {flag} must be at least 1, got {value}", file=sys.stderr)
            return 2
    debug = getattr(options, "log_level", "INFO") == "DEBUG"
    out = sys.stdout
    print(_intro(total, concurrency, specs), file=out, flush=True)
    level = "DEBUG" if debug else "WARNING"
    with _quiet(debug), tempfile.TemporaryDirectory(prefix="hulumanage-demo-") as tmp, _listen() as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        # Built before the servers start: the SDK's first use is slow blocking work,
        # which would otherwise stall the host's first health checks.
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="demo-client", max_retries=0,
                                      timeout=CLIENT_TIMEOUT) as client:
            client.chat.completions  # noqa: B018 - loads the SDK's chat resources now
            providers = await fleet.start_providers(seed, specs)
            try:
                config = fleet.write_config(Path(tmp), fleet.proxy_config(providers, level, specs))
                try:
                    async with _host(sock, config, level, pm, seed):
                        result = await send_requests(client, fleet.ALIAS, total, concurrency,
                                                     random.Random(seed), Progress(total), _arrivals(providers))
                        health = await _health(url)
                except Exception as exc:  # a demo that cannot run says why in one line
                    if debug:
                        logging.getLogger("hulumanage").exception("demo failed")
                    print(f"hulumanage demo: error: {exc}", file=sys.stderr)
                    return 2
                behaviours = {p.name: [s.behaviour for s in p.chat_requests()] for p in providers}
                walks = report.walks({p.name: [(s.time, _index(s.json), s.behaviour) for s in p.chat_requests()]
                                      for p in providers})
            finally:
                for provider in providers:
                    await provider.close()
    stats = health.get("proxy", {}).get("providers", {})
    print(file=out)
    print(report.render_table(report.provider_rows(stats)), file=out)
    print(file=out)
    print(report.client_summary(result.sent, result.succeeded, result.latencies, result.seconds), file=out)
    if result.errors:
        print("client errors: " + ", ".join(f"{n} x {what}" for what, n in result.errors.most_common()), file=out)
    print(file=out)
    for line in report.traffic(walks, {s.name: s.weight for s in specs}, result.sent):
        print(line, file=out)
    print(file=out)
    worst = max(stats, key=lambda name: stats[name].get("failures") or 0, default="flaky")
    seen = behaviours.get(worst, [])
    for line in report.explain(stats, worst, seen.count("error"), seen.count("hang"),
                               result.sent - result.succeeded, fleet.STRATEGY, fleet.TIMEOUTS):
        print(line, file=out)
    print(file=out)
    print(report.NEXT_STEPS, file=out, flush=True)
    return 0 if result.success_rate >= PASS_RATE else 1
