"""ClickHouse sink: consume chain entries, violations, checkpoints and quarantine; insert, then commit."""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from lineage import codec
from lineage.config import Settings
from lineage.errors import DecodeError, IntegrityError
from lineage.model import ChainEntry, Checkpoint, QuarantineReason, QuarantineRecord, Violation
from sinks import metrics as sink_metrics
from sinks import rows, schema
from sinks.errors import ClickHouseUnavailable, RejectedData
from stream_processors import chain_rows

# ClickHouse error codes that mean "not now" rather than "never": retried like a lost connection.
OUTAGE_CODES = frozenset(
    {3, 23, 32, 159, 164, 202, 203, 209, 210, 236, 241, 242, 252, 319, 335, 394, 425, 439, 999}
)
_CODE = re.compile(r"Code: (\d+)")
UNDECODABLE = QuarantineReason.SINK_UNDECODABLE
REJECTED = QuarantineReason.SINK_REJECTED

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


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says ClickHouse is unavailable (retry), False when it refused the data.

    Connection and timeout errors are outages, and so are the server's "try again" codes
    (``OUTAGE_CODES``) and any database error without a code; a coded server error (parse
    failures, type mismatches, oversized values) and errors building the rows are bad data.
    """
    from clickhouse_connect.driver import exceptions as chx

    if isinstance(exc, (OSError, ClickHouseUnavailable, chx.OperationalError)):
        return True
    if isinstance(exc, chx.DatabaseError):
        code = _CODE.search(str(exc))
        return code is None or int(code.group(1)) in OUTAGE_CODES
    return False


@dataclass
class Part:
    """What one Kafka record contributes to an insert: row containers, or rows of one table."""

    msg: Any
    table: str
    container: bytes = b""
    rows: list[tuple[Any, ...]] = field(default_factory=list)


_COLUMNS = {
    "lineage_entries": rows.ENTRY_COLUMNS,
    "violations": rows.VIOLATION_COLUMNS,
    "checkpoints": rows.CHECKPOINT_COLUMNS,
    "quarantine": rows.QUARANTINE_COLUMNS,
}


class Inserter:
    """Inserts a batch's parts: containers forwarded as bytes (``FORMAT Avro``), rows otherwise.

    An outage raises ClickHouseUnavailable (the caller retries the whole batch; replays collapse
    in the ReplacingMergeTree tables). When ClickHouse refuses the data, each record's part is
    inserted alone and the refused ones come back as quarantine records with the reason, so one
    bad record never blocks its partition.
    """

    def __init__(self, client: Any, database: str, lock: threading.Lock) -> None:
        self.client = client
        self.database = database
        self.lock = lock
        # Column types per table, asked once: without them clickhouse-connect runs a DESCRIBE
        # TABLE query before every insert (a chDB query as costly as the insert itself).
        self._types: dict[str, list[Any]] = {}

    def _raw(self, container: bytes) -> None:
        with self.lock:
            self.client.raw_insert(
                f"`{self.database}`.lineage_entries",
                list(chain_rows.COLUMNS),
                container,
                fmt="Avro",
            )

    def _rows(self, table: str, data: list[tuple[Any, ...]]) -> None:
        names = list(_COLUMNS[table])
        with self.lock:
            types = self._types.get(table)
            if types is None and hasattr(self.client, "create_insert_context"):
                ctx = self.client.create_insert_context(
                    table, column_names=names, database=self.database
                )
                types = self._types[table] = list(ctx.column_types)
            self.client.insert(
                table, data, column_names=names, database=self.database, column_types=types
            )

    def _insert_parts(self, parts: list[Part]) -> None:
        containers = [p.container for p in parts if p.container]
        same = [c for c in containers if c.startswith(chain_rows.HEADER)]
        if same:
            self._raw(chain_rows.merge(same))
        for c in containers:
            if not c.startswith(chain_rows.HEADER):
                self._raw(c)  # another container version: ClickHouse reads its own schema
        by_table: dict[str, list[tuple[Any, ...]]] = {}
        for p in parts:
            if p.rows:
                by_table.setdefault(p.table, []).extend(p.rows)
        for table, data in by_table.items():
            self._rows(table, data)

    def _attempt(self, parts: list[Part]) -> None:
        try:
            self._insert_parts(parts)
        except Exception as exc:
            if is_outage(exc):
                raise ClickHouseUnavailable(f"insert into {self.database} failed: {exc}") from exc
            raise RejectedData(str(exc)) from exc

    def insert(self, parts: list[Part]) -> list[QuarantineRecord]:
        """Insert ``parts``; returns quarantine records for the refused ones (already inserted)."""
        if not parts:
            return []
        try:
            self._attempt(parts)
            return []
        except RejectedData as whole:
            log.error("ClickHouse refused a batch (%s); inserting record by record", whole)
        refused: list[QuarantineRecord] = []
        for part in parts:
            try:
                self._attempt([part])
            except RejectedData as exc:
                refused.append(quarantine_for(part.msg, REJECTED, f"ClickHouse refused it: {exc}"))
        if refused:
            self._attempt(
                [Part(None, "quarantine", rows=[rows.quarantine_row(q) for q in refused])]
            )
        return refused


def quarantine_for(msg: Any, code: QuarantineReason, reason: str) -> QuarantineRecord:
    """A quarantine record keeping a sink input record's exact bytes and position."""
    return QuarantineRecord(
        reason_code=code,
        reason=reason[:4000],
        raw_value=msg.value() or b"",
        source_topic=str(msg.topic()),
        source_partition=int(msg.partition() or 0),
        source_offset=int(msg.offset() or 0),
        raw_key=msg.key(),
    )


@dataclass
class SinkStats:
    rows: dict[str, int] = field(
        default_factory=lambda: {"entries": 0, "violations": 0, "checkpoints": 0, "quarantine": 0}
    )
    batches: int = 0
    retries: int = 0
    refused: int = 0  # records ClickHouse refused, quarantined with the reason
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
        self._decoders: dict[str, tuple[Any, Callable[[Any], tuple[Any, ...]], str, str]] = {
            t.chain: (
                codec.load("chain_entry"),
                lambda r: rows.entry_row(ChainEntry.from_record(r)),
                "lineage_entries",
                "entries",
            ),
            t.violations: (
                codec.load("violation"),
                lambda r: rows.violation_row(Violation.from_record(r)),
                "violations",
                "violations",
            ),
            t.checkpoints: (
                codec.load("checkpoint"),
                lambda r: rows.checkpoint_row(Checkpoint.from_record(r)),
                "checkpoints",
                "checkpoints",
            ),
            t.quarantine: (
                codec.load("quarantine"),
                lambda r: rows.quarantine_row(QuarantineRecord.from_record(r)),
                "quarantine",
                "quarantine",
            ),
        }
        self.inserter = Inserter(client, self.database, self.lock)
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

    def _part(self, m: Any) -> tuple[Part, int]:
        """A record's share of the insert and its row count; undecodable ones become quarantine."""
        topic, value = str(m.topic()), m.value() or b""
        sch, to_row, table, _ = self._decoders[topic]
        if topic == self.settings.topics.chain and chain_rows.is_rows(value):
            return Part(m, table, container=value), chain_rows.row_count(value)
        try:
            return Part(m, table, rows=[to_row(sch.decode_body(value))]), 1
        except (DecodeError, IntegrityError, ValueError, TypeError, KeyError) as exc:
            log.error(
                "undecodable record on %s[%d]@%d, quarantined: %s",
                topic,
                m.partition(),
                m.offset(),
                exc,
            )
            q = quarantine_for(m, UNDECODABLE, f"{topic}: {exc}")
            return Part(m, "quarantine", rows=[rows.quarantine_row(q)]), 0

    def _collect(self) -> tuple[list[Part], list[Any], dict[str, int]]:
        deadline = time.monotonic() + self.settings.sink_batch_ms / 1000
        parts: list[Part] = []
        counts = {"entries": 0, "violations": 0, "checkpoints": 0, "quarantine": 0}
        msgs: list[Any] = []
        limit = self.settings.sink_batch_rows
        rows_in = 0
        while rows_in < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for m in self.consumer.consume(min(limit - rows_in, 5000), left):
                error = m.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", error)
                    continue
                msgs.append(m)
                self._fetched[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0) + 1
                part, n = self._part(m)
                parts.append(part)
                counts[self._decoders[str(m.topic())][3] if n else "quarantine"] += max(n, 1)
                rows_in += max(n, 1)
        return parts, msgs, counts

    def _commit(self, msgs: list[Any]) -> None:
        last: dict[tuple[str, int], int] = {}
        for m in msgs:
            last[(m.topic(), m.partition())] = m.offset()
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        self.consumer.commit(offsets=offsets, asynchronous=False)

    def step(self, stop: threading.Event | None = None) -> int:
        """Collect one batch, insert it (retrying with backoff until acked), commit; returns records.

        Only an outage is retried; data ClickHouse refuses goes to the quarantine table with the
        reason and its offset is committed with the rest. If ``stop`` is set during an outage the
        batch is left uncommitted: it is redelivered to the next sink, and the tables'
        deduplication absorbs any part that did land.
        """
        parts, msgs, counts = self._collect()
        if not msgs:
            return 0
        delay = 0.1
        outage_started: float | None = None
        while True:
            try:
                refused = sink_metrics.insert(self, parts, counts)
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
        for name, n in counts.items():
            self.stats.rows[name] += n
        self.stats.rows["quarantine"] += len(refused)
        self.stats.refused += len(refused)
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
