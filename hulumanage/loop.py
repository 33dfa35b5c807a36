"""The event loop: uvloop when it is installed."""

from __future__ import annotations

import asyncio


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when it is installed; True when it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
