"""ClickHouse sink: consume chain entries, violations, checkpoints and quarantine; insert, then commit."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from lineage import codec
from lineage.config import Settings
from lineage.errors import DecodeError
from lineage.model import ChainEntry, Checkpoint, QuarantineRecord, Violation
from sinks import metrics as sink_metrics
from sinks import rows, schema
from sinks.errors import ClickHouseUnavailable

log = logging.getLogger("lineage.sink")


def open_client(settings: Settings) -> Any:
    """A clickhouse-connect client for the configured server, or chDB in the data dir."""
    import clickhouse_connect

    if settings.clickhouse_url:
        password = (
            settings.clickhouse_password.get_secret_value() if settings.clickhouse_password else ""
        )
        return clickhouse_connect.get_client(dsn=settings.clickhouse_url, password=password)
    settings.chdb_path.mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)


@dataclass
class SinkStats:
    rows: dict[str, int] = field(
        default_factory=lambda: {"entries": 0, "violations": 0, "checkpoints": 0, "quarantine": 0}
    )
    batches: int = 0
    retries: int = 0
    outage_s: float = 0.0
    lag: int = 0
    last_error: str = ""


class ClickHouseSink:
    """Batches by size and time; inserts each table; commits Kafka offsets only after ClickHouse acked."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        client: Any,
        *,
        database: str | None = None,
        group: str | None = None,
        on_outage: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.database = database or settings.clickhouse_database
        self.lock = threading.Lock()
        self.stats = SinkStats()
        self.on_outage = on_outage or (lambda msg: log.warning("%s", msg))
        t = settings.topics
        self._decoders: dict[str, tuple[Any, Callable[[dict[str, Any]], Any], str]] = {
            t.chain: (codec.load("chain_entry"), ChainEntry.from_record, "entries"),
            t.violations: (codec.load("violation"), Violation.from_record, "violations"),
            t.checkpoints: (codec.load("checkpoint"), Checkpoint.from_record, "checkpoints"),
            t.quarantine: (codec.load("quarantine"), QuarantineRecord.from_record, "quarantine"),
        }
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group or settings.sink_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": settings.heartbeat_interval_ms,
                "fetch.wait.max.ms": settings.fetch_wait_ms,
                "logger": logging.getLogger("lineage.sink.kafka"),
            }
        )
        self.consumer.subscribe(list(self._decoders))
        self._monitor_conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group or settings.sink_group,
            "enable.auto.commit": False,
            "logger": logging.getLogger("lineage.sink.kafka"),
        }
        self._monitor: Consumer | None = None
        self._monitor_lock = threading.Lock()
        self._fetched: dict[tuple[str, int], int] = {}
        with self.lock:
            schema.migrate(client, self.database)

    # -- one batch -------------------------------------------------------

    def _collect(self) -> tuple[dict[str, list[Any]], list[Any]]:
        deadline = time.monotonic() + self.settings.sink_batch_ms / 1000
        batch: dict[str, list[Any]] = {
            "entries": [],
            "violations": [],
            "checkpoints": [],
            "quarantine": [],
        }
        msgs: list[Any] = []
        limit = self.settings.sink_batch_rows
        while len(msgs) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for m in self.consumer.consume(min(limit - len(msgs), 5000), left):
                error = m.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", error)
                    continue
                msgs.append(m)
                self._fetched[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0) + 1
                sch, build, table = self._decoders[str(m.topic())]
                try:
                    batch[table].append(build(sch.decode_body(m.value() or b"")))
                except (DecodeError, ValueError, TypeError, KeyError) as exc:
                    log.error(
                        "undecodable record on %s[%d]@%d: %s",
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        exc,
                    )
        return batch, msgs

    def _insert(self, batch: dict[str, list[Any]]) -> None:
        plan: list[tuple[str, tuple[str, ...], Callable[[Any], tuple[Any, ...]], list[Any]]] = [
            ("lineage_entries", rows.ENTRY_COLUMNS, rows.entry_row, batch["entries"]),
            ("violations", rows.VIOLATION_COLUMNS, rows.violation_row, batch["violations"]),
            ("checkpoints", rows.CHECKPOINT_COLUMNS, rows.checkpoint_row, batch["checkpoints"]),
            ("quarantine", rows.QUARANTINE_COLUMNS, rows.quarantine_row, batch["quarantine"]),
        ]
        for table, columns, to_row, items in plan:
            if not items:
                continue
            data = [to_row(x) for x in items]
            try:
                with self.lock:
                    self.client.insert(
                        table, data, column_names=list(columns), database=self.database
                    )
            except Exception as exc:
                raise ClickHouseUnavailable(
                    f"insert into {self.database}.{table} failed: {exc}"
                ) from exc

    def _commit(self, msgs: list[Any]) -> None:
        last: dict[tuple[str, int], int] = {}
        for m in msgs:
            last[(m.topic(), m.partition())] = m.offset()
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        self.consumer.commit(offsets=offsets, asynchronous=False)

    def step(self, stop: threading.Event | None = None) -> int:
        """Collect one batch, insert it (retrying with backoff until acked), commit; returns rows.

        If ``stop`` is set during an outage the batch is left uncommitted: it is redelivered to
        the next sink, and the tables' deduplication absorbs any part that did land.
        """
        batch, msgs = self._collect()
        if not msgs:
            return 0
        delay = 0.1
        outage_started: float | None = None
        while True:
            try:
                sink_metrics.insert(self, batch)
                break
            except ClickHouseUnavailable as exc:
                if outage_started is None:
                    outage_started = time.monotonic()
                self.stats.retries += 1
                self.stats.last_error = str(exc)
                self.on_outage(
                    f"ClickHouse unavailable, retrying the same batch in {delay:.1f} s: {exc}"
                )
                if (stop or threading.Event()).wait(delay * random.uniform(0.5, 1.5)):
                    self.on_outage("sink stopping during the outage; the batch stays uncommitted")
                    return 0
                delay = min(delay * 2, 5.0)
        if outage_started is not None:
            self.stats.outage_s += time.monotonic() - outage_started
            self.on_outage(
                f"ClickHouse is back after {time.monotonic() - outage_started:.1f} s; batch inserted"
            )
        self._commit(msgs)
        self.stats.batches += 1
        for name, items in batch.items():
            self.stats.rows[name] += len(items)
        return len(msgs)

    def lag(self) -> int:
        """Records on the subscribed topics not yet committed by the sink's consumer group.

        Safe to call from any thread: it asks through a client of its own, because every call
        on the consuming client blocks while the sink thread waits in ``consume()``.
        """
        with self._monitor_lock:
            if self._monitor is None:
                self._monitor = Consumer(self._monitor_conf)
            mon = self._monitor
            topics = mon.list_topics(timeout=5).topics
            tps = [TopicPartition(t, p) for t in self._decoders for p in topics[t].partitions]
            committed = {(c.topic, c.partition): c.offset for c in mon.committed(tps, timeout=5)}
            fetched = dict(self._fetched)
            total = 0
            for tp in tps:
                low, high = mon.get_watermark_offsets(tp, timeout=5, cached=False)
                # Tansu reports the base offset of the last record batch + 1 as the high
                # watermark; what the sink already fetched proves the log is at least that long.
                end = max(high, fetched.get((tp.topic, tp.partition), 0))
                done = committed[(tp.topic, tp.partition)]
                total += max(0, end - (done if done >= 0 else low))
        self.stats.lag = total
        return total

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set."""
        while not stop.is_set():
            self.step(stop)

    def close(self) -> None:
        self.consumer.close()
        with self._monitor_lock:
            if self._monitor is not None:
                self._monitor.close()
                self._monitor = None
