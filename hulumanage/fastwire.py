"""The fast path's bytes, no I/O: which request lines it serves, and the response heads it writes.

``fastpath.py`` (the connection) sniffs each new request's first bytes with :func:`is_hot_route` and
writes prebuilt heads: :data:`SSE_HEAD`, :data:`JSON_200` and :func:`json_head`, each ending in a
``Date`` line formatted once a second (:data:`date`); :class:`ParsedRequest` is what it keeps of a request.
"""

from __future__ import annotations

import email.utils
import http
import time

HOT_PATHS = ("/v1/chat/completions", "/chat/completions")
HOT_URLS = tuple(path.encode() for path in HOT_PATHS)
HOT_LINES = tuple(b"POST " + url + b" HTTP/1.1\r\n" for url in HOT_URLS)
SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
JSON_HEADERS = {"Content-Type": "application/json"}
JSON_200 = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
#: each status line, made once (``http.HTTPStatus(status)`` is an enum lookup a request)
STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}


class Date:
    """The ``Date`` header line, formatted once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.line = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.line


date = Date()


def header_lines(headers: dict[str, str]) -> bytes:
    """``headers`` as head lines (empty for none, the common case)."""
    if not headers:
        return b""
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")


def json_head(status: int, headers: dict[str, str], length: int, close: bytes) -> bytes:
    """The response head of a JSON answer."""
    if status == 200 and headers == JSON_HEADERS:
        start = JSON_200
    else:
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        start = (STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status) + lines.encode("latin-1")
    return start + b"Content-Length: %d\r\n" % length + close + date() + b"\r\n"


def is_hot_route(data: bytes) -> bool | None:
    """Whether ``data`` starts with the hot route's request line (None: too short to tell)."""
    undecided = False
    for line in HOT_LINES:
        if data.startswith(line):
            return True
        if line.startswith(data):
            undecided = True
    return None if undecided else False


class ParsedRequest:
    """One request as the fast path parsed it (the connection fills it in from the parser's callbacks).

    It is the :class:`hulumanage.chat.Head` that ``chat_reply`` reads.
    """

    __slots__ = ("authorization", "body", "cache_control", "client_ip", "content_type", "head_done", "keep_alive",
                 "origin", "path", "refused", "request_id", "size")

    def __init__(self, client_ip: str = "") -> None:
        self.path = b""
        self.head_done = False
        self.authorization = ""
        self.content_type: str | None = None  # for the cross-site checks of chat_reply
        self.origin: str | None = None
        self.request_id: str | None = None
        self.cache_control: str | None = None
        self.client_ip = client_ip
        self.body: list[bytes] = []
        self.size = 0
        self.keep_alive = True
        self.refused = False  # not the hot route, pipelined: the connection closes before it
