"""The egress HTTP proxy: which provider URLs go through one, and the ``CONNECT`` tunnel.

The proxy comes from ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (the lower-case
names win, as in curl and urllib). https providers are reached through a ``CONNECT``
tunnel with TLS inside it; http ones get absolute-form requests through the proxy (the
request head says so: ``framing.request_head``). Loopback hosts never go through it.
Credentials in the setting are sent as ``Proxy-Authorization`` and shown nowhere.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import socket
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from proxy_plugin.upstream.errors import ConnectFailedError
from proxy_plugin.upstream.framing import USER_AGENT

MAX_CONNECT_HEAD = 16 * 1024      # a CONNECT answer whose head is longer is not HTTP


@dataclasses.dataclass(frozen=True, slots=True)
class EgressProxy:
    """The HTTP proxy requests to a provider go through (from the environment)."""

    host: str
    port: int
    url: str = dataclasses.field(repr=False)                  # credentials included: aiohttp's ``proxy=``
    authorization: str | None = dataclasses.field(default=None, repr=False)  # ``Proxy-Authorization`` value

    def __str__(self) -> str:
        """``host:port``, never the credentials."""
        return f"{self.host}:{self.port}"


def egress_proxy(url: str, environ: Mapping[str, str]) -> EgressProxy | None:
    """The proxy for ``url`` per ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` in ``environ`` (None: direct).

    The lower-case name wins, as in curl and urllib. Loopback hosts are always reached
    directly (a local provider or the demo's simulated ones behind a corporate proxy
    setting). Only ``http://`` proxies are supported: anything else is a ``ValueError``
    naming the variable, never its value (it may hold credentials).
    """
    target = urlsplit(url)
    host = (target.hostname or "").lower()
    names = ("https_proxy", "HTTPS_PROXY") if target.scheme.lower() == "https" else ("http_proxy", "HTTP_PROXY")
    variable = next((name for name in names if environ.get(name, "").strip()), None)
    if variable is None or _loopback(host):
        return None
    target_port = target.port or (443 if target.scheme.lower() == "https" else 80)
    if _bypassed(host, target_port, environ.get("no_proxy") or environ.get("NO_PROXY") or ""):
        return None
    value = environ[variable].strip()
    if "://" not in value:
        value = f"http://{value}"
    parts = urlsplit(value)
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme.lower() != "http":
        raise ValueError(f"{variable}: only http:// proxies are supported, got a {parts.scheme.lower()}:// one")
    if not parts.hostname or not port:
        raise ValueError(f"{variable}: not a usable proxy URL (expected http://[user:password@]host[:port])")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return EgressProxy(parts.hostname, port, value, authorization)


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` names the host: ``*``, a domain and its subdomains (with or without a
    leading dot), an IP address or network (``10.0.0.0/8``), each optionally with ``:port``."""
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        name, _, wanted = entry.rpartition(":") if entry.count(":") == 1 or "]:" in entry else (entry, "", "")
        if wanted and (not wanted.isdigit() or int(wanted) != port):
            continue
        name = name.strip("[]").lstrip("*").lstrip(".")
        if not name:
            continue
        if host == name or host.endswith("." + name):
            return True
        try:
            if ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(name, strict=False):
                return True
        except ValueError:
            pass
    return False


def _loopback(host: str) -> bool:
    """Whether ``host`` is this machine (``localhost``, ``*.localhost``, a loopback address)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def open_tunnel(loop: asyncio.AbstractEventLoop, sock: socket.socket, host: str, port: int,
                      proxy: EgressProxy) -> None:
    """Ask the egress proxy on ``sock`` for a tunnel to ``host:port`` (``CONNECT``); TLS then runs inside it.

    ConnectFailedError: the proxy closed, did not answer with HTTP, or refused (its status
    and reason are named, never the credentials).
    """
    host = f"[{host}]" if ":" in host else host
    authority = f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}", f"User-Agent: {USER_AGENT}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    reply = b""
    while b"\r\n\r\n" not in reply and len(reply) <= MAX_CONNECT_HEAD:
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise ConnectFailedError(f"the egress proxy {proxy} closed the connection instead of opening a tunnel")
        reply += data
    head, ended, rest = reply.partition(b"\r\n\r\n")
    version, _, status_reason = head.split(b"\r\n", 1)[0].partition(b" ")
    status, _, reason = status_reason.partition(b" ")
    if not ended or rest or not version.startswith(b"HTTP/1.") or not status.isdigit():
        raise ConnectFailedError(f"the egress proxy {proxy} did not answer CONNECT with HTTP")
    if not 200 <= int(status) < 300:
        said = "".join(c for c in reason[:60].decode("latin-1") if c.isprintable())
        raise ConnectFailedError(
            f"the egress proxy {proxy} refused the tunnel ({' '.join(filter(None, (status.decode(), said)))})")
