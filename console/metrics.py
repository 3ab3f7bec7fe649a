"""The web app's Prometheus figures: what the HealthMonitor samples, published after each sample.

The Health dashboard and ``/metrics`` then show the same numbers: consumer lag per group, topic
and partition (the processor's group on the events topic, the sink's group on the chain topic)
and checkpoint age per partition (seconds since the partition's checkpoints topic last grew).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # prometheus-client is an optional extra; nothing here needs it at import
    from infra.metrics import LineageMetrics


def publish(
    metrics: LineageMetrics, settings: Any, t: float, partitions: dict[int, dict[str, float]]
) -> None:
    """Set the lag gauges and checkpoint ages of one HealthMonitor sample taken at ``t``."""
    topics = settings.topics
    for p, row in partitions.items():
        part = str(p)
        if "processor_lag" in row:
            metrics.consumer_lag.labels(settings.processor_group, topics.events, part).set(
                row["processor_lag"]
            )
        if "sink_lag" in row:
            metrics.consumer_lag.labels(settings.sink_group, topics.chain, part).set(
                row["sink_lag"]
            )
        if "checkpoint_age_s" in row:
            metrics.checkpoint_published(p, at=t - row["checkpoint_age_s"])


def start(settings: Any, component: str) -> tuple[LineageMetrics | None, Any | None]:
    """A ``LineageMetrics(component)`` served on LINEAGE_METRICS_PORT, and its server.

    (None, None) when no port is configured. The in-process sink of ``lineage up`` reports into
    the same registry (``sinks.metrics.install``): one process, one endpoint.
    """
    if settings.metrics_port is None:
        return None, None
    from infra.metrics import LineageMetrics, serve_metrics

    metrics = LineageMetrics(component)
    return metrics, serve_metrics(settings, metrics)
