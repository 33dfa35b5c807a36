"""Prometheus metrics of one proxy runtime, written with ``prometheus-client`` into the runtime's own registry.

Names and labels are a public contract (README, "Metrics"). Counters and histograms are
updated in the request's own flow, by its ticket (``proxy_plugin/gate``): ``attempted``
for every upstream attempt, ``record`` for every answer's usage, ``finished`` once when
the response has ended (the gate's ``refused`` too, for a request that got no ticket),
``limited`` for a refusal by a limit, a budget or auth. What mirrors state
(provider up, circuits, in flight, the queue, failovers) is read from the pool when
``/metrics`` is scraped (:class:`_StateCollector`), never per request.

Cardinality is bounded whatever clients send: ``model`` is one of the configuration's
model names (``model_map`` keys and values, the models the providers' ``/models`` list)
or ``other``; ``approach`` is an approach chain the host accepted; ``provider`` a
configured name. Client key ids never label these series: with ``metrics.per_client``
the separate ``hulumanage_client_*`` series carry them (key ids are configuration names).
Label children are cached, so a request costs a few dictionary lookups and
``inc``/``observe`` calls on plain numbers (:mod:`proxy_plugin.metric_series`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy_plugin.metric_series import CounterSeries, HistogramSeries

if TYPE_CHECKING:
    from proxy_plugin.attempts import Outcome
    from proxy_plugin.config import ProxyConfig
    from proxy_plugin.pool import Pool
    from proxy_plugin.provider_state import ProviderState

OTHER = "other"            # the model label of every model the configuration does not name
UNRESOLVED = "unresolved"  # the approach label of a request refused before its approach chain was known
ANONYMOUS = "anonymous"    # the client label of requests without a client key (per_client series)
RATE_LIMIT_REASONS = ("rpm", "tpm", "parallel", "budget", "auth")
CACHE_RESULTS = ("hit", "miss", "bypass")
#: the server's own time per request is sub-millisecond on the hot path
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)




def _child(cache: dict[Any, Any], metric: Any, key: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached under ``key``."""
    child = cache.get(key)
    if child is None:
        child = cache[key] = metric.labels(*labels)
    return child


class Metrics:
    """Every series of one runtime, in its own registry (a test process runs many servers)."""

    def __init__(self, pool: Callable[[], Pool | None], config: Callable[[], ProxyConfig],
                 backend_up: Callable[[], bool | None] = lambda: None) -> None:
        """``pool``: the pool serving now (None before start); ``config``: the configuration now;
        ``backend_up``: whether the shared state backend (Redis) answers (None: no shared backend)."""
        self._pool = pool
        self._config = config
        r = self.registry = CollectorRegistry(auto_describe=False)
        self.requests = CounterSeries("hulumanage_requests", "Chat requests answered, by approach chain, model, HTTP status",
                                ("approach", "model", "status"), registry=r)
        self.duration = HistogramSeries("hulumanage_request_duration_seconds", "Chat request time, first byte in to last out",
                                  ("approach", "model"), registry=r)
        self.ttft = HistogramSeries("hulumanage_time_to_first_token_seconds", "Streams: time to the first chunk",
                              ("approach", "model"), registry=r)
        self.overhead = HistogramSeries("hulumanage_overhead_seconds", "The server's own time: total minus upstream time",
                                  buckets=OVERHEAD_BUCKETS, registry=r)
        self.provider_requests = CounterSeries("hulumanage_provider_requests", "Upstream attempts, by outcome (ok or the "
                                         "failure class)", ("provider", "model", "outcome"), registry=r)
        self.provider_latency = HistogramSeries("hulumanage_provider_latency_seconds", "Successful upstream attempts' time",
                                          ("provider",), registry=r)
        self.tokens = CounterSeries("hulumanage_tokens", "Tokens the providers reported, prompt or completion",
                              ("provider", "model", "type"), registry=r)
        self.cost = CounterSeries("hulumanage_cost_usd", "What the answers cost, in US dollars", ("provider", "model"),
                            registry=r)
        self.rate_limited = CounterSeries("hulumanage_rate_limited", "Requests refused by a limit, a budget or auth",
                                    ("reason",), registry=r)
        self.cache_requests = CounterSeries("hulumanage_cache_requests", "Cache lookups by result", ("result",), registry=r)
        self.cache_saved = CounterSeries("hulumanage_cache_saved_usd", "What cache hits would have cost, in US dollars",
                                   registry=r)
        for reason in RATE_LIMIT_REASONS:
            self.rate_limited.labels(reason)
        for result in CACHE_RESULTS:
            self.cache_requests.labels(result)
        r.register(_StateCollector(pool, backend_up))
        self.clients: _ClientSeries | None = None
        self._children: dict[Any, Any] = {}
        self._series: dict[tuple[tuple[str, ...], str], _RequestSeries] = {}
        self._tokens: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._known: set[str] = set()
        self._known_for: object = None
        # the JSON summary's plain counts
        self.total = self.streaming = self.errors = self.generated = self.hits = self.misses = 0
        self.latency_sum = 0.0

    # -- labels ------------------------------------------------------------------------

    def model_label(self, model: object) -> str:
        """``model`` when the configuration names it (a model_map key or value, a provider's model), else ``other``."""
        pool = self._pool()
        if pool is not self._known_for:
            self._known_for = pool
            self._known = set()
            for provider in () if pool is None else pool.providers:
                self._known.update(provider.config.model_map)
                self._known.update(provider.config.model_map.values())
                self._known.update(provider.state.models)
        if not isinstance(model, str):
            return OTHER
        if model in self._known:
            return model
        for provider in () if pool is None else pool.providers:  # learned by a health check since
            if model in provider.state.models:
                self._known.add(model)
                return model
        return OTHER

    # -- from a request's ticket ---------------------------------------------------------

    def attempted(self, provider: str, model: str, outcome: Outcome, seconds: float) -> None:
        """One upstream attempt ended."""
        if outcome.ok:
            result = "ok"
            _child(self._children, self.provider_latency, ("latency", provider), provider).observe(seconds)
        else:
            result = "not_counted" if outcome.failure is None else outcome.failure.value
        label = self.model_label(model)
        _child(self._children, self.provider_requests, ("attempt", provider, label, result),
               provider, label, result).inc()

    def record(self, provider: str, model: str, prompt: int, completion: int) -> None:
        """One upstream answer's token usage."""
        label = self.model_label(model)
        key = (provider, label)  # by label: the cache is as bounded as the series
        children = self._tokens.get(key)
        if children is None:
            children = (self.tokens.labels(provider, label, "prompt"), self.tokens.labels(provider, label, "completion"))
            self._tokens[key] = children
        if prompt:
            children[0].inc(prompt)
        if completion:
            children[1].inc(completion)
            self.generated += completion

    def spent(self, provider: str | None, model: str | None, usd: float) -> None:
        """``usd`` spent on answers of ``provider`` (None: an answer nobody named)."""
        if usd > 0:
            name, label = provider or OTHER, self.model_label(model)
            _child(self._children, self.cost, ("cost", name, label), name, label).inc(usd)

    def finished(self, chain: tuple[str, ...], model: object, stream: bool, status: int, ttft: float | None,
                 total: float, upstream: float) -> None:
        """A request's response has ended (``upstream``: seconds spent in upstream attempts)."""
        label = self.model_label(model)
        key = (chain, label)
        series = self._series.get(key)
        if series is None:
            approach = "&".join(chain) or UNRESOLVED
            series = self._series[key] = _RequestSeries(self, approach, label)
        requests = series.requests.get(status)
        if requests is None:
            requests = series.requests[status] = self.requests.labels(series.approach, label, str(status))
        requests.inc()
        series.duration.observe(total)
        if ttft is not None:
            series.ttft.observe(ttft)
        self.overhead.observe(max(0.0, total - upstream))
        self.total += 1
        self.latency_sum += total
        if stream:
            self.streaming += 1
        if status >= 400:
            self.errors += 1

    def cached(self, result: str, saved_usd: float) -> None:
        """A cache lookup's result (hit, miss, bypass) and, on a hit, what it saved."""
        if result not in CACHE_RESULTS:
            return
        _child(self._children, self.cache_requests, ("cache", result), result).inc()
        if result == "hit":
            self.hits += 1
            if saved_usd > 0:
                self.cache_saved.inc(saved_usd)
        elif result == "miss":
            self.misses += 1

    def limited(self, reason: str) -> None:
        """A request refused by a limit (``rpm``, ``tpm``, ``parallel``), a ``budget`` or ``auth``."""
        if reason in RATE_LIMIT_REASONS:
            _child(self._children, self.rate_limited, ("limited", reason), reason).inc()

    def client(self, client_id: str, status: int, prompt: int, completion: int, usd: float) -> None:
        """The per-client series (``metrics.per_client``), registered the first time they are used."""
        if self.clients is None:
            self.clients = _ClientSeries(self.registry)
        self.clients.count(client_id, status, prompt, completion, usd)

    @property
    def per_client(self) -> bool:
        """Whether the configuration now asks for per-client series."""
        return self._config().metrics.per_client

    def summary(self) -> dict[str, Any]:
        """The request part of the JSON summary (``GET /metrics`` with ``Accept: application/json``)."""
        looked_up = self.hits + self.misses
        return {
            "performance": {
                "total_requests": self.total,
                "streaming_requests": self.streaming,
                "non_streaming_requests": self.total - self.streaming,
                "total_tokens_generated": self.generated,
                "average_latency_seconds": round(self.latency_sum / self.total, 6) if self.total else 0.0,
                "errors": self.errors,
            },
            "cache": {"hits": self.hits, "misses": self.misses,
                      "hit_rate": round(self.hits / looked_up, 6) if looked_up else 0.0},
        }


class _RequestSeries:
    """The children of one (approach chain, model label): requests by status, duration, time to first token."""

    __slots__ = ("approach", "duration", "requests", "ttft")

    def __init__(self, metrics: Metrics, approach: str, label: str) -> None:
        self.approach = approach
        self.requests: dict[int, Any] = {}
        self.duration = metrics.duration.labels(approach, label)
        self.ttft = metrics.ttft.labels(approach, label)


class _ClientSeries:
    """``hulumanage_client_{requests,tokens,cost_usd}_total{client,...}``: only with ``metrics.per_client``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = CounterSeries("hulumanage_client_requests", "Chat requests by client key id and HTTP status",
                                ("client", "status"), registry=registry)
        self.tokens = CounterSeries("hulumanage_client_tokens", "Tokens by client key id, prompt or completion",
                              ("client", "type"), registry=registry)
        self.cost = CounterSeries("hulumanage_client_cost_usd", "Spend by client key id, in US dollars", ("client",),
                            registry=registry)
        self._children: dict[Any, Any] = {}

    def count(self, client: str, status: int, prompt: int, completion: int, usd: float) -> None:
        children = self._children
        _child(children, self.requests, ("request", client, status), client, str(status)).inc()
        if prompt:
            _child(children, self.tokens, ("prompt", client), client, "prompt").inc(prompt)
        if completion:
            _child(children, self.tokens, ("completion", client), client, "completion").inc(completion)
        if usd > 0:
            _child(children, self.cost, ("cost", client), client).inc(usd)


class _StateCollector:
    """What mirrors the pool's state, read at scrape time: providers up, circuits, in flight, queue, failovers."""

    def __init__(self, pool: Callable[[], Pool | None], backend_up: Callable[[], bool | None]) -> None:
        self._pool = pool
        self._backend_up = backend_up
        # failovers are counted by each provider's state, which a reload may replace: keep a running total
        self._failovers: dict[str, float] = {}
        self._seen: dict[str, tuple[ProviderState, int]] = {}

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hulumanage_provider_up", "1 when the provider is healthy, else 0", labels=["provider"])
        circuit = GaugeMetricFamily("hulumanage_circuit_open", "1 when a circuit of the provider (its own or a "
                                    "model's) is open or half-open, else 0", labels=["provider"])
        in_flight = GaugeMetricFamily("hulumanage_in_flight", "Upstream requests in flight", labels=["provider"])
        failovers = CounterMetricFamily("hulumanage_failovers", "Requests that left this provider for another one",
                                        labels=["provider"])
        pool = self._pool()
        waiting = 0
        if pool is not None:
            waiting = pool.waiting
            for provider in pool.providers:
                state = provider.state
                up.add_metric([provider.name], 1.0 if state.healthy else 0.0)
                circuit.add_metric([provider.name], 1.0 if state.circuits_open() else 0.0)
                in_flight.add_metric([provider.name], float(state.in_flight))
                seen_state, seen = self._seen.get(provider.name, (None, 0))
                grown = state.failovers - seen if seen_state is state else state.failovers
                self._failovers[provider.name] = self._failovers.get(provider.name, 0.0) + grown
                self._seen[provider.name] = (state, state.failovers)
        for name, total in self._failovers.items():
            failovers.add_metric([name], total)
        yield up
        yield circuit
        yield in_flight
        yield failovers
        yield GaugeMetricFamily("hulumanage_queue_waiting", "Requests waiting for a place in the queue", value=waiting)
        backend = self._backend_up()
        if backend is not None:
            yield GaugeMetricFamily("hulumanage_state_backend_up", "1 when the shared state backend (Redis) answers, "
                                    "else 0 (on_redis_down applies)", value=1.0 if backend else 0.0)
