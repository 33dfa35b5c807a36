"""``none``: plain pass-through to the host's upstream ``--base-url``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
import orjson

from hulumanage.appkeys import HTTP, OPTIONS
from hulumanage.call import Call, RawResponse
from hulumanage.errors import ApiError


class NoneApproach:
    """Send the request unchanged to ``--base-url`` and relay the answer's bytes."""

    slug = "none"
    description = "plain pass-through to the upstream --base-url"
    params: ClassVar[dict[str, str]] = {}
    terminal = True

    async def run(self, call: Call) -> Any:
        """Relay the call to the default upstream with the client's key (or OPENAI_API_KEY)."""
        return await self._forward(call, "/chat/completions")

    async def embeddings(self, call: Call) -> Any:
        """``POST /v1/embeddings``, relayed to ``--base-url`` as chat is."""
        return await self._forward(call, "/embeddings")

    async def completions(self, call: Call) -> Any:
        """``POST /v1/completions`` (streamed or not), relayed to ``--base-url`` as chat is."""
        return await self._forward(call, "/completions")

    async def _forward(self, call: Call, path: str) -> Any:
        """POST the request to ``path`` under ``--base-url``; the answer's bytes (or SSE) relayed."""
        options = call.app[OPTIONS]
        session = call.app[HTTP]
        key = call.api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = options.base_url.rstrip("/") + path
        try:
            response = await session.post(url, data=orjson.dumps(call.request), headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(502, f"upstream {options.base_url} unreachable: {type(exc).__name__}", "upstream_error", "upstream_unreachable") from exc
        if not call.stream or response.status >= 400:
            async with response:
                body = await response.read()
            if call.ticket is not None and response.status == 200:
                _record_usage(call, body)
            return RawResponse(response.status, body, {"Content-Type": response.headers.get("Content-Type", "application/json")})
        return _relay(response)


async def _relay(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Yield the upstream SSE bytes as they arrive."""
    async with response:
        async for data in response.content.iter_any():
            yield data


def _record_usage(call: Call, body: bytes) -> None:
    """Tell the request gate what the upstream answer used (its ``usage``), when it says."""
    try:
        usage = orjson.loads(body).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return
    if isinstance(usage, dict):
        call.ticket.record("none", call.request.get("model", ""), usage)
