"""HTTP/1.1 framing of the upstream client (``proxy_plugin/upstream/framing.py``), with plain bytes.

No sockets, no event loop: response bytes go in (whole, or split at every position),
and the state that comes out is checked: status, headers, the decoded body, whether the
response is complete, and the error that refuses it. The request head is checked by
parsing it back with an HTTP request parser.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httptools
import pytest

import proxy_plugin.upstream.framing as framing_module
from proxy_plugin.upstream import (
    BadHTTPError,
    DisconnectedError,
    ResponseCutError,
    ResponseFraming,
    UpstreamClient,
    request_head,
)

BODY = b'{"choices": [{"message": {"content": "one two three"}}]}'
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: r-1\r\nContent-Length: %d\r\n\r\n"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
# two chunks, one with extensions, then the last chunk with a trailer section (RFC 9112 7.1)
CHUNKED_BODY = b'5;ext=1\r\nhello\r\n6;name="v";flag\r\n world\r\n0\r\nX-Trailer: t\r\nX-Other: o\r\n\r\n'


def body_of(response: ResponseFraming) -> bytes:
    """The decoded body pieces taken so far, joined."""
    return b"".join(response.chunks)


def fed(*pieces: bytes) -> ResponseFraming:
    """A fresh framing fed ``pieces`` one after the other."""
    response = ResponseFraming()
    for piece in pieces:
        response.feed(piece)
    return response


def splits(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``data`` cut in two at every position."""
    for cut in range(len(data) + 1):
        yield data[:cut], data[cut:]


def gzipped(data: bytes) -> bytes:
    """``data`` as a gzip stream."""
    packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


# -- the head -------------------------------------------------------------------------


def test_the_status_line_and_headers_are_read_wherever_the_bytes_are_split() -> None:
    head = HEAD % len(BODY)
    for first, rest in splits(head + BODY):
        response = fed(first)
        assert response.headers_done is (len(first) >= len(head))
        response.feed(rest)
        assert response.status == 200
        assert response.headers == {
            "content-type": "application/json", "x-request-id": "r-1", "content-length": str(len(BODY)),
        }
        assert body_of(response) == BODY and response.complete and response.error is None
        assert response.keep_alive


def test_header_names_are_lower_cased_and_a_repeated_header_keeps_its_last_value() -> None:
    response = fed(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nRETRY-AFTER: 7\r\nContent-Length: 0\r\n\r\n")
    assert response.status == 429 and response.headers["retry-after"] == "7" and "RETRY-AFTER" not in response.headers
    assert response.complete and body_of(response) == b""


def test_an_interim_response_is_skipped_and_the_final_one_read() -> None:
    response = fed(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n")
    assert not response.headers_done and response.status == 0
    response.feed(HEAD % len(BODY) + BODY)
    assert response.status == 200 and "x-interim" not in response.headers
    assert body_of(response) == BODY and response.complete


def test_connection_close_makes_the_connection_not_reusable() -> None:
    response = fed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    assert response.complete and body_of(response) == b"ok" and not response.keep_alive


@pytest.mark.parametrize("reply", [
    b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
], ids=["not-http", "bad-status", "bad-length"])
def test_a_bad_status_line_or_header_is_an_error_not_a_response(reply: bytes) -> None:
    response = fed(reply)
    assert isinstance(response.error, BadHTTPError)
    assert response.error.what.startswith("malformed HTTP response")
    assert not response.headers_done and not response.complete and not response.keep_alive


def test_nothing_before_the_end_of_the_connection_is_a_disconnect() -> None:
    response = fed()
    response.feed_eof()
    assert isinstance(response.error, DisconnectedError) and response.error.connection_level


# -- body framing -----------------------------------------------------------------------


def test_a_content_length_body_is_complete_at_its_last_byte_and_not_before() -> None:
    response = fed(HEAD % len(BODY), BODY[:10])
    assert response.headers_done and not response.complete and body_of(response) == BODY[:10]
    assert response.buffered == 10
    response.feed(BODY[10:])
    assert response.complete and body_of(response) == BODY and response.buffered == len(BODY)


def test_a_content_length_body_cut_short_by_the_end_of_the_connection_is_an_error() -> None:
    response = fed(HEAD % len(BODY), BODY[:10])
    response.feed_eof()
    assert isinstance(response.error, ResponseCutError) and not response.complete
    assert not response.error.connection_level


def test_a_chunked_body_with_extensions_and_trailers_is_read_wherever_the_bytes_are_split() -> None:
    data = CHUNKED_HEAD + CHUNKED_BODY
    for first, rest in splits(data):
        for second, third in splits(rest) if len(first) % 7 == 0 else [(rest, b"")]:
            response = fed(first, second, third)
            assert response.status == 200 and response.error is None
            assert body_of(response) == b"hello world" and response.complete
            assert response.headers["x-trailer"] == "t"  # trailer fields join the headers once the body ends


def test_a_chunked_body_is_complete_only_at_its_last_chunk() -> None:
    response = fed(CHUNKED_HEAD, b"5\r\nhello\r\n")
    assert body_of(response) == b"hello" and not response.complete
    response.feed_eof()
    assert isinstance(response.error, ResponseCutError)


def test_a_bad_chunk_size_is_an_error() -> None:
    response = fed(CHUNKED_HEAD, b"5\r\nhello\r\nzz\r\nabc\r\n0\r\n\r\n")
    assert isinstance(response.error, BadHTTPError) and response.error.what.startswith("malformed HTTP response")
    assert not response.complete and body_of(response) == b"hello"


def test_a_body_without_length_is_read_until_the_connection_closes() -> None:
    response = fed(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n", BODY[:7], BODY[7:])
    assert body_of(response) == BODY and not response.complete and not response.keep_alive
    response.feed_eof()
    assert response.complete and response.error is None and body_of(response) == BODY


def test_a_reset_framing_reads_the_next_response_on_the_same_connection() -> None:
    response = fed(HEAD % len(BODY) + BODY)
    assert response.complete
    response.reset()
    assert not response.headers_done and not response.complete and body_of(response) == b""
    response.feed(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
    assert response.status == 503 and body_of(response) == b"busy" and response.complete


# -- content codings --------------------------------------------------------------------


def test_a_gzip_body_is_decoded_wherever_the_bytes_are_split() -> None:
    packed = gzipped(BODY * 20)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
    for first, rest in splits(packed):
        response = fed(head, first, rest)
        assert body_of(response) == BODY * 20 and response.complete and response.error is None


def test_a_deflate_body_is_decoded() -> None:
    packed = zlib.compress(BODY)
    response = fed(CHUNKED_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: deflate\r\n\r\n"),
                   b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed))
    assert body_of(response) == BODY and response.complete and response.error is None


def test_a_gzip_bomb_is_refused_without_expanding_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(framing_module, "MAX_BODY", 1024 * 1024)
    bomb = gzipped(b"0" * (8 * 1024 * 1024))
    response = fed(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb), bomb)
    assert isinstance(response.error, BadHTTPError) and response.error.what == "response body larger than 1 MB"
    assert response.buffered <= 1024 * 1024 and not response.complete and not response.keep_alive


def test_a_body_that_does_not_decompress_is_an_error() -> None:
    response = fed(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\nnot gzip at ")
    assert isinstance(response.error, BadHTTPError) and response.error.what == "the response body does not decompress"


def test_an_unsupported_content_coding_is_refused() -> None:
    response = fed(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\nabcd")
    assert isinstance(response.error, BadHTTPError) and response.error.what == "unsupported content-encoding 'br'"
    assert not response.headers_done and body_of(response) == b""


# -- the request head -------------------------------------------------------------------


class _Request:
    """What an HTTP request parser reads back from the bytes of a request."""

    def __init__(self, data: bytes) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = b""
        self.done = False
        parser = httptools.HttpRequestParser(self)
        parser.feed_data(data)
        self.method = parser.get_method()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def test_the_request_head_built_for_a_provider_is_a_valid_post_with_its_headers() -> None:
    client = UpstreamClient()
    headers = {"Authorization": "Bearer k-1", "Content-Type": "application/json",
               "Content-Length": "999", "Host": "evil.test", "Connection": "close"}
    endpoint = client.endpoint("https://api.example.com/v1/chat/completions?api-version=2", headers)
    payload = b'{"model": "gpt-4"}'
    request = _Request(endpoint.head + b"%d\r\n\r\n" % len(payload) + payload)
    assert request.done and request.method == b"POST" and request.url == b"/v1/chat/completions?api-version=2"
    assert request.headers == {
        "host": "api.example.com", "user-agent": framing_module.USER_AGENT, "accept-encoding": "identity",
        "authorization": "Bearer k-1", "content-type": "application/json", "content-length": str(len(payload)),
    }
    assert request.body == payload


def test_a_callers_user_agent_and_accept_encoding_replace_the_defaults() -> None:
    head = request_head("/v1/chat/completions", "[::1]:8000", {"User-Agent": "mine/1", "Accept-Encoding": "gzip"})
    request = _Request(head + b"0\r\n\r\n")
    assert request.headers == {"host": "[::1]:8000", "user-agent": "mine/1", "accept-encoding": "gzip",
                               "content-length": "0"}


def test_a_request_through_an_egress_proxy_for_an_http_provider_is_absolute_form_with_its_credentials() -> None:
    client = UpstreamClient(environ={"HTTP_PROXY": "http://team:s3cret@egress:3128"})
    endpoint = client.endpoint("http://models.internal:8080/v1/chat/completions", {"Authorization": "Bearer k"})
    request = _Request(endpoint.head + b"2\r\n\r\n{}")
    assert request.url == b"http://models.internal:8080/v1/chat/completions"
    assert request.headers["host"] == "models.internal:8080"
    assert request.headers["proxy-authorization"] == "Basic dGVhbTpzM2NyZXQ="  # team:s3cret
    assert endpoint.origin == ("http", "models.internal", 8080, "egress", 3128)
