"""``moa``: mixture of agents - propose several answers, critique them, write the best one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from hulumanage.approaches._common import (
    JUDGE_DROP,
    SAMPLE_DROP,
    Usage,
    as_dict,
    completion,
    create_kwargs,
    float_param,
    int_param,
    message_text,
    relay,
    sample,
    wants_usage,
    with_message,
    with_usage_last,
)
from hulumanage.call import Call

DEFAULT_PROPOSALS = 3
DEFAULT_TEMPERATURE = 0.7
MAX_PROPOSALS = 16

PROPOSAL_TEMPLATE = "Candidate {number}:\n{text}"

CRITIQUE_PROMPT = (
    "Here are {count} candidate answers to my previous message.\n\n"
    "{proposals}\n\n"
    "Critique each candidate in turn: what is correct, what is wrong or missing. "
    "Do not write a new answer."
)

FINAL_PROMPT = (
    "Here are {count} candidate answers to my previous message, and a critique of them.\n\n"
    "{proposals}\n\n"
    "Critique:\n{critique}\n\n"
    "Using the best parts and avoiding the mistakes, write the best final answer to my "
    "previous message. Reply with that answer only, as if answering it directly."
)


def _proposals_text(proposals: list[str]) -> str:
    """The proposals as numbered blocks."""
    return "\n\n".join(PROPOSAL_TEMPLATE.format(number=i, text=text) for i, text in enumerate(proposals, 1))


class MixtureOfAgents:
    """Mixture of agents: proposals, then a critique, then a final answer that uses both."""

    slug = "moa"
    description = "Mixture of agents: several proposals, a critique of them, then the best final answer."
    params: ClassVar[dict[str, str]] = {
        "moa_proposals": f"number of proposals (default {DEFAULT_PROPOSALS}, at most {MAX_PROPOSALS})",
        "moa_temperature": f"temperature of the proposal calls (default {DEFAULT_TEMPERATURE})",
    }
    terminal = False

    def fanout(self, call: Call) -> int:
        """The most upstream calls ``run`` makes: a call per proposal (when the upstream ignores
        ``n``), the critique, the final answer (the client's ``n`` rides on that one call)."""
        return int_param(call.extra, "moa_proposals", DEFAULT_PROPOSALS, 1, MAX_PROPOSALS) + 2

    async def run(self, call: Call) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """Answer ``call`` in three steps; the final step honours ``n``, sampling and ``stream``."""
        count = int_param(call.extra, "moa_proposals", DEFAULT_PROPOSALS, 1, MAX_PROPOSALS)
        temperature = float_param(call.extra, "moa_temperature", DEFAULT_TEMPERATURE, 0.0, 2.0)
        request = call.request
        model = request["model"]
        messages = list(request["messages"])
        create = call.client.chat.completions.create
        usage = Usage()

        # 1. proposals: one call with n=count, filled up if n is not honoured.
        choices = await sample(call.client, create_kwargs(request, SAMPLE_DROP, temperature=temperature), count, usage)
        proposals = _proposals_text([message_text(choice.get("message") or {}) for choice in choices])

        # 2. critique of every proposal.
        critique_prompt = CRITIQUE_PROMPT.format(count=len(choices), proposals=proposals)
        critique = await create(
            **create_kwargs(request, JUDGE_DROP, messages=with_message(messages, "user", critique_prompt))
        )
        usage.add(critique.usage)
        critique_text = message_text(as_dict(critique.choices[0].message)) if critique.choices else ""

        # 3. final answer, with the client's own n / temperature / tools / stream.
        final_prompt = FINAL_PROMPT.format(count=len(choices), proposals=proposals, critique=critique_text)
        final_messages = with_message(messages, "user", final_prompt)
        if call.stream:
            stream = await create(
                **create_kwargs(request, messages=final_messages, stream=True, stream_options={"include_usage": True})
            )
            return with_usage_last(relay(stream, model, usage), usage, separate=wants_usage(request))
        final = await create(**create_kwargs(request, ("stream", "stream_options"), messages=final_messages))
        usage.add(final.usage)
        data = as_dict(final)
        extra = {key: data[key] for key in ("system_fingerprint", "service_tier") if data.get(key) is not None}
        return completion(model, data.get("choices") or [], usage, **extra)
