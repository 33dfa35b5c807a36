"""Cross-site and misdirected requests: the ``Origin``, ``Host`` and ``Content-Type`` checks.

A browser page on another site can make a visitor's browser POST to a server on localhost
(a form, or ``fetch`` with a "simple" content type), and a DNS-rebinding page can even
read the answers. So, built once from the options (``Guard``):

- a request with an ``Origin`` header not in ``--cors-origins`` (none by default) is a 403
  ``origin_not_allowed``; an allowed origin gets ``Access-Control-Allow-Origin`` on its answers
  and its ``OPTIONS`` preflights answered (``api.preflight``);
- an admin request (``/admin/*``) whose ``Host`` is not a loopback name, the listening address
  or a name in ``--allowed-hosts`` is a 421 ``misdirected_request``;
- a POST carrying a body must say ``Content-Type: application/json`` (parameters such as
  ``charset`` are fine): else a 415 ``unsupported_media_type``. A browser cannot send that
  cross-site without a preflight, which the origin check answers.

The order is fixed: Origin and Host, then authentication, then content type. Requests
without an ``Origin`` header (curl, SDKs) pass the first check untouched. Each check is a
string operation and a set lookup: the fast path runs them on every chat request.
"""

from __future__ import annotations

from hulumanage.errors import ApiError

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
JSON_TYPE = "application/json"
PREFLIGHT_METHODS = "GET, POST, OPTIONS"
PREFLIGHT_HEADERS = "Authorization, Content-Type"


def _names(option: str | None) -> frozenset[str]:
    """The comma-separated names of a flag, lowercased, without trailing slashes."""
    return frozenset(n.strip().lower().rstrip("/") for n in (option or "").split(",") if n.strip())


def host_name(host: str) -> str:
    """The name part of a ``Host`` header value: ``[::1]:8000`` -> ``::1``, ``Example.com.:80`` -> ``example.com``."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    return name.rstrip(".")


class Guard:
    """The allowed origins and admin host names of one server (from its options)."""

    __slots__ = ("any_origin", "hosts", "origins")

    def __init__(self, cors_origins: str | None, allowed_hosts: str | None, listen_host: str) -> None:
        origins = _names(cors_origins)
        self.any_origin = "*" in origins
        self.origins = origins - {"*"}
        self.hosts = LOOPBACK_NAMES | _names(allowed_hosts) | {host_name(f"[{listen_host}]" if ":" in listen_host else listen_host)}

    def origin_refusal(self, origin: str | None) -> ApiError | None:
        """A 403 for a request from an origin not in ``--cors-origins``; None when allowed or absent."""
        if origin is None or self.any_origin or origin in self.origins or origin.lower().rstrip("/") in self.origins:
            return None
        return ApiError(
            403,
            f"requests from origin {origin[:200]!r} are not allowed; a server owner can allow it with --cors-origins",
            "permission_error",
            "origin_not_allowed",
        )

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """The CORS headers of an answer to an allowed ``origin`` (empty without an ``Origin``)."""
        if origin is None:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def preflight_headers(self, origin: str, request_headers: str | None) -> dict[str, str]:
        """The answer headers of an ``OPTIONS`` preflight from an allowed ``origin``."""
        return {
            **self.cors_headers(origin),
            "Access-Control-Allow-Methods": PREFLIGHT_METHODS,
            "Access-Control-Allow-Headers": request_headers or PREFLIGHT_HEADERS,
            "Access-Control-Max-Age": "600",
        }

    def host_refusal(self, host: str | None) -> ApiError | None:
        """A 421 for an admin request whose ``Host`` names another server (DNS rebinding)."""
        if host is None or host_name(host) in self.hosts:
            return None
        return ApiError(
            421,
            f"admin requests must name this server in Host (a loopback name, the listening address or "
            f"--allowed-hosts), not {host[:200]!r}",
            "permission_error",
            "misdirected_request",
        )


def content_type_refusal(content_type: str | None) -> ApiError | None:
    """A 415 unless ``content_type`` is JSON (``application/json``, parameters allowed)."""
    if content_type == JSON_TYPE or (
        content_type is not None and content_type.partition(";")[0].strip().lower() == JSON_TYPE
    ):
        return None
    said = f"{content_type[:100]!r}" if content_type else "none"
    return ApiError(
        415,
        f"request bodies must be sent with Content-Type: {JSON_TYPE} (got {said})",
        code="unsupported_media_type",
    )
