"""Typed keys for the host's state in the aiohttp application."""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import pluggy
from aiohttp import web

OPTIONS = web.AppKey("hulumanage_options", argparse.Namespace)
PLUGIN_MANAGER = web.AppKey("hulumanage_plugin_manager", pluggy.PluginManager)
APPROACHES = web.AppKey("hulumanage_approaches", dict)
HTTP = web.AppKey("hulumanage_http", aiohttp.ClientSession)
PARAMS = web.AppKey("hulumanage_params", frozenset)
STATS = web.AppKey("hulumanage_stats", dict)

__all__ = ["APPROACHES", "HTTP", "OPTIONS", "PARAMS", "PLUGIN_MANAGER", "STATS", "Any"]
