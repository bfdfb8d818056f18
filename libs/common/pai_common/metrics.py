"""Prometheus metrics every service exposes on /metrics, and the helper for state-derived gauges.

Names follow Prometheus' conventions: base units (seconds, bytes), ``_total`` on counters, ratios
(0..1) rather than percents, and no ``job`` or ``instance`` label of our own (Prometheus sets those
from the scrape target), nor ``service`` or ``process``, the labels `pai up`'s scrape targets carry.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

# Seconds: a message handled or an RPC answered in a few milliseconds up to a stuck one.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds a job waits: scheduling and start-up take from under a second to hours.
WAIT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)

MESSAGES = Counter(
    "pai_bus_messages_total",
    "Messages handled by a durable consumer, by outcome (ok, duplicate, ignored, retried, dead_lettered).",
    ["consumer", "type", "outcome"],
)
HANDLE_SECONDS = Histogram(
    "pai_bus_handle_seconds",
    "Time to handle one message, transaction and outbox included.",
    ["consumer", "type"],
    buckets=LATENCY_BUCKETS,
)
REDELIVERIES = Counter(
    "pai_bus_redeliveries_total",
    "Messages a durable consumer received again (an earlier delivery failed or was not acknowledged).",
    ["consumer"],
)
CONSUMER_PENDING = Gauge(
    "pai_bus_consumer_pending_messages",
    "Messages of its stream that a durable consumer has not been delivered yet (its lag).",
    ["consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "pai_bus_consumer_ack_pending_messages",
    "Messages delivered to a durable consumer and not acknowledged yet.",
    ["consumer"],
)
OUTBOX_BACKLOG = Gauge(
    "pai_outbox_backlog_messages",
    "Messages committed to the service's outbox and not published yet.",
)
RPC_REQUESTS = Counter(
    "pai_rpc_requests_total",
    "RPC requests answered, by endpoint and outcome (ok, or the error code of the answer).",
    ["endpoint", "outcome"],
)
RPC_SECONDS = Histogram(
    "pai_rpc_request_duration_seconds",
    "Time to answer one RPC request, by endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
BUILD_INFO = Gauge(
    "pai_build_info",
    "Always 1; the labels say which version and Python this process runs (the scrape target, which service).",
    ["version", "python"],
)


def set_build_info() -> None:
    try:
        version = metadata.version("pai-common")
    except metadata.PackageNotFoundError:
        version = "unknown"
    python = ".".join(str(p) for p in sys.version_info[:3])
    BUILD_INFO.labels(version, python).set(1)


# ---- gauges read from a service's own state ----------------------------------------------------------

Row = tuple[Sequence[str], float]


def gauge_family(name: str, doc: str, labels: Sequence[str], rows: Iterable[Row]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


def counter_family(name: str, doc: str, labels: Sequence[str], rows: Iterable[Row]) -> CounterMetricFamily:
    """A counter whose value is read from stored state (monotonic as long as that state only grows)."""
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


class SnapshotCollector(Collector):
    """Metric families computed from a service's state now and then, swapped in whole.

    A scrape sees one refresh or the next, never half of one, and series of things that went away
    (a removed node, an emptied VC) disappear with the refresh that no longer has them. ``empty`` builds
    the families with no samples, so that every metric is declared from the first scrape on.
    """

    def __init__(self, empty: Callable[[], list[Metric]]) -> None:
        self._families: list[Metric] = empty()

    def publish(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

    def describe(self) -> Iterator[Metric]:
        return iter(())


def register_snapshot(empty: Callable[[], list[Metric]]) -> SnapshotCollector:
    collector = SnapshotCollector(empty)
    REGISTRY.register(collector)
    return collector
