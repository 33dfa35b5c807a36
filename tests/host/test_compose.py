"""Composition in the host through the real server: ``a&b-model`` runs ``a`` with a client
whose calls run ``b``, for any approaches, built-in or from a third-party plugin.

Same setup as ``test_wrap.py``: fakes ``a`` and ``b`` in the proxy's pool (with model maps,
so a call's model shows that it went through the pool), ``direct`` as the host's default
upstream, the official SDK as the client, the fakes' records as the evidence.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from typing import Any

import openai
import orjson
import pytest
from support.wrap import (
    ANSWER,
    CONVERSATION,
    LONG_ANSWER,
    MAPPED,
    MODEL,
    ONE_ATTEMPT,
    WORDS,
    ask,
    ask_stream,
    bon_script,
    check_abandoned_stream,
    check_bon_calls,
    check_moa_calls,
    check_upstream,
    error_of,
    moa_script,
    post,
    start,
    streamed_text,
    tokens,
    usage_of,
    wrapped,
)

from hulumanage.sim import content_filter, ok, server_error

# -- where the calls go ------------------------------------------------------------------


async def test_bon_over_the_proxy_sends_every_call_to_the_providers(fakes, proxy) -> None:
    host, (a, b), direct = await start(fakes, proxy)
    texts = bon_script(a, samples=3)
    reply = await ask(host, model="bon&proxy-gpt-4", extra_body={"bon_n": 3})

    assert reply.choices[0].message.content == "Six, as three doubled."
    seen = a.chat_requests()
    check_bon_calls(seen, samples=3)
    check_upstream(seen, MAPPED["a"])
    assert b.requests == [] and direct.requests == []
    assert reply.model == MODEL
    assert tokens(reply.usage) == usage_of(list(zip(seen, texts)))


async def test_moa_over_the_proxy_sends_every_call_to_the_providers(fakes, proxy) -> None:
    host, (a, b), direct = await start(fakes, proxy)
    texts = moa_script(a)
    reply = await ask(host, model="moa&proxy-gpt-4", extra_body={"moa_proposals": 2})

    assert reply.choices[0].message.content == "Six."
    seen = a.chat_requests()
    check_moa_calls(seen, texts, proposals=2)
    check_upstream(seen, MAPPED["a"])
    assert b.requests == [] and direct.requests == []
    assert reply.model == MODEL
    assert tokens(reply.usage) == usage_of(list(zip(seen, texts)))


async def test_a_chain_named_in_extra_body_is_the_same_as_a_prefix(fakes, proxy) -> None:
    host, (a, _b), direct = await start(fakes, proxy)
    bon_script(a, samples=2)
    reply = await ask(host, extra_body={"hulumanage_approach": "bon&proxy", "bon_n": 2})
    assert reply.choices[0].message.content == "Six, as three doubled."
    check_bon_calls(a.chat_requests(), samples=2)
    check_upstream(a.chat_requests(), MAPPED["a"])
    assert direct.requests == []


async def test_without_the_proxy_a_composition_uses_the_default_upstream(fakes, proxy) -> None:
    host, (a, b), direct = await start(fakes, proxy)
    bon_script(direct, samples=2)
    reply = await ask(host, model="shout&bon-gpt-4", extra_body={"bon_n": 2, "shout_suffix": "!!"})
    assert reply.choices[0].message.content == "SIX, AS THREE DOUBLED.!!"
    check_bon_calls(direct.chat_requests(), samples=2)
    check_upstream(direct.chat_requests(), MODEL)
    assert a.requests == [] and b.requests == []


async def test_with_the_proxy_as_server_default_the_innermost_layer_is_the_pool(fakes, proxy) -> None:
    """``--approach proxy``: ``moa-gpt-4``'s calls run the server's terminal approach, the proxy."""
    host, (a, _b), direct = await start(fakes, proxy, approach="proxy")
    texts = moa_script(a)
    reply = await ask(host, model="moa-gpt-4", extra_body={"moa_proposals": 2})
    assert reply.choices[0].message.content == "Six."
    check_moa_calls(a.chat_requests(), texts, proposals=2)
    check_upstream(a.chat_requests(), MAPPED["a"])
    assert direct.requests == []


# -- the same composition written both ways ----------------------------------------------


def script(slug: str, provider: Any, gap: float = 0.0) -> None:
    """Script one run of ``slug`` on ``provider``."""
    if slug == "moa":
        moa_script(provider, final=ok(content="Six.", chunk_gap=gap))
    elif slug == "bon":
        bon_script(provider, samples=2)
    else:
        provider.script(ok(content="Six."))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("slug", ["moa", "bon", "shout"])
async def test_proxy_wrap_and_a_prefix_behave_the_same(fakes, proxy, slug: str, stream: bool) -> None:
    host, (a, b), direct = await start(fakes, proxy)
    params = {"moa_proposals": 2, "bon_n": 2, "shout_suffix": "?"}
    outcomes = []
    for how in ("proxy_wrap", "prefix"):
        script(slug, a)
        before = len(a.chat_requests())
        if how == "proxy_wrap":
            model, extra = MODEL, wrapped(slug, **params)
        else:
            model, extra = f"{slug}&proxy-{MODEL}", params
        if stream:
            chunks = await ask_stream(host, model=model, extra_body=extra, stream_options={"include_usage": True})
            usage = [c.usage for _, c in chunks if c.usage is not None]
            answer = (streamed_text(chunks), {c.model for _, c in chunks}, [tokens(u) for u in usage])
        else:
            reply = await ask(host, model=model, extra_body=extra, temperature=0.4)
            answer = (reply.choices[0].message.content, {reply.model}, [tokens(reply.usage)])
        calls = a.chat_requests()[before:]
        check_upstream(calls, MAPPED["a"])
        outcomes.append((answer, [s.json for s in calls]))
    (wrap_answer, wrap_calls), (prefix_answer, prefix_calls) = outcomes
    assert wrap_answer == prefix_answer
    assert wrap_calls == prefix_calls  # the very same upstream requests
    assert wrap_answer[0] in ("Six.", "Six, as three doubled.", "SIX.?")
    assert b.requests == [] and direct.requests == []


# -- the third-party plugin and longer chains ---------------------------------------------


async def test_a_third_party_approach_over_the_proxy(fakes, proxy) -> None:
    host, (a, b), direct = await start(fakes, proxy)
    reply = await ask(host, model="shout&proxy-gpt-4", extra_body={"shout_suffix": "?!"})
    assert reply.choices[0].message.content == ANSWER.upper() + "?!"
    (seen,) = a.chat_requests()
    check_upstream([seen], MAPPED["a"])
    assert seen.json["messages"] == CONVERSATION
    assert b.requests == [] and direct.requests == []


async def test_a_chain_of_three_layers(fakes, proxy) -> None:
    """shout runs with a client that runs bon, whose client runs the proxy."""
    host, (a, b), direct = await start(fakes, proxy)
    texts = bon_script(a, samples=2)
    reply = await ask(host, model="shout&bon&proxy-gpt-4", extra_body={"bon_n": 2, "shout_suffix": "?"})
    assert reply.choices[0].message.content == "SIX, AS THREE DOUBLED.?"
    seen = a.chat_requests()
    check_bon_calls(seen, samples=2)
    check_upstream(seen, MAPPED["a"])
    assert b.requests == [] and direct.requests == []
    assert reply.model == MODEL
    assert tokens(reply.usage) == usage_of(list(zip(seen, texts)))


async def test_a_chain_of_three_layers_streams(fakes, proxy) -> None:
    host, (a, _b), direct = await start(fakes, proxy)
    bon_script(a, samples=2)
    chunks = await ask_stream(host, model="shout&bon&proxy-gpt-4", extra_body={"bon_n": 2})
    assert streamed_text(chunks) == "SIX, AS THREE DOUBLED.!"
    check_bon_calls(a.chat_requests(), samples=2)
    check_upstream(a.chat_requests(), MAPPED["a"])
    assert direct.requests == []


async def test_approach_parameters_never_reach_a_provider(fakes, proxy) -> None:
    host, (a, _b), direct = await start(fakes, proxy)
    every_param = {"bon_n": 2, "bon_temperature": 0.5, "moa_proposals": 2, "moa_temperature": 0.3, "shout_suffix": "?"}
    for model in ("moa&proxy-gpt-4", "bon&proxy-gpt-4", "shout&proxy-gpt-4", "shout&bon&proxy-gpt-4",
                  "shout&moa&proxy-gpt-4"):
        before = len(a.chat_requests())
        reply = await ask(host, model=model, extra_body={**every_param, "top_k": 5}, seed=3)
        assert reply.choices[0].message.content
        seen = a.chat_requests()[before:]
        check_upstream(seen, MAPPED["a"], extra_fields=frozenset({"top_k"}))
        assert all(s.json["seed"] == 3 and s.json["top_k"] == 5 for s in seen), model
    assert direct.requests == []


# -- failover and streaming --------------------------------------------------------------


@pytest.mark.parametrize("failure", ["503", "refused"])
async def test_composed_calls_fail_over(fakes, proxy, failure: str) -> None:
    first = "a" if failure == "503" else "dead"
    host, pool, direct = await start(
        fakes, proxy, providers=(first, "b"), retries={"attempts_per_provider": 2, "backoff_base": 0.01}
    )
    b = pool[-1]
    if failure == "503":
        pool[0].set_default(server_error(503))
    texts = moa_script(b)
    reply = await ask(host, model="moa&proxy-gpt-4", extra_body={"moa_proposals": 2})
    assert reply.choices[0].message.content == "Six."
    check_moa_calls(b.chat_requests(), texts, proposals=2)
    check_upstream(b.chat_requests(), MAPPED["b"])
    if failure == "503":
        assert pool[0].chat_requests() and {s.behaviour for s in pool[0].chat_requests()} == {"error"}
    assert direct.requests == []
    assert tokens(reply.usage) == usage_of(list(zip(b.chat_requests(), texts)))


async def test_a_composed_stream_delivers_the_final_answer_as_it_is_produced(fakes, proxy) -> None:
    gap = 0.2
    host, (a, _b), direct = await start(fakes, proxy)
    moa_script(a, final=ok(content=ANSWER, chunk_gap=gap))
    chunks = await ask_stream(host, model="moa&proxy-gpt-4", extra_body={"moa_proposals": 2})

    received = [(at, c.choices[0].delta.content) for at, c in chunks if c.choices and c.choices[0].delta.content]
    assert [word for _, word in received] == WORDS
    final = a.chat_requests()[2]
    assert final.json["stream"] is True and final.json["model"] == MAPPED["a"]
    # event i leaves the fake at about final.time + i * gap (word k is event k + 1); moa
    # holds one chunk back for the usage, so word k leaves the host after event k + 2.
    first_at = received[0][0] - final.time
    assert first_at < 4 * gap, f"the first word arrived {first_at:.2f}s after the final call started"
    for k, (at, _) in enumerate(received):
        assert at - final.time < (k + 4) * gap, (k, at - final.time)
    assert received[-1][0] - received[0][0] > 3 * gap
    assert direct.requests == []


@pytest.mark.parametrize("upstream", ["streaming", "stalled"])
async def test_an_abandoned_composed_stream_frees_the_pool(fakes, proxy, upstream: str) -> None:
    host, (a, _b), _direct = await start(fakes, proxy, answer=LONG_ANSWER)
    await check_abandoned_stream(host, a, upstream, model="moa&proxy-gpt-4", extra_body={"moa_proposals": 1})


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, extra",
    [
        ("proxy&proxy-gpt-4", {}),
        ("moa&moa-gpt-4", {}),
        ("bon&moa&bon-gpt-4", {}),
        ("moa&proxy-gpt-4", {"proxy_wrap": "moa"}),  # the wrap would run moa inside itself
        ("bon&proxy-gpt-4", {"proxy_wrap": "bon"}),
        ("gpt-4", {"hulumanage_approach": "moa&proxy&moa"}),
    ],
)
async def test_cycles_are_clean_400s(fakes, proxy, model: str, extra: dict[str, Any]) -> None:
    host, (a, _b), direct = await start(fakes, proxy)
    status, ctype, raw = await post(host, {"model": model, "messages": CONVERSATION, **extra})
    assert status == 400, raw
    assert ctype.startswith("application/json")
    inner = error_of(orjson.loads(raw))
    assert "cycle" in inner["message"] and inner["type"] == "invalid_request_error"
    assert a.requests == [] and direct.requests == []


@pytest.mark.parametrize("model", ["none&proxy-gpt-4", "proxy&moa-gpt-4"])
async def test_a_terminal_outer_layer_is_refused(fakes, proxy, model: str) -> None:
    host, (a, _b), direct = await start(fakes, proxy)
    status, _ctype, raw = await post(host, {"model": model, "messages": CONVERSATION})
    assert status == 400, (status, raw, len(a.requests), len(direct.requests))
    assert a.requests == [] and direct.requests == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["moa&proxy-gpt-4", "bon&proxy-gpt-4", "shout&bon&proxy-gpt-4"])
async def test_every_provider_failing_is_a_clean_5xx(fakes, proxy, caplog, model: str, stream: bool) -> None:
    host, (a, b), direct = await start(fakes, proxy, retries=ONE_ATTEMPT)
    a.set_default(server_error(500))
    b.set_default(server_error(500))
    with caplog.at_level(logging.ERROR):
        status, ctype, raw = await post(host, {"model": model, "messages": CONVERSATION, "stream": stream})
    assert 500 < status <= 599, raw
    assert ctype.startswith("application/json")
    inner = error_of(orjson.loads(raw))
    assert "a: 500" in inner["message"] and "b: 500" in inner["message"]
    assert b"Traceback" not in raw
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert direct.requests == []


async def test_a_client_error_inside_a_layer_keeps_its_status(fakes, proxy) -> None:
    """A provider's 400 (the caller's error) comes back through every layer as that 400."""
    host, (a, b), direct = await start(fakes, proxy)
    a.script(ok(), ok(), content_filter())  # proposals, critique, then the final call is refused
    status, _ctype, raw = await post(
        host, {"model": "shout&moa&proxy-gpt-4", "messages": CONVERSATION, "moa_proposals": 2}
    )
    assert status == 400, raw
    inner = error_of(orjson.loads(raw))
    assert inner["code"] == "content_filter"
    assert b.requests == [] and direct.requests == []


# -- resources ---------------------------------------------------------------------------


async def test_no_unclosed_resources_after_composed_requests(fakes, proxy, caplog) -> None:
    host, (a, b), direct = await start(fakes, proxy, retries=ONE_ATTEMPT)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        await ask(host, model="moa&proxy-gpt-4", extra_body={"moa_proposals": 2})
        await ask(host, model="shout&bon&proxy-gpt-4", extra_body={"bon_n": 2})
        await ask(host, model="shout&bon-gpt-4", extra_body={"bon_n": 2})
        await ask_stream(host, model="moa&proxy-gpt-4", extra_body={"moa_proposals": 2})
        await ask_stream(host, model="bon&proxy-gpt-4", stream_options={"include_usage": True})
        await ask_stream(host, model="moa-gpt-4", extra_body={"moa_proposals": 2})
        await ask_stream(host, model="shout&bon&proxy-gpt-4")
        a.set_default(server_error(500))
        b.set_default(server_error(500))
        for model in ("moa&proxy-gpt-4", "shout&bon&proxy-gpt-4"):
            with pytest.raises(openai.APIStatusError):
                await ask_stream(host, model=model)
        await host.runner.cleanup()
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
    noise = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]
    assert noise == []
    assert direct.chat_requests()  # the no-proxy chains did run
