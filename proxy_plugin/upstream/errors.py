"""The upstream client's one exception tree: what can go wrong talking HTTP to a provider.

Each error carries ``what``, a short, secret-free description for client errors and
``/health``, and ``connection_level``: whether it says the provider as a whole is
unreachable. ``proxy_plugin/classify.py`` maps them to outcomes by class, never by text.

| class                | raised when                                                     | provider-wide |
|----------------------|-----------------------------------------------------------------|---------------|
| `ConnectFailedError` | no connection (refused, DNS, TLS, connect timeout, egress proxy) | yes           |
| `DisconnectedError`  | the connection ended before any byte of a response              | yes           |
| `ResponseCutError`   | the connection ended in the middle of a response                | no            |
| `BadHTTPError`       | not HTTP/1.1, an unsupported encoding, a body over the limit    | no            |
"""

from __future__ import annotations


class UpstreamError(Exception):
    """A transport failure while talking to a provider."""

    #: a short, secret-free description for errors and ``/health``
    what = "upstream transport error"
    #: whether it says the provider as a whole is unreachable (not one model)
    connection_level = False

    def __init__(self, what: str | None = None) -> None:
        """``what``, when given, replaces the class's description and is the message too."""
        if what is None:
            super().__init__()
        else:
            super().__init__(what)
            self.what = what


class ConnectFailedError(UpstreamError):
    """No connection could be opened."""

    connection_level = True


class DisconnectedError(UpstreamError):
    """The server closed the connection before any response."""

    what = "server disconnected"
    connection_level = True


class ResponseCutError(UpstreamError):
    """The connection ended in the middle of a response."""

    what = "response cut short"


class BadHTTPError(UpstreamError):
    """The server's bytes are not a valid HTTP/1.1 response, or one this client refuses."""
