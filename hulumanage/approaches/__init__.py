"""The host's built-in approaches: ``none`` (pass-through), ``moa`` and ``bon``."""
