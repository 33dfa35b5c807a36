"""A lean keep-alive HTTP/1.1 client for the hot path: chat completion POSTs to providers.

One concern a module, imported in this order (none imports a later one):

- ``errors``: the exception tree (``UpstreamError`` and its subclasses);
- ``framing``: HTTP/1.1 framing without I/O (request heads, response parsing and decoding);
- ``egress``: the egress HTTP proxy from ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``;
- ``connection``: one connection, the ``asyncio.Protocol`` that feeds the framing;
- ``client``: ``Endpoint`` and ``UpstreamClient``, the keep-alive pool per origin.

The rest of the plugin imports from here, not from the modules. Why a client of its own
and what it saves is measured in ``bench/README.md``.
"""

from proxy_plugin.upstream.client import PARK_SECONDS, Endpoint, UpstreamClient
from proxy_plugin.upstream.connection import PAUSE_AT, Connection
from proxy_plugin.upstream.egress import EgressProxy, egress_proxy
from proxy_plugin.upstream.errors import (
    BadHTTPError,
    ConnectFailedError,
    DisconnectedError,
    ResponseCutError,
    UpstreamError,
)
from proxy_plugin.upstream.framing import MAX_BODY, USER_AGENT, ResponseFraming, request_head

__all__ = [
    "MAX_BODY",
    "PARK_SECONDS",
    "PAUSE_AT",
    "USER_AGENT",
    "BadHTTPError",
    "ConnectFailedError",
    "Connection",
    "DisconnectedError",
    "EgressProxy",
    "Endpoint",
    "ResponseCutError",
    "ResponseFraming",
    "UpstreamClient",
    "UpstreamError",
    "egress_proxy",
    "request_head",
]
