"""Raw HTTP/1.1 on a socket: requests as bytes, one client connection, and what an SSE chat stream said."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson

from support.helpers import USER

ANSWER = "one two three four"
BODY = orjson.dumps({"model": "gpt-4", "messages": USER})
STREAM_BODY = orjson.dumps({"model": "gpt-4", "messages": USER, "stream": True})


def post(body: bytes = BODY, path: str = "/v1/chat/completions", headers: str = "", length: int | None = None) -> bytes:
    """A raw HTTP/1.1 POST."""
    size = len(body) if length is None else length
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{headers}"
            f"Content-Length: {size}\r\n\r\n").encode() + body


class Wire:
    """One raw client connection to the host."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """Read one response: (status, headers with lower-case names, body de-chunked)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
                body += (await self.reader.readexactly(size + 2))[:-2]
                if size == 0:
                    return status, headers, body
        return status, headers, await self.reader.readexactly(int(headers.get("content-length", "0")))

    async def closed(self) -> bool:
        """Whether the server closed the connection (EOF within a few seconds)."""
        try:
            return await asyncio.wait_for(self.reader.read(1), 5) == b""
        except ConnectionResetError:
            return True


@contextlib.asynccontextmanager
async def wire(port: int) -> AsyncIterator[Wire]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield Wire(reader, writer)
    finally:
        writer.close()


def content(sse: bytes) -> str:
    """The text of an SSE chat stream."""
    text = ""
    for block in sse.split(b"\n\n"):
        if block.startswith(b"data: {"):
            for choice in orjson.loads(block[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text
