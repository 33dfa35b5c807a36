"""The routing simulator: the real pool code against simulated providers on a virtual clock.

``hulumanage simulate`` (registered through ``register_commands`` in :mod:`proxy_plugin.plugin`)
runs each scenario (:mod:`.scenarios`) with each strategy: a real :class:`~proxy_plugin.pool.Pool`
(strategies, breakers, retries and their budget, pacing) and the real dispatch loop
(:func:`~proxy_plugin.dispatch.dispatch`), fed by an in-process exchange (:mod:`.engine`) whose
attempts take their outcome and latency from draws made from the seed before any routing
(:mod:`.draws`), so every strategy and the clairvoyant oracle face the same draws. Time is a
:class:`~proxy_plugin.clock.ManualClock` that a virtual-time event loop (:mod:`.vloop`) moves:
no sockets, no sleeping. :mod:`.grade` scores, :mod:`.report` and :mod:`.plots` write it out.
"""
