"""Validation of a chat completion request before anything goes upstream."""

from __future__ import annotations

from typing import Any

from hulumanage.errors import ApiError

_NUMBER = (int, float)


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
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise _fail(name, f"'{name}' must be {label}, got {type(value).__name__}")
    n = data.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n < 1:
        raise _fail("n", "'n' must be at least 1")
