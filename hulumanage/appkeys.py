"""Typed ``web.AppKey``s for the host's state in the aiohttp application.

(Not client API keys: those are the gateway's business, elsewhere.)
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import pluggy
from aiohttp import web

from hulumanage.guard import Guard

OPTIONS = web.AppKey("hulumanage_options", argparse.Namespace)
PLUGIN_MANAGER = web.AppKey("hulumanage_plugin_manager", pluggy.PluginManager)
APPROACHES: web.AppKey[dict[str, Any]] = web.AppKey("hulumanage_approaches")
HTTP = web.AppKey("hulumanage_http", aiohttp.ClientSession)
PARAMS: web.AppKey[frozenset[str]] = web.AppKey("hulumanage_params")
ALLOWED: web.AppKey[frozenset[str]] = web.AppKey("hulumanage_allowed_approaches")
GUARD = web.AppKey("hulumanage_guard", Guard)
STATS: web.AppKey[dict[str, Any]] = web.AppKey("hulumanage_stats")
GATE: web.AppKey[Any] = web.AppKey("hulumanage_gate")  # the request gate a plugin offers (None: none)
HIT_LANE: web.AppKey[Any] = web.AppKey("hulumanage_hit_lane")  # hulumanage.chat.HitLane: bodies the gate answered

__all__ = ["ALLOWED", "APPROACHES", "GATE", "GUARD", "HIT_LANE", "HTTP", "OPTIONS", "PARAMS", "PLUGIN_MANAGER", "STATS"]
