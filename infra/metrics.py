"""Prometheus metrics of the pipeline (extra ``metrics``): definitions, and ``/metrics`` on a port.

The processor, the sink and the web app each create one ``LineageMetrics`` and update it; names
follow Prometheus conventions (``lineage_<component>_<what>_<unit>``, counters end in
``_total``). docs/operations.md lists them; infra/prometheus/alerts.yml and infra/grafana/ use them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lineage.config import Settings

NAMESPACE = "lineage"
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STAGES = ("decode", "authenticate", "policy", "checkpoint", "insert")
"""Values of the ``stage`` label: the processor's timed stages, then the sink's ClickHouse insert.

Order and chain are not among them: the pipeline orders and chains each event as its seal releases
it, interleaved with the policy check, so they have no batch of their own to time (docs/operations.md).
"""


class _CheckpointAge(Collector):
    """``lineage_checkpoint_age_seconds{partition}``: seconds since each partition's last checkpoint."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.last: dict[int, float] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{NAMESPACE}_checkpoint_age_seconds",
            "Seconds since the partition's last signed checkpoint was published.",
            labels=["partition"],
        )
        now = self.clock()
        with self.lock:
            for partition, at in sorted(self.last.items()):
                family.add_metric([str(partition)], max(now - at, 0.0))
        yield family


class LineageMetrics:
    """Every metric, registered on ``registry`` (a fresh one per instance unless given)."""

    def __init__(
        self,
        component: str,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        version: str = "0.1.0",
    ) -> None:
        self.component = component
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ns = NAMESPACE

        self.build_info = Gauge(
            f"{ns}_build_info",
            "Always 1; labels say what runs.",
            ["component", "version"],
            registry=r,
        )
        self.build_info.labels(component, version).set(1)

        # Counters
        self.records_in = Counter(
            f"{ns}_processor_records_in_total",
            "Kafka records the processor read from the events topic (sealed batches; events and "
            "seals in the per-event framing).",
            ["partition"],
            registry=r,
        )
        self.events_in = Counter(
            f"{ns}_processor_events_in_total",
            "Execution events the processor decoded from the events topic (replays excluded).",
            ["partition"],
            registry=r,
        )
        self.entries_out = Counter(
            f"{ns}_processor_entries_out_total",
            "Chain entries the processor published (replays included).",
            ["partition"],
            registry=r,
        )
        self.sink_rows = Counter(
            f"{ns}_sink_rows_inserted_total",
            "Rows the sink inserted into ClickHouse, by table.",
            ["table"],
            registry=r,
        )
        self.violations = Counter(
            f"{ns}_violations_total",
            "Violations raised, by type and severity.",
            ["violation_type", "severity"],
            registry=r,
        )
        self.quarantined = Counter(
            f"{ns}_quarantined_records_total",
            "Records sent to quarantine, by reason code.",
            ["reason_code"],
            registry=r,
        )
        self.seal_failures = Counter(
            f"{ns}_seal_failures_total",
            "Seals that did not authenticate (bad signature, unknown key, equivocation, unsealed).",
            ["reason"],
            registry=r,
        )
        self.retries = Counter(
            f"{ns}_retries_total",
            "Retries of an operation after a transient failure (ClickHouse insert, publish).",
            ["operation"],
            registry=r,
        )
        self.duplicates = Counter(
            f"{ns}_processor_duplicates_total",
            "Events dropped as exact redeliveries.",
            registry=r,
        )
        self.bridge_failed = Counter(
            f"{ns}_otel_bridge_failed_events_total",
            "Events the OpenTelemetry bridge could not hand to its emitter.",
            ["reason"],
            registry=r,
        )
        self._bridge_seen: dict[str, int] = {}

        # Gauges
        self.consumer_lag = Gauge(
            f"{ns}_consumer_lag_records",
            "Records on a partition not yet committed by the consumer group.",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.open_workflows = Gauge(
            f"{ns}_open_workflows",
            "Workflows this worker chained a start of and no completion of yet (the most recent "
            "ones, up to a cap).",
            registry=r,
        )
        self.reorder_waiting = Gauge(
            f"{ns}_reorder_buffer_events",
            "Events waiting in the reorder buffer for their causal parent.",
            ["partition"],
            registry=r,
        )
        self.contained_workflows = Counter(
            f"{ns}_contained_workflows_total",
            "Workflows contained after a critical violation.",
            registry=r,
        )
        self._checkpoints = _CheckpointAge(clock)
        r.register(self._checkpoints)
        self.checkpoint_bound_s = Gauge(
            f"{ns}_checkpoint_age_bound_seconds",
            "Configured bound on checkpoint age (alerting threshold reference).",
            registry=r,
        )

        # Histograms
        self.batch_size = Histogram(
            f"{ns}_batch_size_records",
            "Records per batch handled by a stage.",
            ["stage"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            f"{ns}_stage_duration_seconds",
            "Wall time a stage spent on one batch.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def checkpoint_published(self, partition: int, at: float | None = None) -> None:
        """Record that ``partition`` got a signed checkpoint now (or at ``at``, unix seconds)."""
        with self._checkpoints.lock:
            self._checkpoints.last[partition] = self._checkpoints.clock() if at is None else at

    def timed(self, stage: str, records: int) -> _Timer:
        """``with metrics.timed("chain", len(batch)):`` observes batch size and stage latency."""
        return _Timer(self, stage, records)

    def observe_bridge(self, failures: dict[str, int]) -> None:
        """Bring an OpenTelemetry bridge's failure counts (``BridgeReport.failures``) up to date."""
        for reason, n in failures.items():
            seen = self._bridge_seen.get(reason, 0)
            if n > seen:
                self.bridge_failed.labels(reason).inc(n - seen)
                self._bridge_seen[reason] = n


class _Timer:
    def __init__(self, metrics: LineageMetrics, stage: str, records: int) -> None:
        self.metrics, self.stage, self.records = metrics, stage, records
        self.start = 0.0

    def __enter__(self) -> _Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.metrics.stage_latency.labels(self.stage).observe(time.perf_counter() - self.start)
        self.metrics.batch_size.labels(self.stage).observe(self.records)


def metric_names(metrics: LineageMetrics) -> set[str]:
    """Every sample name ``metrics`` exposes (``_total``, ``_bucket``, ``_sum``, ``_count`` …)."""
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def serve_metrics(settings: Settings, metrics: LineageMetrics) -> Any | None:
    """Serve ``/metrics`` on ``LINEAGE_METRICS_PORT`` (address ``LINEAGE_METRICS_ADDR``).

    Returns the server (``shutdown()`` stops it), or None when no port is configured.
    """
    if settings.metrics_port is None:
        return None
    server, _thread = start_http_server(
        settings.metrics_port, addr=settings.metrics_addr, registry=metrics.registry
    )
    return server


EMBEDDED_PROCESSOR_PORT_OFFSET = 1
"""``lineage up`` serves the web app's (and its in-process sink's) metrics on LINEAGE_METRICS_PORT
and starts its processor child with LINEAGE_METRICS_PORT + this."""


def child_metrics_env(settings: Settings, offset: int) -> dict[str, str]:
    """``LINEAGE_METRICS_PORT`` for a child process on the same host: the parent's port + ``offset``.

    Empty when the parent serves no metrics (the child then inherits none either, see
    ``infra.embedded.child_env``, which copies the parent's environment first).
    """
    if settings.metrics_port is None:
        return {}
    return {"LINEAGE_METRICS_PORT": str(settings.metrics_port + offset)}
