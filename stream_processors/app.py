"""The faust app: one agent reads raw event batches and drives a PartitionPipeline per partition."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Any

import faust
from confluent_kafka import Producer
from faust.types import TP

from lineage import codec
from lineage.config import Settings
from lineage.keys import KeyRegistry, Signer
from lineage.policy import PolicySet
from stream_processors import metrics as processor_metrics
from stream_processors import transport
from stream_processors.decode import Limits
from stream_processors.order import OrderLimits
from stream_processors.pipeline import PartitionPipeline, PipelineConfig
from stream_processors.records import Outputs, RawRecord

log = logging.getLogger("lineage.processor")
SEEK_RETRY_S = 5.0
IDLE_CHECK_S = 3.0


class TableStore:
    """StateStore over a faust table, writing each change to the source partition's changelog.

    The pipeline writes one batch of keys and then the partition's meta key; a crash can leave
    any prefix of those writes in the changelog, and a restore from a half-written batch mixes
    two states (an emitter already past events whose workflows never saw them: those events are
    then dropped as duplicates and never chained). So the meta record commits the batch: every
    record carries its batch number and the value it replaces, and on restore the records of a
    batch the meta never committed are rolled back to that value (an undo log, one record per key).
    """

    _HEAD = struct.Struct(">BQBI")  # format, batch, has_prev | has_value << 1, len(prev)
    _FORMAT = 0  # an old plain value starts with "{", never with this byte

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition
        self.prefix = f"{partition}|".encode()
        self.meta_key = self.prefix + b"meta"
        meta = self._record(self.meta_key)
        self.committed = meta[0] if meta else 0
        self.batch = self.committed + 1
        self._roll_back()

    def _record(self, raw: bytes) -> tuple[int, bytes | None, bytes | None] | None:
        """(batch, replaced value, value) of a key, or None when there is no record."""
        stored = self.table.data.get(raw)
        if stored is None:
            return None
        data = bytes(stored)
        if not data or data[0] != self._FORMAT:
            return 0, None, data
        _, batch, flags, n = self._HEAD.unpack_from(data)
        body = data[self._HEAD.size :]
        return batch, body[:n] if flags & 1 else None, body[n:] if flags & 2 else None

    def _write(self, raw: bytes, batch: int, prev: bytes | None, value: bytes | None) -> None:
        flags = int(prev is not None) | int(value is not None) << 1
        head = self._HEAD.pack(self._FORMAT, batch, flags, len(prev or b""))
        data = head + (prev or b"") + (value or b"")
        self.table.data[raw] = data
        self.table.send_changelog(self.partition, raw, data)

    def _roll_back(self) -> None:
        undone = 0
        for raw in [k for k in list(self.table.data.keys()) if bytes(k).startswith(self.prefix)]:
            rec = self._record(bytes(raw))
            if rec is not None and rec[0] > self.committed:
                self._write(bytes(raw), self.committed, None, rec[1])
                undone += 1
        if undone:
            log.warning(
                "partition %d: rolled back %d state records of a batch that was never committed "
                "(the previous owner stopped while writing it)",
                self.partition,
                undone,
            )

    def get(self, key: str) -> bytes | None:
        rec = self._record(key.encode())
        if rec is None:
            return None
        batch, prev, value = rec
        return value if batch <= self.committed else prev

    def put(self, key: str, value: bytes) -> None:
        raw = key.encode()
        if raw != self.meta_key:
            self._write(raw, self.batch, self.get(key), value)
            return
        self._write(raw, self.batch, None, value)  # the pipeline writes its meta last: the commit
        self.committed = self.batch
        self.batch += 1


class Publisher:
    """Publishes stage outputs with confluent-kafka and waits for the broker's acknowledgement."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.topics = settings.topics
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "logger": logging.getLogger("lineage.processor.kafka"),
            }
        )
        self._entry = codec.load("chain_entry")
        self._violation = codec.load("violation")
        self._quarantine = codec.load("quarantine")
        self._checkpoint = codec.load("checkpoint")
        self._containment = codec.load("containment")
        self.failed = 0

    def _cb(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def publish(self, out: Outputs) -> None:
        p = self.producer
        for e in out.entries:
            p.produce(
                self.topics.chain,
                self._entry.encode(e.to_record(), check=False),
                key=e.workflow_id.encode(),
                partition=e.source_partition,
                on_delivery=self._cb,
            )
        for v in out.violations:
            p.produce(
                self.topics.violations,
                self._violation.encode(v.to_record(), check=False),
                key=v.workflow_id.encode(),
                on_delivery=self._cb,
            )
        for q in out.quarantine:
            p.produce(
                self.topics.quarantine,
                self._quarantine.encode(q.to_record(), check=False),
                key=q.raw_key,
                partition=q.source_partition,
                on_delivery=self._cb,
            )
        for k in out.containments:
            p.produce(
                self.topics.control,
                self._containment.encode(k.to_record(), check=False),
                key=k.workflow_id.encode(),
                on_delivery=self._cb,
            )
        for c in out.checkpoints:
            p.produce(
                self.topics.checkpoints,
                self._checkpoint.encode(c.to_record(), check=False),
                key=str(c.partition).encode(),
                partition=c.partition,
                on_delivery=self._cb,
            )
        self.confirm()

    def confirm(self) -> None:
        """Block until every output is acknowledged; a failure stops the worker (state not advanced)."""
        while self.producer.flush(10.0):
            log.warning("outputs not yet acknowledged by the broker; waiting")
        if self.failed:
            raise RuntimeError(
                f"{self.failed} outputs were not delivered; stopping before state advances"
            )


def build_app(
    settings: Settings,
    bootstrap: str,
    registry: KeyRegistry,
    policy: PolicySet,
    signer: Signer,
    *,
    worker_id: str = "w0",
) -> faust.App:
    """One App object with one agent; nothing here reads the environment."""
    scheme = transport.install(settings.fetch_wait_ms)
    topics = settings.topics
    app = faust.App(
        settings.processor_group,
        broker=f"{scheme}://{bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=settings.session_timeout_ms / 1000,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=False,
        producer_acks=-1,
        broker_commit_interval=0.5,
        stream_wait_empty=False,
        worker_redirect_stdouts=False,
        datadir=str(settings.data_dir / f"faust-{worker_id}"),  # not "<group>-data" in the cwd
    )
    events = app.topic(
        topics.events,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    table = app.Table(
        "lineage-state",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
    )
    publisher = Publisher(bootstrap, settings)
    config = PipelineConfig(
        limits=Limits(settings.max_record_bytes, settings.max_attributes),
        order_limits=OrderLimits(
            settings.reorder_max_events_per_workflow,
            settings.reorder_max_events_per_partition,
            settings.reorder_max_bytes_per_partition,
        ),
        window_offsets=settings.window_offsets,
        checkpoint_every_s=settings.checkpoint_every_s,
        partitions=settings.partitions,
    )
    pipelines: dict[int, PartitionPipeline] = {}
    seeking: dict[int, tuple[int, float]] = {}
    flushed_at: dict[int, float] = {}
    # Input offsets are acknowledged to faust (and so become committable) only once the state that
    # covers them is written: the committed offset never runs ahead of the saved state, so a
    # restarted worker always resumes at or before the state's next offset and skips the replays.
    held: dict[int, list[Any]] = {}
    last_input: dict[int, float] = {}

    def save_state(partitions: Any, *, force: bool = False) -> None:
        """Write changed state at most every ``state_flush_s`` per partition.

        Deferring is safe: state that lags the outputs only means a restart replays a little
        more, and replays re-emit identical records (DESIGN.md "Ordering").
        """
        now = time.monotonic()
        for partition in partitions:
            pl = pipelines.get(partition)
            if pl is None:
                continue
            if force or now - flushed_at.get(partition, 0.0) >= settings.state_flush_s:
                pl.dirty_state()
                flushed_at[partition] = now
                for ev in held.pop(partition, ()):
                    ev.ack()

    def pipeline(partition: int) -> PartitionPipeline:
        pl = pipelines.get(partition)
        if pl is None:
            pl = PartitionPipeline(
                topic=topics.events,
                partition=partition,
                store=TableStore(table, partition),
                registry=registry,
                policy=policy,
                checkpoint_signer=signer,
                config=config,
            )
            pipelines[partition] = pl
            last_input[partition] = time.monotonic()
            log.info("partition %d: resuming at offset %d", partition, pl.meta.next_offset)
        return pl

    # With stream_wait_empty=False a batch taken before a rebalance is still handed to the agent
    # after its partitions were revoked; processing it would write state that the partition's
    # next owner may already be restoring. Only partitions assigned right now are processed.
    owned: set[int] = set()

    async def on_revoked(sender: Any, revoked: Any, **kw: Any) -> None:
        for tp in revoked:
            if tp.topic == topics.events:
                owned.discard(tp.partition)
                pipelines.pop(tp.partition, None)
                seeking.pop(tp.partition, None)
                flushed_at.pop(tp.partition, None)
                held.pop(tp.partition, None)  # never acknowledged: the next owner replays them

    async def on_assigned(sender: Any, assigned: Any, **kw: Any) -> None:
        owned.clear()
        owned.update(tp.partition for tp in assigned if tp.topic == topics.events)

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]  # mode's signal typing
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    def resume_offset(tp: Any) -> int | None:
        if tp.topic != topics.events or tp.partition not in owned:
            return None
        return pipeline(tp.partition).meta.next_offset

    transport.RESUME_HOOK["hook"] = resume_offset

    async def seek(partition: int, offset: int) -> None:
        log.warning("partition %d: offset gap, seeking back to %d", partition, offset)
        seeking[partition] = (offset, time.monotonic())
        await app.consumer.seek(TP(topics.events, partition), offset)

    def checkpoint_all(force: bool) -> None:
        out = Outputs()
        for pl in list(pipelines.values()):
            cp = pl.maybe_checkpoint(force=force)
            if cp is not None:
                out.checkpoints.append(cp)
        if out.checkpoints:
            publisher.publish(out)
        save_state(list(pipelines), force=force)

    @app.agent(events)
    async def process(stream: Any) -> None:
        async for batch in stream.take_events(2000, within=settings.batch_wait_ms / 1000):
            by_partition: dict[int, list[RawRecord]] = {}
            events_of: dict[tuple[int, int], Any] = {}
            for ev in batch:
                m = ev.message
                by_partition.setdefault(m.partition, []).append(
                    RawRecord(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp or 0)
                )
                if m.partition in owned:
                    m.incref()  # take_events acks after this batch; we ack after state is saved
                    events_of[(m.partition, m.offset)] = ev
            out = Outputs()
            seeks: list[tuple[int, int]] = []
            for partition, records in by_partition.items():
                if partition not in owned:
                    log.info(
                        "partition %d: dropping %d records fetched before it was revoked",
                        partition,
                        len(records),
                    )
                    continue
                pending_seek = seeking.get(partition)
                if pending_seek is not None:
                    target, since = pending_seek
                    records = [r for r in records if r.offset >= target]
                    if not records or records[0].offset != target:
                        # Records fetched before the seek move faust's read offset past the
                        # target; put it back so the re-fetched target is not filtered out.
                        app.consumer._read_offset[TP(topics.events, partition)] = target  # type: ignore[attr-defined]
                        if time.monotonic() - since > SEEK_RETRY_S:
                            seeks.append((partition, target))
                        continue
                    del seeking[partition]
                records.sort(key=lambda r: r.offset)
                last_input[partition] = time.monotonic()
                result, seek_to = processor_metrics.process(pipeline(partition), records)
                out.extend(result)
                consumed = [r for r in records if seek_to is None or r.offset < seek_to]
                held.setdefault(partition, []).extend(
                    events_of[(partition, r.offset)] for r in consumed
                )
                if seek_to is not None:
                    seeks.append((partition, seek_to))
            cps = [cp for pl in pipelines.values() if (cp := pl.maybe_checkpoint()) is not None]
            out.checkpoints += cps
            publisher.publish(out)  # outputs acknowledged before state is written
            save_state(list(pipelines) if cps else list(by_partition))
            for partition, offset in seeks:
                await seek(partition, offset)

    @app.timer(settings.checkpoint_every_s)  # type: ignore[untyped-decorator]
    async def checkpoint_timer() -> None:
        await asyncio.sleep(0)
        checkpoint_all(force=False)
        await catch_up_idle_partitions()

    async def catch_up_idle_partitions() -> None:
        """An idle partition whose consumer position is past its state has skipped records.

        Gap detection needs a record to arrive; when the consumer starts (or is left) beyond the
        saved state at the end of the log, none does. Only idle partitions are checked, because
        the position runs ahead of processing while records are in flight.
        """
        now = time.monotonic()
        for partition, pl in list(pipelines.items()):
            pending = seeking.get(partition)
            if pending is not None:
                if now - pending[1] > SEEK_RETRY_S:  # the target never came back: seek again
                    app.consumer._read_offset[TP(topics.events, partition)] = None  # type: ignore[attr-defined]
                    await seek(partition, pending[0])
                continue
            if now - last_input.get(partition, 0.0) < IDLE_CHECK_S:
                continue
            position = await app.consumer.position(TP(topics.events, partition))
            if position is not None and position > pl.meta.next_offset:
                await seek(partition, pl.meta.next_offset)

    app.lineage_checkpoint_all = checkpoint_all  # type: ignore[attr-defined]
    return app
