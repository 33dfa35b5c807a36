"""Validation of a chat completion request before anything goes upstream."""

from __future__ import annotations

from typing import Any

from hulumanage.errors import ApiError

_NUMBER = (int, float)

MAX_DEPTH = 64  # nested arrays/objects in a request body (the body itself is depth 1)
MAX_INT = 2**63 - 1  # integer fields must fit in a signed 64-bit integer


# Optional request fields and the JSON types they must have (null is always allowed).
FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "stream": ((bool,), "a boolean"),
    "n": ((int,), "an integer"),
    "max_tokens": ((int,), "an integer"),
    "max_completion_tokens": ((int,), "an integer"),
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "presence_penalty": (_NUMBER, "a number"),
    "frequency_penalty": (_NUMBER, "a number"),
    "seed": ((int,), "an integer"),
    "top_logprobs": ((int,), "an integer"),
    "stop": ((str, list), "a string or an array of strings"),
    "tools": ((list,), "an array"),
    "stream_options": ((dict,), "an object"),
    "response_format": ((dict,), "an object"),
    "user": ((str,), "a string"),
}


def _fail(param: str, message: str) -> ApiError:
    err = ApiError(400, message, code="invalid_request")
    err.param = param  # type: ignore[attr-defined]
    return err


def check_depth(data: Any) -> None:
    """Raise a 400 ApiError when ``data`` nests arrays/objects deeper than ``MAX_DEPTH``.

    Iterative (no recursion) and visits containers only, so it costs little for a chat
    request (a list of message objects); strings and numbers are skipped.
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        value, depth = pop()
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    raise _fail("", f"request body nests arrays/objects deeper than {MAX_DEPTH} levels, the limit")
                push((child, depth + 1))


def _too_large(value: Any) -> bool:
    """Whether an integer field's value is outside the signed 64-bit range.

    orjson reads an integer literal beyond 2^64 as a float, so ``1e23``-sized literals
    arrive as floats with an integral value.
    """
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_INT


def validate_request(data: Any) -> None:
    """Raise a 400 ApiError for a body that is not a valid chat completion request."""
    if not isinstance(data, dict):
        raise _fail("", f"request body must be a JSON object, got {type(data).__name__}")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _fail("model", "'model' is required and must be a non-empty string")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("messages", "'messages' is required and must be a non-empty array of message objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _fail(f"messages[{i}]", f"messages[{i}] must be an object, got {type(message).__name__}")
        if not isinstance(message.get("role"), str):
            raise _fail(f"messages[{i}].role", f"messages[{i}].role is required and must be a string")
    for name, value in data.items():  # the request's few fields, not every known one
        spec = FIELD_TYPES.get(name)
        if spec is not None and value is not None:
            types, label = spec
            if types == (int,) and _too_large(value):
                raise _fail(name, f"'{name}' is too large: it must be an integer from {-MAX_INT} to {MAX_INT}")
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise _fail(name, f"'{name}' must be {label}, got {type(value).__name__}")
    n = data.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n < 1:
        raise _fail("n", "'n' must be at least 1")
