"""``hulumanage demo``: the proxy on three simulated providers, no network and no keys needed.

Starts three :mod:`hulumanage.sim` providers on 127.0.0.1 (fast-cheap, slow-reliable and
flaky), writes a proxy config for them to a temporary directory, serves the real host
in-process with ``--approach proxy`` (the proxy plugin loads through its entry point like
any plugin), sends a few hundred requests through it with the official ``openai`` SDK and
prints what the proxy did, read from the host's ``GET /health``.
"""

from hulumanage.demo.run import run_demo

__all__ = ["run_demo"]
