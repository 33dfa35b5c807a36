"""Models per provider through the real server: globs, model_map keys, the 404, and /v1/models.

Fake providers and the real host on 127.0.0.1, the official ``openai`` SDK; which provider
answered is read from ``system_fingerprint`` (``fake-<name>``).
"""

from __future__ import annotations

import openai
import pytest
from support.helpers import USER, entry, until

NO_CHECKS = {"strategy": "round_robin", "health_check": {"enabled": False}}


def served_by(completion: openai.types.chat.ChatCompletion) -> str:
    """The fake provider that produced ``completion``."""
    return (completion.system_fingerprint or "").removeprefix("fake-")


async def test_requests_go_only_to_providers_serving_the_model(fakes, proxy) -> None:
    a, b, c = await fakes("a", "b", "c")
    host = await proxy(
        [
            entry(a, models=["gpt-4o", "gpt-4o-mini*"]),
            entry(b, models=["llama-*"]),
            entry(c, models=["qwen-7b"], model_map={"house-model": "qwen-7b-instruct"}),
        ],
        routing=NO_CHECKS,
    )
    async with host.client() as client:
        for model, expected in [("gpt-4o", "a"), ("gpt-4o-mini-2024", "a"), ("llama-3.1-8b", "b"),
                                ("house-model", "c"), ("qwen-7b", "c")] * 2:
            got = await client.chat.completions.create(model=model, messages=USER)
            assert served_by(got) == expected, model
    # each provider saw only its own models, mapped where the map says
    assert {r.json["model"] for r in a.chat_requests()} == {"gpt-4o", "gpt-4o-mini-2024"}
    assert {r.json["model"] for r in b.chat_requests()} == {"llama-3.1-8b"}
    assert {r.json["model"] for r in c.chat_requests()} == {"qwen-7b-instruct", "qwen-7b"}


async def test_a_model_nobody_serves_is_a_404_naming_the_served_models(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    host = await proxy(
        [entry(a, models=["gpt-4o*"]), entry(b, models=["llama-*"], model_map={"fast": "llama-3.1-8b"})],
        routing=NO_CHECKS,
    )
    async with host.client() as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="claude-3", messages=USER)
        with pytest.raises(openai.NotFoundError):  # streaming: the same answer, before any event
            await client.chat.completions.create(model="claude-3", messages=USER, stream=True)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found"
    assert "'claude-3'" in error["message"]
    assert "gpt-4o*" in error["message"] and "llama-*" in error["message"] and "fast" in error["message"]
    assert not a.chat_requests() and not b.chat_requests()  # nothing went upstream


async def test_without_models_a_provider_serves_everything(fakes, proxy) -> None:
    a, b = await fakes("a", "b")
    host = await proxy([entry(a, models=["gpt-4o"]), entry(b)], routing=NO_CHECKS)
    async with host.client() as client:
        got = await client.chat.completions.create(model="anything-at-all", messages=USER)
    assert served_by(got) == "b"


async def test_v1_models_lists_exactly_what_is_served(fakes, proxy) -> None:
    a, b = await fakes("a", "b", models=("gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "llama-3.1-8b"))
    host = await proxy(
        [entry(a, models=["gpt-4o*", "o3"]), entry(b, models=["llama-*"], model_map={"fast": "llama-3.1-8b"})],
        routing={"strategy": "round_robin", "health_check": {"enabled": True, "interval": 0.2}},
    )
    async with host.client() as client:

        async def listed() -> bool:
            return {m.id for m in (await client.models.list()).data} >= {"gpt-4o", "gpt-4o-mini", "llama-3.1-8b"}

        await until(listed)
        ids = {m.id for m in (await client.models.list()).data}
    # a reports four models but serves two of them (and names o3); b serves llama and the alias
    assert ids == {"gpt-4o", "gpt-4o-mini", "o3", "llama-3.1-8b", "fast"}


def test_models_must_be_a_list_of_strings() -> None:
    from proxy_plugin.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"providers\[0\]\.models"):
        parse_config({"providers": [{"name": "a", "base_url": "http://x/v1", "models": "gpt-4o"}]}, {}, "t.yaml")
    with pytest.raises(ConfigError, match=r"providers\[0\]\.models\[1\]"):
        parse_config({"providers": [{"name": "a", "base_url": "http://x/v1", "models": ["gpt-4o", 3]}]}, {}, "t.yaml")
