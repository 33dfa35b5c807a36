"""``hulumanage check``: validate a providers file as startup does, say what was understood, probe.

The file is found and loaded by the same code as the server's startup (``find_config_path``,
``ProxyRuntime``: the same errors, with the file, the key path and a did-you-mean), and the
pool is built the same way (``ProxyRuntime.open``). ``--probe`` asks each provider's
``/models`` with its key through the health checker's own ``check``. Nothing printed holds
a key, a header value or the credentials or query of a base URL.

Exit status: 0 valid (and, with ``--probe``, every provider answered 200); 1 a probe
failed; 2 the file is invalid or was not found.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from proxy_plugin.attempts import BUDGET_WINDOW
from proxy_plugin.config import ConfigError, ProxyConfig, find_config_path
from proxy_plugin.health import check as probe_provider
from proxy_plugin.provider import Provider
from proxy_plugin.runtime import ProxyRuntime, plural

OK, INVALID, PROBE_FAILED = 0, 2, 1


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``hulumanage check`` (``--proxy-config`` comes with every command)."""
    parser.add_argument("--probe", action="store_true",
                        help="also ask each provider's /models with its key and say which answered "
                             "(exit 1 when one did not answer 200)")


def public_url(url: str) -> str:
    """``url`` without credentials or query (a query may hold a key): scheme, host, port, path."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _s(value: float | None) -> str:
    """Seconds for the summary (``off`` when unset)."""
    return "off" if value is None else f"{value:g} s"


def summary(config: ProxyConfig, path: str) -> list[str]:
    """What was understood: providers, routing, queue, retries, breaker; never a secret."""
    lines = [f"{path}: valid: {plural(len(config.providers), 'provider')}, strategy {config.routing.strategy}",
             "providers:"]
    for p in config.providers:
        t = config.timeouts_for(p)
        extra = f", {plural(len(p.query), 'query parameter')}" if p.query else ""
        lines.append(f"  {p.name}: {public_url(p.base_url)}{extra}")
        lines.append(f"    weight {p.weight:g}, {'fallback only' if p.fallback_only else 'primary'}, "
                     f"max_concurrent {p.max_concurrent or 'unlimited'}, "
                     f"model_map {len(p.model_map)} {'entry' if len(p.model_map) == 1 else 'entries'}, "
                     f"key {'set' if p.api_key else 'none'}, {plural(len(p.headers), 'extra header')}")
        lines.append(f"    timeouts: connect {_s(t.connect)}, request {_s(t.request)}, "
                     f"first token {_s(t.first_token)}, idle {_s(t.idle)}")
    hc, q, r, cb = config.routing.health_check, config.queue, config.retries, config.circuit_breaker
    checks = f"every {_s(hc.interval)} (timeout {_s(hc.timeout)})" if hc.enabled else "off"
    lines.append(f"routing: strategy {config.routing.strategy}; health checks {checks}")
    lines.append(f"timeouts: total {_s(config.timeouts.total)} over every provider a request tries")
    lines.append(f"queue: max_concurrent {q.max_concurrent}, timeout {_s(q.timeout)}")
    lines.append(f"retries: {r.attempts_per_provider} attempts per provider, backoff {r.backoff_base:g}-{r.backoff_max:g} s, "
                 f"budget {r.budget_ratio:.0%} of requests (at least {r.budget_min} per {_s(BUDGET_WINDOW)})")
    if cb.enabled:
        weighed = ", weighed by the time they take" if cb.time_weighted else ""
        lines.append(f"circuit breaker: opens after {cb.consecutive_failures} consecutive failed requests or "
                     f"{cb.failure_rate:.0%} failures{weighed} over {_s(cb.window)} (min {cb.min_requests} requests), "
                     f"open {cb.open_base:g}-{cb.open_max:g} s")
    else:
        lines.append("circuit breaker: off")
    return lines


async def probe(provider: Provider, runtime: ProxyRuntime) -> tuple[bool, str]:
    """Probe one provider with the health checker's ``check``; (answered 200, what to print)."""
    state = provider.state
    try:
        ok = await probe_provider(runtime.current, provider)
    except ValueError as exc:  # aiohttp refuses the request itself (a key and credentials in the URL)
        return False, f"  FAIL  {provider.name}: cannot send the request: {exc}"
    ms = f"{state.last_check * 1000:.0f} ms" if state.last_check is not None else "-"
    if ok:
        return True, f"  ok    {provider.name}: 200, {plural(len(state.models), 'model')}, {ms}"
    return False, f"  FAIL  {provider.name}: {state.last_error}, {ms}"


async def run_check(options: argparse.Namespace, environ: Mapping[str, str] | None = None,
                    out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``hulumanage check``; the exit status."""
    environ = os.environ if environ is None else environ
    out, err = out or sys.stdout, err or sys.stderr
    if getattr(options, "log_level", "INFO") != "DEBUG":  # the summary says it all; no duplicate warnings
        logging.getLogger("proxy_plugin").setLevel(logging.ERROR)
    try:
        path, looked = find_config_path(getattr(options, "proxy_config", None), environ)
        if path is None:
            print("hulumanage: error: no providers file found (looked at: " + ", ".join(looked)
                  + "); pass --proxy-config PATH or set $HULUMANAGE_PROXY_CONFIG", file=err)
            return INVALID
        runtime = ProxyRuntime(path, environ)  # loads and validates exactly as the server's startup
        await runtime.open()
    except (ConfigError, ValueError) as exc:  # ValueError: an unusable egress proxy setting (Pool)
        print(f"hulumanage: error: {exc}", file=err)
        return INVALID
    try:
        print("\n".join(summary(runtime.config, str(path))), file=out, flush=True)
        if not getattr(options, "probe", False):
            return OK
        print("probe (GET /models with each provider's key):", file=out)
        results = await asyncio.gather(*(probe(p, runtime) for p in runtime.current.providers))
        for _, line in results:
            print(line, file=out)
        failed = [p.name for p, (ok, _) in zip(runtime.current.providers, results) if not ok]
        if failed:
            print(f"{plural(len(failed), 'provider')} did not answer: {', '.join(failed)}", file=out, flush=True)
            return PROBE_FAILED
        print(f"every provider answered ({len(results)})", file=out, flush=True)
        return OK
    finally:
        await runtime.close()


def run_command(options: argparse.Namespace, pm: Any) -> Any:
    """The command's ``run``: an awaitable of the exit status (the host runs it)."""
    return run_check(options)
