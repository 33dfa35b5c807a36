"""What a simulated provider answers when a request asks for a shape: a tool call, or JSON.

``tools`` (and ``tool_choice`` other than ``"none"``): the answer calls the first tool (or
the one ``tool_choice`` names) with arguments built from its JSON schema.
``response_format`` ``json_object`` or ``json_schema``: the answer's text is JSON (an
object built from the schema, else ``{"answer": TEXT}``). Pure functions of the body.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["json_text", "sample", "tool_call"]

#: How deep :func:`sample` follows nested schemas before it answers ``null``.
_DEPTH = 6


def sample(schema: Any, text: str, depth: int = 0) -> Any:
    """A value that satisfies the simple JSON ``schema`` (type, properties, items, enum, const, anyOf)."""
    if not isinstance(schema, dict) or depth > _DEPTH:
        return text
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return sample(schema[key][0], text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and isinstance(schema.get("properties"), dict)):
        props = schema.get("properties")
        if not isinstance(props, dict):
            props = {}
        return {name: sample(sub, text, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [sample(schema.get("items"), text, depth + 1)]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), text)


def _tool_name(tool: Any) -> str | None:
    """The function name of one ``tools`` entry."""
    function = tool.get("function") if isinstance(tool, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def tool_call(body: dict[str, Any], text: str) -> tuple[str, str] | None:
    """``(name, arguments JSON)`` of the tool call to answer ``body`` with, or None (no tools, or ``"none"``)."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    chosen = tools[0]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        chosen = next((t for t in tools if _tool_name(t) == wanted), chosen)
    name = _tool_name(chosen)
    if name is None:
        return None
    parameters = chosen["function"].get("parameters")
    arguments = sample(parameters, text) if isinstance(parameters, dict) else {}
    return name, json.dumps(arguments if isinstance(arguments, dict) else {"value": arguments})


def json_text(body: dict[str, Any], text: str) -> str | None:
    """The answer text as JSON when ``response_format`` asks for it, else None."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return json.dumps({"answer": text})
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        value = sample(schema, text) if isinstance(schema, dict) else {"answer": text}
        return json.dumps(value)
    return None
