"""The proxy's wrap layer through the real server: ``proxy_wrap`` runs another approach on a
client backed by the provider pool.

Every test starts fake providers ``a`` and ``b`` (the proxy's pool, each with a
``model_map`` so the mapped name shows which layer sent a call) and a third fake,
``direct``, as the host's default upstream (``--base-url``). The official ``openai`` SDK
talks to the real host on 127.0.0.1. Which upstream a call reached, with which body, is
read from the fakes' own records; nothing in the code under test is mocked.

Helpers here are shared with ``test_compose.py`` (the same compositions written as model
prefixes, ``moa&proxy-gpt-4``).
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
from support.harness import write_config
from support.helpers import entry
from support.wrap import (
    ANSWER,
    CONVERSATION,
    FAILOVER,
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
    sse_payloads,
    start,
    streamed_text,
    tokens,
    usage_of,
    wrapped,
)

from hulumanage.sim import cut, ok, server_error
from proxy_plugin.approach import RUNTIME

# -- where the calls go ------------------------------------------------------------------


async def test_wrapped_moa_sends_every_call_to_the_providers(fakes, proxy) -> None:
    host, (a, b), direct = await start(fakes, proxy)
    texts = moa_script(a)
    reply = await ask(host, extra_body=wrapped("moa", moa_proposals=2))

    assert reply.choices[0].message.content == "Six."
    seen = a.chat_requests()
    check_moa_calls(seen, texts, proposals=2)
    check_upstream(seen, MAPPED["a"])
    assert b.chat_requests() == [] and direct.requests == []
    assert reply.model == MODEL
    assert reply.usage is not None
    assert tokens(reply.usage) == usage_of(list(zip(seen, texts)))


async def test_wrapped_calls_go_to_the_providers_of_a_reloaded_config(fakes, proxy, http, monkeypatch) -> None:
    monkeypatch.delenv("HULUMANAGE_ADMIN_TOKEN", raising=False)  # loopback callers only
    host, (a,), direct = await start(fakes, proxy, providers=("a",))
    (b,) = await fakes("b", answer=ANSWER)
    moa_script(a)
    assert (await ask(host, extra_body=wrapped("moa", moa_proposals=2))).choices[0].message.content == "Six."
    write_config(host.app[RUNTIME].path, [entry(b, model_map={MODEL: MAPPED["b"]})], routing=FAILOVER)
    async with http.post(f"{host.url}/admin/reload") as resp:
        assert resp.status == 200
    texts = moa_script(b)
    reply = await ask(host, extra_body=wrapped("moa", moa_proposals=2))
    assert reply.choices[0].message.content == "Six."
    check_moa_calls(b.chat_requests(), texts, proposals=2)
    check_upstream(b.chat_requests(), MAPPED["b"])
    assert len(a.chat_requests()) == 3 and direct.requests == []


async def test_wrapped_bon_sends_every_call_to_the_providers(fakes, proxy) -> None:
    host, (a, b), direct = await start(fakes, proxy)
    texts = bon_script(a, samples=3)
    reply = await ask(host, extra_body=wrapped("bon", bon_n=3), temperature=0.1)

    assert reply.choices[0].message.content == "Six, as three doubled."
    seen = a.chat_requests()
    check_bon_calls(seen, samples=3)
    check_upstream(seen, MAPPED["a"])
    assert b.chat_requests() == [] and direct.requests == []
    assert reply.model == MODEL
    assert reply.usage is not None
    assert tokens(reply.usage) == usage_of(list(zip(seen, texts)))


async def test_default_parameters_of_a_wrapped_approach(fakes, proxy) -> None:
    """Without moa_proposals the default (3) applies; the client's own fields reach every call."""
    host, (a, _b), _direct = await start(fakes, proxy)
    texts = moa_script(a)
    await ask(host, extra_body=wrapped("moa"), max_tokens=50, seed=7)
    seen = a.chat_requests()
    check_moa_calls(seen, texts, proposals=3)
    assert all(s.json["max_tokens"] == 50 and s.json["seed"] == 7 for s in seen)


async def test_approach_parameters_never_reach_a_provider(fakes, proxy) -> None:
    host, (a, _b), direct = await start(fakes, proxy)
    every_param = {"bon_n": 2, "bon_temperature": 0.5, "moa_proposals": 2, "moa_temperature": 0.3, "shout_suffix": "?"}
    for slug in ("moa", "bon", "shout"):
        before = len(a.chat_requests())
        reply = await ask(host, extra_body={**wrapped(slug), **every_param, "top_k": 5}, seed=3)
        assert reply.choices[0].message.content
        seen = a.chat_requests()[before:]
        # the client's own fields go through untouched (top_k too: not an approach parameter)
        check_upstream(seen, MAPPED["a"], extra_fields=frozenset({"top_k"}))
        assert all(s.json["seed"] == 3 and s.json["top_k"] == 5 for s in seen), slug
    assert direct.requests == []


async def test_without_the_proxy_moa_uses_the_default_upstream(fakes, proxy) -> None:
    host, (a, b), direct = await start(fakes, proxy)
    texts = moa_script(direct)
    reply = await ask(host, model="moa-gpt-4", extra_body={"moa_proposals": 2})
    assert reply.choices[0].message.content == "Six."
    seen = direct.chat_requests()
    check_moa_calls(seen, texts, proposals=2)
    check_upstream(seen, MODEL)  # no model_map on the default upstream
    assert a.requests == [] and b.requests == []


# -- the third-party plugin --------------------------------------------------------------


async def test_a_third_party_approach_is_wrapped(fakes, proxy) -> None:
    host, (a, b), direct = await start(fakes, proxy)
    reply = await ask(host, extra_body=wrapped("shout", shout_suffix="?!"))
    assert reply.choices[0].message.content == ANSWER.upper() + "?!"
    (seen,) = a.chat_requests()
    check_upstream([seen], MAPPED["a"])
    assert seen.json["messages"] == CONVERSATION
    assert b.requests == [] and direct.requests == []
    assert reply.usage is not None
    assert tokens(reply.usage) == usage_of([(seen, ANSWER)])


async def test_a_wrapped_third_party_approach_streams(fakes, proxy) -> None:
    host, (a, _b), direct = await start(fakes, proxy)
    chunks = await ask_stream(host, extra_body=wrapped("shout"), stream_options={"include_usage": True})
    assert streamed_text(chunks) == ANSWER.upper() + "!"
    (seen,) = a.chat_requests()
    check_upstream([seen], MAPPED["a"])
    assert "stream" not in seen.json and "stream_options" not in seen.json  # shout asks for a whole answer
    assert direct.requests == []


# -- failover ----------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["503", "refused"])
@pytest.mark.parametrize("slug", ["moa", "bon"])
async def test_wrapped_calls_fail_over(fakes, proxy, failure: str, slug: str) -> None:
    first = "a" if failure == "503" else "dead"
    host, pool, direct = await start(
        fakes, proxy, providers=(first, "b"), retries={"attempts_per_provider": 2, "backoff_base": 0.01}
    )
    b = pool[-1]
    if failure == "503":
        pool[0].set_default(server_error(503))
    if slug == "moa":
        texts = moa_script(b)
        reply = await ask(host, extra_body=wrapped("moa", moa_proposals=2))
        assert reply.choices[0].message.content == "Six."
        check_moa_calls(b.chat_requests(), texts, proposals=2)
    else:
        texts = bon_script(b, samples=2)
        reply = await ask(host, extra_body=wrapped("bon", bon_n=2))
        assert reply.choices[0].message.content == "Six, as three doubled."
        check_bon_calls(b.chat_requests(), samples=2)
    check_upstream(b.chat_requests(), MAPPED["b"])
    if failure == "503":
        # a was tried (and failed) but answered nothing
        assert pool[0].chat_requests() and {s.behaviour for s in pool[0].chat_requests()} == {"error"}
        check_upstream(pool[0].chat_requests(), MAPPED["a"])
    assert direct.requests == []
    # failed attempts count no usage
    assert reply.usage is not None
    assert tokens(reply.usage) == usage_of(list(zip(b.chat_requests(), texts)))


async def test_a_wrapped_stream_fails_over_before_its_first_byte(fakes, proxy) -> None:
    host, (a, b), direct = await start(fakes, proxy, retries=ONE_ATTEMPT)
    texts = moa_script(a, final=server_error(503))
    b.script(ok(content="The final answer."))
    chunks = await ask_stream(host, extra_body=wrapped("moa", moa_proposals=2))
    assert streamed_text(chunks) == "The final answer."
    assert len(a.chat_requests()) == 3 and len(b.chat_requests()) == 1
    check_upstream(a.chat_requests(), MAPPED["a"])
    check_upstream(b.chat_requests(), MAPPED["b"])
    assert b.chat_requests()[0].json["messages"] == a.chat_requests()[2].json["messages"]
    assert b.chat_requests()[0].json["stream"] is True
    assert texts[1] in b.chat_requests()[0].json["messages"][-1]["content"]
    assert direct.requests == []


# -- streaming ---------------------------------------------------------------------------


async def test_a_wrapped_stream_delivers_the_final_answer_as_it_is_produced(fakes, proxy) -> None:
    gap = 0.2
    host, (a, _b), direct = await start(fakes, proxy)
    texts = moa_script(a, final=ok(content=ANSWER, chunk_gap=gap))
    chunks = await ask_stream(host, extra_body=wrapped("moa", moa_proposals=2))

    received = [(at, c.choices[0].delta.content) for at, c in chunks if c.choices and c.choices[0].delta.content]
    assert [word for _, word in received] == WORDS
    assert all(c.model == MODEL for _, c in chunks)
    final = a.chat_requests()[2]
    assert final.json["stream"] is True
    # The fake writes event i (0: the role chunk; word k is event k + 1) at about
    # final.time + i * gap. moa holds one chunk back (the last one carries the usage),
    # so word k can leave only once event k + 2 is written: allow one more gap.
    first_at = received[0][0] - final.time
    assert first_at < 4 * gap, f"the first word arrived {first_at:.2f}s after the final call started"
    for k, (at, _) in enumerate(received):
        assert at - final.time < (k + 4) * gap, (k, at - final.time)
    # the words were not buffered into one burst: the last was written 4 gaps after the first
    assert received[-1][0] - received[0][0] > 3 * gap
    assert direct.requests == []
    usage = [c.usage for _, c in chunks if c.usage is not None]
    assert len(usage) == 1 and tokens(usage[0]) == usage_of(list(zip(a.chat_requests(), [*texts[:2], ANSWER])))


async def test_a_wrapped_stream_that_breaks_ends_with_an_error_event(fakes, proxy) -> None:
    """A final answer cut mid-stream, with no provider left to continue it, is never a clean finish."""
    host, (a,), _direct = await start(fakes, proxy, providers=("a",), retries=ONE_ATTEMPT)
    moa_script(a, final=cut(2))
    a.set_default(server_error(503))
    status, ctype, raw = await post(
        host, {"model": MODEL, "messages": CONVERSATION, "stream": True, **wrapped("moa", moa_proposals=1)}
    )
    assert status == 200 and ctype.startswith("text/event-stream")
    payloads = sse_payloads(raw)
    assert b"[DONE]" not in payloads
    last = orjson.loads(payloads[-1])
    error_of(last)
    text = ""
    for payload in payloads[:-1]:
        chunk = orjson.loads(payload)
        for choice in chunk["choices"]:
            assert choice["finish_reason"] is None
            text += choice["delta"].get("content") or ""
    assert ANSWER.startswith(text)
    assert text != ANSWER


@pytest.mark.parametrize("upstream", ["streaming", "stalled"])
async def test_an_abandoned_wrapped_stream_frees_the_pool(fakes, proxy, upstream: str) -> None:
    """A client that leaves mid-answer closes the upstream stream through every layer."""
    host, (a, _b), _direct = await start(fakes, proxy, answer=LONG_ANSWER)
    await check_abandoned_stream(host, a, upstream, extra_body=wrapped("moa", moa_proposals=1))


# -- errors ------------------------------------------------------------------------------


async def test_an_unknown_wrap_is_a_400_listing_the_known_approaches(fakes, proxy) -> None:
    host, (a, _b), direct = await start(fakes, proxy)
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(host, extra_body=wrapped("nope"))
    message = error_of({"error": caught.value.body})["message"]
    assert "nope" in message
    for slug in ("bon", "moa", "none", "proxy", "shout"):
        assert slug in message
    assert a.requests == [] and direct.requests == []


@pytest.mark.parametrize("value", ["proxy", 5, "", ["moa"], "moa&bon"])
async def test_a_bad_wrap_is_a_clean_400(fakes, proxy, value: Any) -> None:
    host, (a, _b), direct = await start(fakes, proxy)
    status, ctype, raw = await post(host, {"model": MODEL, "messages": CONVERSATION, **wrapped(value)})
    assert status == 400, raw
    assert ctype.startswith("application/json")
    inner = error_of(orjson.loads(raw))
    assert inner["type"] == "invalid_request_error"
    assert "proxy_wrap" in inner["message"] or "cycle" in inner["message"]
    assert a.requests == [] and direct.requests == []


async def test_a_null_wrap_means_no_wrap(fakes, proxy) -> None:
    host, (a, _b), direct = await start(fakes, proxy)
    status, _ctype, raw = await post(host, {"model": MODEL, "messages": CONVERSATION, **wrapped(None)})
    assert status == 200, raw
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == ANSWER
    check_upstream(a.chat_requests(), MAPPED["a"])
    assert len(a.chat_requests()) == 1 and direct.requests == []


async def test_wrapping_a_terminal_approach_is_refused(fakes, proxy) -> None:
    """``proxy_wrap: none`` would send the request to the default upstream, around the pool."""
    host, (a, _b), direct = await start(fakes, proxy)
    status, _ctype, raw = await post(
        host, {"model": MODEL, "messages": CONVERSATION, **wrapped("none")}
    )
    assert direct.requests == [], "proxy_wrap: none bypassed the provider pool"
    assert status == 400, raw
    assert "none" in error_of(orjson.loads(raw))["message"]
    assert a.requests == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("slug", ["moa", "bon", "shout"])
async def test_every_provider_failing_is_a_clean_5xx(fakes, proxy, caplog, slug: str, stream: bool) -> None:
    host, (a, b), direct = await start(fakes, proxy, retries=ONE_ATTEMPT)
    a.set_default(server_error(500))
    b.set_default(server_error(500))
    body = {"model": MODEL, "messages": CONVERSATION, "stream": stream, **wrapped(slug)}
    with caplog.at_level(logging.ERROR):
        status, ctype, raw = await post(host, body)
    assert 500 < status <= 599, raw  # a gateway error, not an internal 500
    assert ctype.startswith("application/json")
    inner = error_of(orjson.loads(raw))
    assert "a: 500" in inner["message"] and "b: 500" in inner["message"]
    assert b"Traceback" not in raw
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert direct.requests == []


# -- resources ---------------------------------------------------------------------------


async def test_no_unclosed_resources_after_wrapped_requests(fakes, proxy, caplog) -> None:
    host, (a, b), _direct = await start(fakes, proxy, retries=ONE_ATTEMPT)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        await ask(host, extra_body=wrapped("moa", moa_proposals=2))
        await ask(host, extra_body=wrapped("bon", bon_n=2))
        await ask_stream(host, extra_body=wrapped("moa", moa_proposals=2))
        await ask_stream(host, extra_body=wrapped("bon", bon_n=2), stream_options={"include_usage": True})
        await ask_stream(host, extra_body=wrapped("shout"))
        a.set_default(server_error(500))
        b.set_default(server_error(500))
        for slug in ("moa", "shout"):
            with pytest.raises(openai.APIStatusError):
                await ask_stream(host, extra_body=wrapped(slug))
        await host.runner.cleanup()
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
    noise = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]
    assert noise == []
