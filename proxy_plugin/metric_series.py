"""Counters and histograms kept in plain numbers, exposed as prometheus-client's own classes would be.

The request series of :mod:`proxy_plugin.metrics` are :class:`CounterSeries` and
:class:`HistogramSeries`: numbers updated on the event loop (no lock, no checks per call),
turned into the same exposition as ``prometheus-client``'s ``Counter`` and ``Histogram``
(``_total``, ``_bucket``, ``_count``, ``_sum``, ``_created``) when scraped.
prometheus-client's own classes take a lock and run their checks on every ``inc`` and
``observe`` (about 1 µs each, some 6 µs a request); everything here runs on the one loop
thread, scrapes included.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString


def _created() -> bool:
    """Whether ``_created`` samples are exposed, as prometheus-client decides it for its own series
    (``PROMETHEUS_DISABLE_CREATED_SERIES``, ``disable_created_metrics()``)."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


class _Count:
    """One labelled counter: a number."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _Buckets:
    """One labelled histogram: a count per bucket (not cumulative until scraped) and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # the first bucket whose upper bound is at or above it (the last one is +Inf)
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class CounterSeries:
    """A counter family with labels, exposed as ``prometheus_client.Counter`` would expose it."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = None) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.children: dict[tuple[str, ...], _Count] = {}
        if not self.labelnames:
            self.children[()] = _Count()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> _Count:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _Count()
        return child

    def inc(self, amount: float = 1.0) -> None:
        """The unlabelled counter's ``inc``."""
        self.children[()].value += amount

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        created = _created()
        for values, child in list(self.children.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            metric.add_sample(self.name + "_total", labels, child.value)
            if created:
                metric.add_sample(self.name + "_created", labels, child.created)
        yield metric


class HistogramSeries:
    """A histogram family with labels, exposed as ``prometheus_client.Histogram`` would expose it."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = None,
                 buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        bounds = sorted(float(b) for b in buckets)
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        self._les = tuple(floatToGoString(b) for b in bounds)
        self.children: dict[tuple[str, ...], _Buckets] = {}
        if not self.labelnames:
            self.children[()] = _Buckets(self.bounds)
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> _Buckets:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _Buckets(self.bounds)
        return child

    def observe(self, amount: float) -> None:
        """The unlabelled histogram's ``observe``."""
        self.children[()].observe(amount)

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "histogram")
        name, created = self.name, _created()
        for values, child in list(self.children.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            total = 0
            for le, count in zip(self._les, child.counts, strict=True):
                total += count
                metric.add_sample(name + "_bucket", {**labels, "le": le}, float(total))
            metric.add_sample(name + "_count", labels, float(total))
            metric.add_sample(name + "_sum", labels, child.sum)
            if created:
                metric.add_sample(name + "_created", labels, child.created)
        yield metric
