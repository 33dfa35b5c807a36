"""The proxy configuration as frozen, typed objects: one dataclass per section.

Each field declares its type by annotation and its rules with ``opt(...)`` (see
``engine.py`` for how a section is declared and validated; the checks are in
``checks.py``). Every dataclass-typed field of :class:`ProxyConfig` is a top-level
section of the YAML file, in the order validated. Secret fields (``api_key``,
``headers``) never show in ``repr`` or in an error.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from proxy_plugin.config.checks import (
    globs,
    header_item,
    header_text,
    http_url,
    log_level,
    non_empty,
    period,
    redis_down,
    redis_url,
    sha256_hex,
    state_backend,
    strategy,
)
from proxy_plugin.config.engine import empty_map, hash_fields, opt


@dataclasses.dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Timeouts in seconds for upstream calls; None disables an optional one."""

    connect: float = opt(5.0, gt=0)
    request: float = opt(120.0, gt=0)
    first_token: float | None = opt(30.0, gt=0)
    idle: float | None = opt(30.0, gt=0)
    total: float | None = opt(None, gt=0)


@dataclasses.dataclass(frozen=True, slots=True)
class TimeoutOverrides:
    """Per-provider timeouts; None means "use the global value".

    ``total`` is one deadline over every provider a request tries, so it is global only.
    """

    connect: float | None = opt(None, gt=0)
    request: float | None = opt(None, gt=0)
    first_token: float | None = opt(None, gt=0)
    idle: float | None = opt(None, gt=0)


@dataclasses.dataclass(frozen=True, slots=True)
class PriceConfig:
    """What one model costs at a provider, in USD per million tokens."""

    input: float = opt(ge=0)
    output: float = opt(ge=0)


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One OpenAI-compatible upstream. ``api_key`` and ``headers`` never show in repr."""

    name: str = opt(check=non_empty)
    base_url: str = opt(check=http_url)
    api_key: str | None = opt(None, secret=True, check=header_text)
    weight: float = opt(1.0, ge=0)
    fallback_only: bool = opt(False)
    model_map: Mapping[str, str] = opt(factory=empty_map)
    max_concurrent: int | None = opt(None, ge=1)
    slot_wait: float = opt(0.5, ge=0)
    headers: Mapping[str, str] = opt(factory=empty_map, secret=True, check=header_item)
    supports_prefill: bool = opt(False)
    #: the models it serves, as globs (``gpt-4o-mini*``); None: every model. ``model_map`` keys count too.
    models: tuple[str, ...] | None = opt(None, check=globs)
    timeouts: TimeoutOverrides = dataclasses.field(default_factory=TimeoutOverrides)
    # query parameters on every request to it (Azure's api-version); a query in base_url counts too
    query: Mapping[str, str] = opt(factory=empty_map, secret=True)
    #: USD per million tokens by the provider's model name (after ``model_map``); ``"*"``: its default
    prices: Mapping[str, PriceConfig] = opt(factory=empty_map)

    def __hash__(self) -> int:
        """Hash by value (the mappings are read-only)."""
        return hash_fields(self)


@dataclasses.dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """Background health checks of each provider."""

    enabled: bool = opt(True)
    interval: float = opt(30.0, gt=0)
    timeout: float = opt(5.0, gt=0)
    unhealthy_after: int = opt(1, ge=1)
    healthy_after: int = opt(1, ge=1)


@dataclasses.dataclass(frozen=True, slots=True)
class AdaptiveConfig:
    """The ``adaptive`` strategy's reward: success, less these weights times latency and cost (each in [0, 1])."""

    latency_weight: float = opt(0.3, ge=0, le=1)
    cost_weight: float = opt(0.3, ge=0, le=1)
    #: the latency that costs the full ``latency_weight`` (seconds); faster answers cost a share of it
    latency_target: float = opt(5.0, gt=0)
    #: seconds after which evidence counts half (discounting: a recovered provider is noticed)
    half_life: float = opt(30.0, gt=0)


@dataclasses.dataclass(frozen=True, slots=True)
class RoutingConfig:
    """How a provider is chosen for each request."""

    strategy: str = opt("weighted", check=strategy)
    health_check: HealthCheckConfig = dataclasses.field(default_factory=HealthCheckConfig)
    #: the peak-EWMA latency's time constant (seconds): ``least_latency`` and the routing signals
    ewma_decay: float = opt(10.0, gt=0)
    #: ``cost`` leaves a provider whose recent success rate falls below this
    min_success: float = opt(0.9, ge=0, le=1)
    adaptive: AdaptiveConfig = dataclasses.field(default_factory=AdaptiveConfig)
    #: pace spending against a global budget with a period (when one is set): cheaper first, then shed
    pace_budget: bool = opt(True)


@dataclasses.dataclass(frozen=True, slots=True)
class QueueConfig:
    """The global bound on requests in flight, and how long a request may wait."""

    max_concurrent: int = opt(100, ge=1)
    timeout: float = opt(30.0, ge=0)


@dataclasses.dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """Logging and metrics switches."""

    log_level: str = opt("INFO", check=log_level)
    track_latency: bool = opt(True)
    track_errors: bool = opt(True)


@dataclasses.dataclass(frozen=True, slots=True)
class RetryConfig:
    """Retries on the same provider and the retry budget."""

    attempts_per_provider: int = opt(2, ge=1)
    backoff_base: float = opt(0.1, ge=0)
    backoff_max: float = opt(2.0, ge=0)
    retry_after_max: float = opt(2.0, ge=0)
    budget_ratio: float = opt(0.2, ge=0, le=1)
    #: retries always allowed per window (``attempts.BUDGET_WINDOW``, 10 s): 100 is Finagle's and Linkerd's 10 a second
    budget_min: int = opt(100, ge=0)


@dataclasses.dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """When a failing provider is taken out of rotation, and for how long."""

    enabled: bool = opt(True)
    #: requests in a row that failed on the provider (a request's retries there count once)
    consecutive_failures: int = opt(5, ge=1)
    failure_rate: float = opt(0.5, gt=0, le=1)
    #: in ``failure_rate``, a failure counts as the time it took against the provider's typical answer (at most 1)
    time_weighted: bool = opt(True)
    window: float = opt(30.0, gt=0)
    min_requests: int = opt(10, ge=1)
    open_base: float = opt(5.0, gt=0)
    open_max: float = opt(60.0, gt=0)
    #: the longest an open circuit waits before a probe, whatever the backoff has grown to
    max_probe_gap: float = opt(10.0, gt=0)


# --- gateway controls: client keys, rate limits, budgets, state -----------------------


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetConfig:
    """A spending limit in USD per period (``day``, ``week``, ``month``: UTC calendar; or ``total``).

    ``usd`` null: no budget.
    """

    usd: float | None = opt(None, ge=0)
    period: str = opt("month", check=period)


@dataclasses.dataclass(frozen=True, slots=True)
class ClientKeyConfig:
    """One client key: its id (shown in logs and /admin/spend), the key or its SHA-256, limits, budget, models.

    ``key`` is a secret: never in repr or an error.
    """

    id: str = opt(check=non_empty)
    key: str | None = opt(None, secret=True, check=header_text)
    key_sha256: str | None = opt(None, check=sha256_hex)
    rpm: int | None = opt(None, ge=1)
    tpm: int | None = opt(None, ge=1)
    max_parallel: int | None = opt(None, ge=1)
    budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)
    models: tuple[str, ...] = opt(factory=tuple, check=globs)  # globs; empty: every model

    def __hash__(self) -> int:
        """Hash by value."""
        return hash_fields(self)


@dataclasses.dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Rate limits of one caller: requests and tokens per minute, requests in flight (null: none)."""

    rpm: int | None = opt(None, ge=1)
    tpm: int | None = opt(None, ge=1)
    max_parallel: int | None = opt(None, ge=1)


@dataclasses.dataclass(frozen=True, slots=True)
class ClientsConfig:
    """Who may call: client keys (then every chat request needs one), and limits per IP without keys."""

    keys: tuple[ClientKeyConfig, ...] = opt(factory=tuple)
    anonymous: LimitsConfig = dataclasses.field(default_factory=LimitsConfig)

    def __hash__(self) -> int:
        """Hash by value."""
        return hash_fields(self)


@dataclasses.dataclass(frozen=True, slots=True)
class StateConfig:
    """Where counters that must survive a restart (spend) are kept: an SQLite file, memory only, or a Redis
    shared by several replicas (limits, budgets, spend, the cache, circuits and health verdicts)."""

    backend: str = opt("sqlite", check=state_backend)
    path: str = opt("~/.hulumanage/state.sqlite3", check=non_empty)
    redis_url: str = opt("redis://127.0.0.1:6379/0", check=redis_url, secret=True)
    redis_timeout: float = opt(0.05, gt=0, le=5)   # seconds per Redis call, never longer
    on_redis_down: str = opt("local", check=redis_down)  # local: per-process state, warned | closed: 503
    redis_prefix: str = opt("hulumanage:")


@dataclasses.dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``GET /metrics`` (Prometheus, or a JSON summary): on, public, and whether client key ids get series."""

    enabled: bool = opt(True)
    public: bool = opt(True)        # false: /metrics follows the admin rule (the admin token, else loopback only)
    per_client: bool = opt(False)   # true: the hulumanage_client_* series, labelled by client key id


@dataclasses.dataclass(frozen=True, slots=True)
class CacheConfig:
    """The response cache (``proxy_plugin/gate/cache.py``): what is cached, how many, how long."""

    enabled: bool = opt(False)
    max_entries: int = opt(1000, ge=1)       # least recently used go first
    ttl: float = opt(1800.0, gt=0)           # seconds
    #: requests at or below it are cached (an absent temperature counts as 1.0), and any that sets ``seed``
    max_temperature: float = opt(0.3, ge=0)
    per_client: bool = opt(True)             # each client key id its own namespace
    max_entry_bytes: int = opt(1_048_576, ge=1)


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The whole validated proxy configuration; ``source`` is the file it came from."""

    providers: tuple[ProviderConfig, ...]
    routing: RoutingConfig = dataclasses.field(default_factory=RoutingConfig)
    timeouts: TimeoutConfig = dataclasses.field(default_factory=TimeoutConfig)
    queue: QueueConfig = dataclasses.field(default_factory=QueueConfig)
    monitoring: MonitoringConfig = dataclasses.field(default_factory=MonitoringConfig)
    retries: RetryConfig = dataclasses.field(default_factory=RetryConfig)
    circuit_breaker: CircuitBreakerConfig = dataclasses.field(default_factory=CircuitBreakerConfig)
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    cache: CacheConfig = dataclasses.field(default_factory=CacheConfig)
    clients: ClientsConfig = dataclasses.field(default_factory=ClientsConfig)
    budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)
    state: StateConfig = dataclasses.field(default_factory=StateConfig)
    #: output tokens a request without ``max_tokens`` reserves against tpm and budgets (a top-level key)
    budget_reserve_tokens: int = opt(4096, ge=1)
    source: str = "<config>"

    def __hash__(self) -> int:
        """Hash by value (the mappings are read-only)."""
        return hash_fields(self)

    def timeouts_for(self, provider: ProviderConfig) -> TimeoutConfig:
        """Return the global timeouts with ``provider``'s overrides applied."""
        over = provider.timeouts
        merged = {}
        for f in dataclasses.fields(TimeoutConfig):
            value = getattr(over, f.name, None)
            merged[f.name] = getattr(self.timeouts, f.name) if value is None else value
        return TimeoutConfig(**merged)


def _sections() -> dict[str, type]:
    """The top-level sections: every dataclass-typed field of ProxyConfig, in field order."""
    hints = typing.get_type_hints(ProxyConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ProxyConfig) if dataclasses.is_dataclass(hints[f.name])}


SECTIONS: Mapping[str, type] = MappingProxyType(_sections())


def _scalars() -> dict[str, dataclasses.Field[Any]]:
    """The top-level scalar keys: ProxyConfig fields declared with ``opt`` that are not sections."""
    return {f.name: f for f in dataclasses.fields(ProxyConfig) if f.name not in SECTIONS and "check" in f.metadata}


#: top-level keys holding one value (``budget_reserve_tokens``), validated like a section's fields
SCALARS: Mapping[str, dataclasses.Field[Any]] = MappingProxyType(_scalars())
