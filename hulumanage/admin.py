"""Admin routes: configuration reload."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os

import orjson
from aiohttp import web

from hulumanage.appkeys import PLUGIN_MANAGER
from hulumanage.plugins import settle

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


async def reload_plugins(app: web.Application) -> list[object]:
    """Run every plugin's ``reload`` hook, awaiting what needs awaiting."""
    return await settle(app[PLUGIN_MANAGER].hook.reload(app=app))


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def reload(request: web.Request) -> web.Response:
    """``POST /admin/reload``: every plugin reloads its configuration, or nothing changes."""
    if not _allowed(request):
        return _json(403, {"error": {"message": "admin calls are allowed from loopback only, or with "
                                                "HULUMANAGE_ADMIN_TOKEN as bearer token", "type": "permission_error",
                                     "code": "forbidden"}})
    try:
        results = await reload_plugins(request.app)
    except Exception as exc:  # noqa: BLE001 - a rejected reload keeps the old configuration
        logger.error("reload rejected, the previous configuration keeps serving: %s", exc)
        return _json(422, {"error": {"message": f"reload rejected, the previous configuration keeps serving: {exc}",
                                     "type": "invalid_request_error", "code": "reload_rejected"}})
    return _json(200, {"reloaded": [r for r in results if r is not None]})
