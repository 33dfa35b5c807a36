"""The proxy approach for hulumanage: one OpenAI-compatible endpoint over many providers."""

import pluggy

__all__ = ["hookimpl"]

hookimpl = pluggy.HookimplMarker("hulumanage")
