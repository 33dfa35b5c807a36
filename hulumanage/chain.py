"""Which approaches serve a request: the extra_body field, a model prefix, or the server's default."""

from __future__ import annotations

from typing import Any

from hulumanage.errors import ApiError


def resolve_chain(
    data: dict[str, Any], approaches: dict[str, Any], default: str, allowed: frozenset[str] | None = None
) -> tuple[str, ...]:
    """Pick the approach layers for a request and strip any approach prefix from ``model``.

    Every layer the client names must be in ``allowed`` (``--allow-approaches``; None: any),
    else a 403; the server's default, used implicitly, always is.
    """
    model = data["model"]
    head, sep, rest = model.partition("-")
    prefix: tuple[str, ...] = ()
    if sep and rest and (head in approaches or "&" in head):
        parts = tuple(head.split("&"))
        if all(p in approaches for p in parts):
            prefix = parts
            data["model"] = rest
    if not prefix and "hulumanage_approach" not in data:
        return (default,)  # the server's default: checked at startup
    selected = data.get("hulumanage_approach")
    if selected is not None:
        if not isinstance(selected, str) or not selected.strip():
            raise ApiError(400, "hulumanage_approach must be a non-empty string such as 'proxy' or 'bon&proxy'", code="invalid_approach")
        chain = tuple(s.strip() for s in selected.split("&"))
    else:
        chain = prefix or (default,)
    unknown = [s for s in chain if s not in approaches]
    if unknown:
        raise ApiError(
            400,
            f"unknown approach {unknown[0]!r}; known approaches: {', '.join(sorted(approaches))}",
            code="unknown_approach",
        )
    if allowed is not None:
        refused = [s for s in chain if s not in allowed]
        if refused:
            raise ApiError(
                403,
                f"approach {refused[0]!r} may not be selected by clients on this server; "
                f"allowed approaches: {', '.join(sorted(allowed))}",
                "permission_error",
                "approach_not_allowed",
            )
    if len(set(chain)) != len(chain):
        raise ApiError(400, f"approach chain {'&'.join(chain)!r} repeats an approach (a cycle)", code="approach_cycle")
    for outer in chain[:-1]:
        if getattr(approaches[outer], "terminal", False):
            raise ApiError(
                400,
                f"approach {outer!r} calls providers itself and cannot run other layers; put it last, "
                f"e.g. '{'&'.join([s for s in chain if s != outer] + [outer])}-{data['model']}'",
                code="invalid_approach_chain",
            )
    return chain


def bearer(authorization: str) -> str | None:
    """The client's bearer token from an ``Authorization`` header value, if any."""
    if authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
        return token or None
    return None
