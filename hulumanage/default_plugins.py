"""The host's built-in approaches and commands, registered through the same hooks as any plugin."""

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


@hookimpl
def register_commands(register: Any) -> None:
    """Register ``serve`` (the default command), ``demo`` and ``sim-providers``."""
    from hulumanage.commands import run_demo, run_serve
    from hulumanage.options import add_demo_arguments, add_serve_arguments

    register("serve", "run the server (the default command)", add_serve_arguments, run_serve)
    register("demo", "the proxy on simulated providers: no keys, no network", add_demo_arguments, run_demo)
    from hulumanage import simproviders

    register("sim-providers", "simulated providers on their own, for local development", simproviders.add_sim_arguments,
             simproviders.run_sim_providers)
