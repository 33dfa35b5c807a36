"""HTTP/1.1 framing, sans I/O: request heads out, response bytes in, response state out.

Everything that decides what the bytes on the wire mean lives here, and nothing here
touches a socket or an event loop, so every rule is tested with plain bytes
(``tests/test_upstream_framing.py``). :class:`ResponseFraming` is fed a response's bytes
as they arrive (:meth:`~ResponseFraming.feed`, then :meth:`~ResponseFraming.feed_eof` if
the connection ends) and exposes its state: ``status``, ``headers``, ``headers_done``,
the decoded body pieces not yet taken (``chunks``), ``complete``, ``error``. The asyncio
side (``connection.py``) subclasses it, so the parser's callbacks land here with no layer
in between; how fast that is was measured, see ``bench/README.md``.

The rules applied (RFC 9112 unless said):
- the status line and headers are parsed by ``httptools`` (llhttp); an interim ``1xx``
  response is skipped, the final one follows it (RFC 9110 15.2);
- the body is framed by ``Content-Length``, by ``Transfer-Encoding: chunked`` (chunk
  extensions ignored, trailer fields added to ``headers`` as they come, after the body:
  7.1), or else by the end of the connection (6.3);
- ``gzip`` and ``deflate`` bodies are decoded as they arrive (``identity`` is asked for);
  another coding is refused; a decoded body over ``MAX_BODY`` is refused, decoding at
  most one byte past it, so a small compressed bomb never expands in memory;
- a request head is built once per provider, up to ``Content-Length:``; a request is
  that head, the payload's length, a blank line and the payload.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Mapping

import httptools

from proxy_plugin.upstream.errors import BadHTTPError, DisconnectedError, ResponseCutError, UpstreamError

MAX_BODY = 64 * 1024 * 1024       # a larger answer is refused, not buffered
USER_AGENT = "hulumanage-proxy"
#: headers the client sets itself: a caller's own are dropped from the request head
_OWN_HEADERS = frozenset(("host", "content-length", "transfer-encoding", "connection", "proxy-authorization"))


def request_head(target: str, authority: str, headers: Mapping[str, str], proxy_authorization: str | None = None,
                 ) -> bytes:
    """A ``POST`` request head for ``target`` at ``authority``, ending with ``Content-Length: ``.

    ``target`` is the origin form (``/v1/chat/completions?x=1``), or the absolute form for
    a request through an egress proxy (then ``proxy_authorization`` may be given).
    ``User-Agent`` and ``Accept-Encoding: identity`` are added unless ``headers`` set
    them; ``headers`` that the client owns (``Host``, ``Content-Length``, ...) are dropped.
    The request itself is ``head + b"%d\\r\\n\\r\\n" % len(payload) + payload``.
    """
    lines = [f"POST {target} HTTP/1.1", f"Host: {authority}"]
    if proxy_authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy_authorization}")
    given = {name.lower() for name in headers}
    if "user-agent" not in given:
        lines.append(f"User-Agent: {USER_AGENT}")
    if "accept-encoding" not in given:
        lines.append("Accept-Encoding: identity")
    for name, value in headers.items():
        if name.lower() in _OWN_HEADERS:
            continue
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


class ResponseFraming:
    """One connection's responses, one at a time: fed bytes, it keeps the current response's state."""

    def __init__(self) -> None:
        """A parser for the connection's life; :meth:`reset` readies it for each response."""
        self.parser = httptools.HttpResponseParser(self)
        self.reset()

    def reset(self) -> None:
        """Forget the last response: the next bytes start a new one."""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.error: UpstreamError | None = None
        self.chunks: deque[bytes] = deque()   # decoded body pieces not taken yet
        self.buffered = 0                     # their size in bytes (the taker sets it back to 0)
        self._body_size = 0
        self._until_close = False
        self._decoder: zlib._Decompress | None = None  # type: ignore[name-defined]

    def feed(self, data: bytes) -> None:
        """Parse the bytes that arrived; a framing error becomes ``error`` (never raised)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadHTTPError("the provider switched protocols"))
        except httptools.HttpParserError as exc:
            if self.error is None:
                reason = str(exc)[:80]  # llhttp's fixed reason ("Expected HTTP/"), never response bytes
                self._fail(BadHTTPError(f"malformed HTTP response ({reason})" if reason else "malformed HTTP response"))

    def feed_eof(self) -> None:
        """The connection ended: a body delimited by its end is complete, anything else unfinished an error."""
        if self.complete or self.error is not None:
            return
        if self.headers_done and self._until_close:
            self.complete = True
        elif self.headers_done:
            self._fail(ResponseCutError())
        else:
            self._fail(DisconnectedError())

    def _fail(self, error: UpstreamError) -> None:
        """Keep the first error; the connection is not reusable after it."""
        if self.error is None:
            self.error = error
            self.keep_alive = False

    # -- httptools callbacks -------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header line (names lower-cased; a repeated header keeps its last value)."""
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        """The head is in: skip an interim response, else decide the body's framing and coding."""
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.headers = {}
            return  # an interim response: the real one follows
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        headers = self.headers
        self._until_close = "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            self._fail(BadHTTPError(f"unsupported content-encoding {encoding!r}"))
            return
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        """A piece of the body (de-chunked by the parser): decoded, bounded, appended to ``chunks``."""
        if not self.headers_done or self.error is not None:
            return
        if self._decoder is not None:
            try:  # at most one byte past the limit: a small compressed body never expands in memory
                body = self._decoder.decompress(body, MAX_BODY - self._body_size + 1)
            except zlib.error:
                self._fail(BadHTTPError("the response body does not decompress"))
                return
            if not body:
                return
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            self._fail(BadHTTPError(f"response body larger than {MAX_BODY // (1024 * 1024)} MB"))
            return
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        """The body ended as framed: the decoder's last bytes are appended and the response is complete."""
        if not self.headers_done or self.error is not None:
            return  # the end of an interim response, or of one already refused
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self.chunks.append(rest)
        self.complete = True
