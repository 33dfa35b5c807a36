"""The request series' own counters and histograms expose what prometheus-client's would.

``proxy_plugin.metric_series`` keeps its per-request series in plain numbers (no lock per call)
and turns them into samples when scraped; a dashboard must not see the difference. Each
test feeds the same values to prometheus-client's ``Counter`` / ``Histogram`` and to ours
and compares the parsed exposition (``_created`` timestamps aside: they are creation times).
"""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.parser import text_string_to_metric_families

from proxy_plugin.metric_series import CounterSeries, HistogramSeries
from proxy_plugin.metrics import OVERHEAD_BUCKETS


def _samples(registry: CollectorRegistry) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
    out = []
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            value = 0.0 if sample.name.endswith("_created") else sample.value
            out.append((family.type, sample.name, tuple(sorted(sample.labels.items())), value))
    return sorted(out)


def test_a_labelled_counter_matches_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Counter("demo_requests", "Requests", ("model", "status"), registry=theirs)
    series = CounterSeries("demo_requests", "Requests", ("model", "status"), registry=ours)
    for model, status, amount in [("a", "200", 1), ("a", "200", 2.5), ("b", "500", 1), ("a", "429", 0)]:
        reference.labels(model, status).inc(amount)
        series.labels(model, status).inc(amount)
    assert _samples(ours) == _samples(theirs)
    assert ("counter", "demo_requests_total", (("model", "a"), ("status", "200")), 3.5) in _samples(ours)


def test_an_unlabelled_counter_exists_from_the_start() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Counter("demo_saved", "Saved", registry=theirs)
    series = CounterSeries("demo_saved", "Saved", registry=ours)
    assert _samples(ours) == _samples(theirs)
    reference.inc(0.25)
    series.inc(0.25)
    assert _samples(ours) == _samples(theirs)


@pytest.mark.parametrize("buckets", [Histogram.DEFAULT_BUCKETS, OVERHEAD_BUCKETS])
def test_a_histogram_matches_prometheus_client(buckets: tuple[float, ...]) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("demo_seconds", "Time", ("model",), registry=theirs, buckets=buckets)
    series = HistogramSeries("demo_seconds", "Time", ("model",), registry=ours, buckets=buckets)
    values = [0.0, 0.0001, 0.00025, 0.0003, 0.005, 0.0051, 0.1, 0.99, 1.0, 7.5, 42.0, math.inf]
    for i, value in enumerate(values):
        model = "a" if i % 3 else "b"
        reference.labels(model).observe(value)
        series.labels(model).observe(value)
    assert _samples(ours) == _samples(theirs)
    # a value on a bucket's bound counts in that bucket (le: less or equal)
    bucket = [s for s in _samples(ours) if s[1] == "demo_seconds_bucket" and ("le", "1.0") in s[2] and ("model", "a") in s[2]]
    assert bucket and bucket[0][3] == sum(1 for i, v in enumerate(values) if i % 3 and v <= 1.0)


def test_created_samples_follow_prometheus_clients_switch() -> None:
    registry = CollectorRegistry()
    CounterSeries("demo_c", "C", registry=registry).inc()
    HistogramSeries("demo_h", "H", registry=registry).observe(0.1)
    prometheus_metrics.disable_created_metrics()
    try:
        names = {s[1] for s in _samples(registry)}
    finally:
        prometheus_metrics.enable_created_metrics()
    assert not any(name.endswith("_created") for name in names)
    assert {"demo_c_total", "demo_h_count", "demo_h_sum"} <= names
    assert any(name.endswith("_created") for name in {s[1] for s in _samples(registry)})
