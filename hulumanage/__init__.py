"""hulumanage: an OpenAI-compatible inference-optimization server with approach plugins."""

import pluggy

__all__ = ["hookimpl"]
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("hulumanage")
