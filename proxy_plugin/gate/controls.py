"""The gateway controls of one configuration: keys, models, rate limits, budgets, cost; and what each request holds.

:class:`Controls` is built once per configuration (the gate rebuilds it when a reload
swaps the configuration); the rate windows and the state store belong to the gate and
outlive it. Order for each request (issue 13): authentication (:meth:`Controls.authenticate`),
then the key's models, then the rate limits and the budgets (:meth:`Controls.admit`,
one synchronous step: check everything, then reserve everything), then the cache
and the approach. A :class:`Hold` is what one admitted request reserved; it is settled
once, when the request ends.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from proxy_plugin.clock import Clock
from proxy_plugin.config import ProxyConfig
from proxy_plugin.gate.budgets import Scope, reserve, settle_budgets
from proxy_plugin.gate.clients import ANONYMOUS, Client, Keyring
from proxy_plugin.gate.estimate import output_tokens, prompt_tokens
from proxy_plugin.gate.limits import Held, Limits, RateLimiter
from proxy_plugin.gate.pace import TypicalUsage
from proxy_plugin.gate.prices import PriceBook
from proxy_plugin.gate.spend import Part, record
from proxy_plugin.state.base import StateStore


class Controls:
    """Keys, limits, budgets and prices of one configuration (``active`` False: none configured, no cost at all)."""

    def __init__(self, config: ProxyConfig, limiter: RateLimiter, store: StateStore, clock: Clock,
                 usage: TypicalUsage | None = None) -> None:
        """``usage``: where answered requests' usage goes when the global budget is paced (``pace.py``)."""
        self.config = config
        self.keyring = Keyring(config.clients)
        self.prices = PriceBook(config.providers)
        self.limiter = limiter
        self.store = store
        self.clock = clock
        self.anonymous = config.clients.anonymous
        self.anonymous_limited = any(v is not None for v in (self.anonymous.rpm, self.anonymous.tpm,
                                                             self.anonymous.max_parallel))
        self.global_budget: list[Scope] = [("global", config.budget)] if config.budget.usd is not None else []
        self.key_budgets = {k.id: [("key:" + k.id, k.budget)] for k in config.clients.keys if k.budget.usd is not None}
        # per key id: its rate-limit caller and the budgets its requests count against (made once)
        self._callers = {k.id: "key:" + k.id for k in config.clients.keys}
        self._key_scopes = {k.id: self.key_budgets.get(k.id, []) + self.global_budget for k in config.clients.keys}
        self.reserve_tokens = config.budget_reserve_tokens
        self.usage = usage
        self.active = (self.keyring.required or self.anonymous_limited or bool(self.global_budget)
                       or bool(self.key_budgets) or self.prices.any)

    @property
    def keys_required(self) -> bool:
        """Whether chat requests need a gateway key."""
        return self.keyring.required

    def authenticate(self, client: Client, api_key: str | None) -> None:
        """Fill in ``client`` from its key (a 401 when keys are on and it is missing or unknown)."""
        if self.keyring.required:
            key = self.keyring.find(api_key)
            client.id, client.key = key.id, key

    def scopes(self, client: Client) -> list[Scope]:
        """The budgets a request of ``client`` counts against: its key's, then the global one."""
        if client.key is not None:
            scopes = self._key_scopes.get(client.id)
            if scopes is not None:
                return scopes
        return self.global_budget

    def ask(self, client: Client, body: dict[str, Any], calls: int = 1) -> Ask:
        """Check the model (the 403) and work out what a request of ``client`` must fit and reserve.

        ``calls``: the upstream calls the request's approaches may make (a composed ``bon``
        or ``moa``): each is reserved at this request's worst case.
        """
        model = body.get("model")
        model = model if isinstance(model, str) else ""
        self.keyring.check_model(client, model)
        key = client.key
        limited = key is not None or self.anonymous_limited
        caller = (self._callers.get(client.id) or "key:" + client.id if key is not None else "ip:" + client.ip) \
            if limited else None
        calls = max(1, calls)
        prompt = prompt_tokens(body) * calls
        output = output_tokens(body, self.reserve_tokens) * calls
        scopes = self.scopes(client)
        worst = 0.0
        if scopes:
            price_in, price_out = self.prices.worst(model)
            worst = prompt * price_in + output * price_out
        return Ask(key if key is not None else self.anonymous, caller, prompt + output, scopes, worst)

    def admit(self, client: Client, body: dict[str, Any], calls: int = 1) -> Hold:
        """Check the model, the limits and the budgets, then reserve them all; raise the refusal."""
        ask = self.ask(client, body, calls)
        now = self.clock.monotonic()
        window = self.limiter.window(ask.caller) if ask.caller is not None else None
        headers = self.limiter.check(window, ask.limits, ask.estimate, now) if window is not None else {}
        held = reserve(self.store, ask.scopes, ask.worst, self.clock.wall()) if ask.scopes else []
        taken = self.limiter.take(window, ask.limits, ask.estimate, now) if window is not None else None
        return Hold(self, client, taken, held, headers, ask.estimate, ask.worst)


class Ask(NamedTuple):
    """What one request must fit: its caller's limits and window (None: not limited), tokens, budgets, worst cost."""

    limits: Limits
    caller: str | None
    estimate: int
    scopes: list[Scope]
    worst: float


class Hold:
    """What one admitted request reserved (a place in flight, tokens, budget) and the usage it reported."""

    __slots__ = ("budget", "client", "controls", "estimate", "limits", "parts", "rate_headers", "settled", "shared",
                 "worst")

    def __init__(self, controls: Controls, client: Client, limits: Held | None, budget: list[tuple[str, float]],
                 rate_headers: dict[str, str], estimate: int, worst: float) -> None:
        self.controls = controls
        self.client = client
        self.limits = limits
        self.budget = budget
        self.rate_headers = rate_headers
        self.estimate = estimate
        self.worst = worst
        self.parts: list[Part] = []
        self.settled = False
        self.shared: Any = None  # a hold made in Redis (gate/shared.py): settled there, in one queued script

    def record(self, provider: str, model: str, prompt: int, completion: int) -> float:
        """One upstream answer's usage; returns its cost."""
        usd = self.controls.prices.cost(provider, model, prompt, completion)
        self.parts.append((provider, model, prompt, completion, usd))
        return usd

    def finish(self, answered: bool, provider: str | None) -> float:
        """Settle once: the real tokens and cost of an answered request, nothing for a failed or cached one.

        An answer that reported no usage (a stream cut short, an upstream that ignores
        ``include_usage``) settles at its reservation: tokens at the estimate, cost at the
        worst case when a priced provider answered (0 when no provider did: ``none``).
        Returns the cost counted.
        """
        if self.settled:
            return 0.0
        self.settled = True
        tokens, usd = 0, 0.0
        if answered:
            parts = self.parts
            if len(parts) == 1:  # the usual request: one upstream answer
                _, _, prompt, completion, usd = parts[0]
                tokens = prompt + completion
            elif parts:
                tokens = sum(p[2] + p[3] for p in parts)
                usd = sum(p[4] for p in parts)
                usage = self.controls.usage
                if usage is not None:  # budget pacing plans with the typical answer
                    for part in self.parts:
                        usage.observe(part[2], part[3])
            else:
                tokens = self.estimate
                usd = self.worst if provider is not None and self.controls.prices.priced(provider) else 0.0
            record(self.controls.store, self.client.id if self.client.key is not None else ANONYMOUS,
                         self.parts)
        if self.shared is not None:
            self.shared.settle(tokens, usd)
            return usd
        if self.limits is not None:
            self.limits.settle(tokens)
        if self.budget:
            settle_budgets(self.controls.store, self.budget, usd)
        return usd
