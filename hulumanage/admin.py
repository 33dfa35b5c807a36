"""Admin routes: configuration reload."""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import Any, cast

import orjson
from aiohttp import web

from hulumanage.appkeys import GUARD, PLUGIN_MANAGER
from hulumanage.errors import error_payload
from hulumanage.guard import content_type_refusal

logger = logging.getLogger(__name__)


def _allowed(request: web.Request) -> bool:
    """``HULUMANAGE_ADMIN_TOKEN`` as a bearer token when set; otherwise loopback clients only."""
    token = os.environ.get("HULUMANAGE_ADMIN_TOKEN")
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())
    peer = request.remote or ""
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def _prepared(result: object) -> bool:
    """Whether a ``reload`` hook returned a prepared reload (not a legacy, already applied dict)."""
    return not isinstance(result, Mapping) and callable(getattr(result, "apply", None))


def _discard(results: list[object]) -> None:
    """Drop prepared reloads unapplied (another plugin rejected the reload)."""
    for result in results:
        discard = getattr(result, "discard", None) if _prepared(result) else None
        if discard is None:
            continue
        try:
            discard()
        except Exception:  # one plugin's failing discard must not hide the rejection (logged)
            logger.exception("a plugin failed to discard its prepared reload")


async def reload_plugins(app: web.Application) -> list[object]:
    """Reload every plugin's configuration, all or nothing: prepare them all, then apply them all.

    Each ``reload`` hook returns (or returns an awaitable of) a prepared reload; the first
    exception rejects the whole reload, the prepared ones are discarded and nothing is
    applied. A plugin returning a plain dict reloaded already (the legacy form).
    """
    prepared: list[object] = []
    try:
        # one plugin at a time, in pluggy's call order: the first rejection stops the others
        for impl in reversed(app[PLUGIN_MANAGER].hook.reload.get_hookimpls()):
            result = impl.function(**{name: app for name in impl.argnames if name == "app"})
            prepared.append(await result if inspect.isawaitable(result) else result)
    except BaseException:
        _discard(prepared)
        raise
    return [cast(Any, result).apply() if _prepared(result) else result for result in prepared]


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def refusal(request: web.Request) -> web.Response | None:
    """The checks of every admin request, in order: Origin and Host (``guard.py``), then the
    admin token or a loopback peer, then a JSON content type if it carries a body."""
    guard = request.app[GUARD]
    origin = request.headers.get("Origin")
    refused = guard.origin_refusal(origin) or guard.host_refusal(request.headers.get("Host"))
    if refused is not None:
        status, payload, _headers = error_payload(refused)
        return _json(status, payload)
    if not _allowed(request):
        return _json(403, {"error": {"message": "admin calls are allowed from loopback only, or with "
                                                "HULUMANAGE_ADMIN_TOKEN as bearer token", "type": "permission_error",
                                     "code": "forbidden"}})
    if request.body_exists:
        refused = content_type_refusal(request.headers.get("Content-Type"))
        if refused is not None:
            status, payload, _headers = error_payload(refused)
            return _json(status, payload)
    return None


async def reload(request: web.Request) -> web.Response:
    """``POST /admin/reload``: every plugin reloads its configuration, or nothing changes."""
    refused = refusal(request)
    if refused is not None:
        return refused
    try:
        results = await reload_plugins(request.app)
    except Exception as exc:  # noqa: BLE001 - a rejected reload keeps the old configuration
        logger.error("reload rejected, the previous configuration keeps serving: %s", exc)
        return _json(422, {"error": {"message": f"reload rejected, the previous configuration keeps serving: {exc}",
                                     "type": "invalid_request_error", "code": "reload_rejected"}})
    return _json(200, {"reloaded": [r for r in results if r is not None]})
