"""A third-party hulumanage plugin: ``shout`` answers in capitals.

It knows nothing of the host or the proxy: it declares its own hookimpl marker,
registers one approach, and makes its upstream call through ``call.client``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pluggy

hookimpl = pluggy.HookimplMarker("hulumanage")


class Shout:
    """Ask the model, then upper-case the answer (a marker the tests can see)."""

    slug = "shout"
    description = "answers in capitals"
    params: ClassVar[dict[str, str]] = {"shout_suffix": "text appended to the answer (default '!')"}
    terminal = False

    async def run(self, call: Any) -> Any:
        """One upstream call through the client the host (or the proxy) provides."""
        # one whole answer: no streaming; every other field the client sent goes along as it is
        request = {k: v for k, v in call.request.items() if k not in ("stream", "stream_options")}
        model, messages = request.pop("model"), request.pop("messages")
        reply = await call.client.chat.completions.create(model=model, messages=messages, extra_body=request)
        suffix = call.extra.get("shout_suffix", "!")
        data = reply.model_dump(mode="json", exclude_unset=True)
        for choice in data["choices"]:
            choice["message"]["content"] = (choice["message"].get("content") or "").upper() + suffix
        if not call.stream:
            return data
        return _as_stream(data)


async def _as_stream(data: dict[str, Any]) -> Any:
    """The finished answer as chunks."""
    for choice in data["choices"]:
        yield {
            "id": data["id"], "object": "chat.completion.chunk", "created": data["created"], "model": data["model"],
            "choices": [{"index": choice["index"], "delta": {"role": "assistant", "content": choice["message"]["content"]},
                         "finish_reason": None}],
        }
    yield {"id": data["id"], "object": "chat.completion.chunk", "created": data["created"], "model": data["model"],
           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


@hookimpl
def register_approaches(register: Any) -> None:
    """Register ``shout``."""
    register(Shout())
