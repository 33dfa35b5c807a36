"""The host's built-in approaches, registered through the same hook as any plugin."""

from __future__ import annotations

from typing import Any

from hulumanage import hookimpl
from hulumanage.approaches.none import NoneApproach


@hookimpl
def register_approaches(register: Any) -> None:
    """Register ``none``, ``moa`` and ``bon``."""
    from hulumanage.approaches.bon import BestOfN
    from hulumanage.approaches.moa import MixtureOfAgents

    register(NoneApproach())
    register(MixtureOfAgents())
    register(BestOfN())
