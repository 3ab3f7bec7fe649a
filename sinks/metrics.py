"""The sink's Prometheus figures: rows inserted per table, retries, quarantine by reason, insert time.

The process that runs a sink calls ``install(LineageMetrics(...))``; ``ClickHouseSink.step`` calls
``insert(self, parts, counts)`` in place of ``self.inserter.insert(parts)``. With nothing installed
``insert`` is exactly ``sink.inserter.insert``. Quarantine counted here is what the sink itself
refused (``SINK_REJECTED``, ``SINK_UNDECODABLE``); the processor counts its own.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # prometheus-client is an optional extra; nothing here needs it at import
    from infra.metrics import LineageMetrics

TABLES = {
    "entries": "lineage_entries",
    "violations": "violations",
    "checkpoints": "checkpoints",
    "quarantine": "quarantine",
}
"""Batch key -> ClickHouse table (the ``table`` label of ``lineage_sink_rows_inserted_total``)."""
RETRY_OPERATION = "clickhouse_insert"


class SinkMetrics:
    """Updates one ``LineageMetrics`` from the batches the sinks insert."""

    def __init__(self, metrics: LineageMetrics) -> None:
        self.metrics = metrics
        self._retries_seen: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def insert(self, sink: Any, parts: list[Any], counts: dict[str, int]) -> list[Any]:
        """Insert ``parts`` with ``sink.inserter``; count them only once ClickHouse acknowledged.

        ``counts`` are the batch's rows per table key (``entries``, ``violations``, …). Retries are
        read from ``sink.stats.retries`` (the sink counts them before calling again), so an outage
        shows as retries first and rows once the batch lands. Returns the refused records
        (quarantine records, counted by reason).
        """
        start = time.perf_counter()
        refused: list[Any] = sink.inserter.insert(parts)
        self.observe(sink, counts, refused, time.perf_counter() - start)
        return refused

    def observe(
        self, sink: Any, counts: dict[str, int], refused: list[Any], seconds: float
    ) -> None:
        m = self.metrics
        rows = 0
        for key, n in counts.items():
            if n:
                m.sink_rows.labels(TABLES.get(key, key)).inc(n)
                rows += n
        for q in refused:
            m.quarantined.labels(q.reason_code.value).inc()
        retries = int(sink.stats.retries)
        seen = self._retries_seen.get(sink, 0)
        if retries > seen:
            m.retries.labels(RETRY_OPERATION).inc(retries - seen)
        self._retries_seen[sink] = retries
        m.stage_latency.labels("insert").observe(seconds)
        m.batch_size.labels("insert").observe(rows)


_installed: SinkMetrics | None = None


def install(metrics: LineageMetrics | None) -> SinkMetrics | None:
    """Make ``insert`` update ``metrics`` (None: stop updating). Returns what is installed."""
    global _installed
    _installed = SinkMetrics(metrics) if metrics is not None else None
    return _installed


def insert(sink: Any, parts: list[Any], counts: dict[str, int]) -> list[Any]:
    """The sink's hook: ``sink.inserter.insert(parts)``, observed when metrics are installed."""
    obs = _installed
    if obs is None:
        result: list[Any] = sink.inserter.insert(parts)
        return result
    return obs.insert(sink, parts, counts)


def start(settings: Any) -> Any | None:
    """For a sink process of its own: a ``LineageMetrics("sink")`` served on LINEAGE_METRICS_PORT
    and installed. Returns the server (``shutdown()`` stops it), or None when no port is set."""
    if settings.metrics_port is None:
        return None
    from infra.metrics import LineageMetrics, serve_metrics

    metrics = LineageMetrics("sink")
    install(metrics)
    return serve_metrics(settings, metrics)
