"""Providers as users configure them: a query string in base_url (Azure's api-version), or ``query:``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from support.helpers import USER, until
from support.upstream import serving

COMPLETION = {"id": "c", "object": "chat.completion", "model": "gpt-4o", "system_fingerprint": "azure-like",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}


@pytest.fixture
async def azure() -> AsyncIterator[tuple[str, list[str]]]:
    """An Azure-shaped upstream: deployments under /openai/deployments/<name>, api-version required."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path_qs}")
        if request.query.get("api-version") != "2024-06-01":
            return web.json_response({"error": {"message": "missing api-version", "code": "404"}}, status=404)
        if request.path.endswith("/chat/completions"):
            return web.json_response(COMPLETION)
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]})

    async with serving(handle) as url:
        yield f"{url}/openai/deployments/gpt-4o", seen


@pytest.mark.parametrize("how", ["in base_url", "as query"])
async def test_the_query_is_kept_on_chat_and_health_check_requests(azure, proxy, http, how: str) -> None:
    base, seen = azure
    provider = ({"name": "az", "base_url": f"{base}?api-version=2024-06-01"} if how == "in base_url"
                else {"name": "az", "base_url": base, "query": {"api-version": "2024-06-01"}})
    host = await proxy([provider], routing={"strategy": "failover",
                                            "health_check": {"enabled": True, "interval": 0.1, "timeout": 1}})
    async with host.client() as client:
        reply = await client.chat.completions.create(model="gpt-4o", messages=USER)
        streamless = reply.choices[0].message.content
    assert streamless == "hi" and reply.system_fingerprint == "azure-like"
    assert "POST /openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01" in seen

    async def checked() -> bool:
        return "GET /openai/deployments/gpt-4o/models?api-version=2024-06-01" in seen

    await until(checked)
    async with http.get(f"{host.url}/health") as resp:
        assert (await resp.json())["proxy"]["providers"]["az"]["healthy"] is True


def test_the_azure_example_in_the_example_config_loads_and_builds_the_right_urls() -> None:
    from pathlib import Path

    import yaml

    from proxy_plugin.config import parse_config
    from proxy_plugin.provider import provider_url

    text = (Path(__file__).resolve().parents[2] / "proxy_config.example.yaml").read_text()
    start = text.index("  # - name: azure")
    block = []
    for line in text[start:].splitlines():
        if not line.startswith("  #"):
            break
        block.append("  " + line[4:].split("  #")[0].rstrip())
    data = yaml.safe_load("providers:\n" + "\n".join(block))
    config = parse_config(data, {"AZURE_RESOURCE": "contoso", "AZURE_OPENAI_KEY": "k" * 32})
    (azure,) = config.providers
    assert provider_url(azure, "/chat/completions") == (
        "https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01")
    assert dict(azure.headers) == {"api-key": "k" * 32}
