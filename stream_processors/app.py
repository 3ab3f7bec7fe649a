"""The faust app: a thin driver that hands each input partition's record batches to its pipeline.

Each responsibility is a small class: ``Partitions`` (lifecycle on assign and revoke),
``StateWriter`` (state after outputs, acknowledgements after state), ``CatchUp`` (seeking back to
skipped offsets), ``BatchProcessor`` (one batch of records), ``Checkpointer`` (the timer).
Everything that decides anything is in ``PartitionPipeline``, which does no I/O.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import faust
from confluent_kafka import Producer
from faust.types import TP

from lineage.config import Settings
from lineage.keys import KeyRegistry, Signer
from lineage.policy import PolicySet
from stream_processors import metrics as processor_metrics
from stream_processors import transport
from stream_processors.decode import Limits
from stream_processors.order import OrderLimits
from stream_processors.pipeline import PartitionPipeline, PipelineConfig
from stream_processors.publisher import Publisher
from stream_processors.records import Outputs, RawRecord
from stream_processors.state import TableStore, fence_key

__all__ = [
    "ChangelogFence",
    "ChangelogWriter",
    "LineageApp",
    "Publisher",
    "TableStore",
    "build_app",
    "pipeline_config",
]

log = logging.getLogger("lineage.processor")
SEEK_RETRY_S = 5.0
IDLE_CHECK_S = 3.0


def pipeline_config(settings: Settings) -> PipelineConfig:
    """The pipeline's settings, every limit taken from ``settings``."""
    return PipelineConfig(
        limits=Limits(
            max_record_bytes=settings.max_record_bytes,
            max_attributes=settings.max_attributes,
            max_attribute_bytes=settings.max_attribute_bytes,
        ),
        order_limits=OrderLimits(
            settings.reorder_max_events_per_workflow,
            settings.reorder_max_events_per_partition,
            settings.reorder_max_bytes_per_partition,
        ),
        window_offsets=settings.window_offsets,
        checkpoint_every_s=settings.checkpoint_every_s,
        max_unsealed_per_emitter=settings.max_unsealed_per_emitter,
        partitions=settings.partitions,
    )


class LineageApp(faust.App):
    """faust's App with the transport options and the processor's hooks as plain attributes."""

    def __init__(self, *args: Any, transport_options: transport.Options, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.transport_options = transport_options
        self.checkpoint_all: Callable[[bool], None] = lambda force: None


class ChangelogWriter:
    """Writes state records straight to the table's changelog topic with confluent-kafka.

    faust's own path queues each record in its producer buffer and sends them one by one from
    the event loop, pausing the stream whenever more than 100 are queued; a state write of one
    batch is often more. Written here, a write's records go out together and are awaited
    (``flush``) before the input they cover is acknowledged; faust's table recovery reads them
    back unchanged.
    """

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.failed = 0

    def _cb(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def send(self, partition: int, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic, value, key=key, partition=partition, on_delivery=self._cb
                )
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                self.producer.poll(0.05)

    def flush(self) -> None:
        """Block until every state record is acknowledged; a failure stops the worker."""
        while self.producer.flush(10.0):
            log.warning("state records not yet acknowledged by the broker; waiting")
        if self.failed:
            raise RuntimeError(f"{self.failed} state records were not written; stopping")


class ChangelogFence:
    """Makes faust's recovery of the state table read each changelog partition to its real end.

    faust recovers a table up to the end offset that ListOffsets reports. The embedded broker
    (Tansu) reports the base offset of a partition's last record batch + 1, not the offset after
    its last record, so recovery stopped partway through the last batch of state records: the
    new owner missed records that a later restore would then read (docs/performance.md, "State
    writes"). Before recovery reads, one fence record is appended to each partition (with a
    producer of its own: this runs in a thread beside the event loop's writes); its offset + 1
    is the end recovery reads to, and ``TableStore`` checks that the restored table holds it.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                "logger": logging.getLogger("lineage.processor.kafka"),
            }
        )
        self.expected: dict[int, bytes] = {}

    def place(self, partitions: Iterable[int]) -> dict[int, int]:
        """Append a fresh fence record to each partition; the offset right after each."""
        placed: dict[int, int] = {}
        failed: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(f"{msg.partition()}: {err}")
            else:
                placed[msg.partition()] = msg.offset()

        fences = {p: os.urandom(16) for p in partitions}
        for p, nonce in fences.items():
            self.producer.produce(
                self.topic, nonce, key=fence_key(p), partition=p, on_delivery=delivered
            )
        while self.producer.flush(10.0):
            log.warning("changelog fence records not yet acknowledged by the broker; waiting")
        if failed or set(placed) != set(fences):
            raise RuntimeError(
                f"expected a fence record in changelog partitions {sorted(fences)}, "
                f"found {sorted(placed)} written and errors {failed}"
            )
        self.expected.update(fences)
        return {p: offset + 1 for p, offset in placed.items()}

    def end_offsets(self, tps: Iterable[Any]) -> dict[Any, int]:
        """The transport's hook: real end offsets of the changelog partitions among ``tps``."""
        ours = [tp for tp in tps if tp.topic == self.topic]
        ends = self.place(tp.partition for tp in ours)
        return {tp: ends[tp.partition] for tp in ours}


class Partitions:
    """Partition lifecycle: the input partitions this worker owns right now, and their pipelines.

    With ``stream_wait_empty=False`` a batch taken before a rebalance is still handed to the agent
    after its partitions were revoked; processing it would write state that the partition's next
    owner may already be restoring. Only partitions assigned right now are processed.
    """

    def __init__(self, topic: str, factory: Callable[[int], PartitionPipeline]) -> None:
        self.topic = topic
        self.factory = factory
        self.owned: set[int] = set()
        self.pipelines: dict[int, PartitionPipeline] = {}
        self.last_input: dict[int, float] = {}
        self.on_drop: list[Callable[[int], None]] = []

    def assigned(self, tps: Iterable[Any]) -> None:
        self.owned = {tp.partition for tp in tps if tp.topic == self.topic}

    def revoked(self, tps: Iterable[Any]) -> None:
        for tp in tps:
            if tp.topic == self.topic:
                self.owned.discard(tp.partition)
                self.pipelines.pop(tp.partition, None)
                for forget in self.on_drop:
                    forget(tp.partition)

    def get(self, partition: int) -> PartitionPipeline:
        pl = self.pipelines.get(partition)
        if pl is None:
            pl = self.factory(partition)
            self.pipelines[partition] = pl
            self.last_input[partition] = time.monotonic()
            log.info("partition %d: resuming at offset %d", partition, pl.meta.next_offset)
        return pl

    def resume_offset(self, tp: Any) -> int | None:
        """Where an owned input partition resumes: its saved state's next offset."""
        if tp.topic != self.topic or tp.partition not in self.owned:
            return None
        return self.get(tp.partition).meta.next_offset


class StateWriter:
    """Writes changed state after the outputs, at most every ``flush_s`` per partition.

    Input offsets are acknowledged to faust (and so become committable) only once the state that
    covers them is written: the committed offset never runs ahead of the saved state, so a
    restarted worker always resumes at or before the state's next offset and skips the replays.
    Deferring is safe: state that lags the outputs only means a restart replays a little more,
    and replays re-emit identical records (DESIGN.md "Ordering").
    """

    def __init__(
        self, partitions: Partitions, flush_s: float, changelog: ChangelogWriter | None = None
    ) -> None:
        self.partitions = partitions
        self.flush_s = flush_s
        self.changelog = changelog
        self.held: dict[int, list[Any]] = {}
        self.flushed_at: dict[int, float] = {}
        partitions.on_drop.append(self.forget)

    def hold(self, partition: int, events: Iterable[Any]) -> None:
        self.held.setdefault(partition, []).extend(events)

    def forget(self, partition: int) -> None:
        self.flushed_at.pop(partition, None)
        self.held.pop(partition, None)  # never acknowledged: the next owner replays them

    def save(self, partitions: Iterable[int], *, force: bool = False) -> None:
        now = time.monotonic()
        written: list[int] = []
        for partition in partitions:
            pl = self.partitions.pipelines.get(partition)
            if pl is None:
                continue
            last = self.flushed_at.get(partition)
            if force or last is None or now - last >= self.flush_s:
                pl.dirty_state()
                self.flushed_at[partition] = now
                written.append(partition)
        if written and self.changelog is not None:
            self.changelog.flush()  # the state is in the changelog before its input is acked
        for partition in written:
            for ev in self.held.pop(partition, ()):
                ev.ack()


class CatchUp:
    """Seeks back to an offset the consumer skipped, and catches up idle partitions.

    A record above the state's next offset makes the pipeline ask for a seek; records fetched
    before the seek are dropped until the target comes back. An idle partition whose consumer
    position is past its state has skipped records that no new record will reveal.
    """

    def __init__(self, app: faust.App, topic: str, partitions: Partitions) -> None:
        self.app = app
        self.topic = topic
        self.partitions = partitions
        self.seeking: dict[int, tuple[int, float]] = {}
        partitions.on_drop.append(self.forget)

    def forget(self, partition: int) -> None:
        self.seeking.pop(partition, None)

    async def seek(self, partition: int, offset: int) -> None:
        log.warning("partition %d: offset gap, seeking back to %d", partition, offset)
        self.seeking[partition] = (offset, time.monotonic())
        await self.app.consumer.seek(TP(self.topic, partition), offset)

    def admit(self, partition: int, records: list[RawRecord]) -> tuple[list[RawRecord], bool]:
        """Records to process while a seek is pending, and whether to seek again."""
        pending = self.seeking.get(partition)
        if pending is None:
            return records, False
        target, since = pending
        # Records delivered before the seek may come first; the re-fetched ones start at the
        # target (the transport drops what was still being fetched, transport.SeekTargets).
        at = next((i for i, r in enumerate(records) if r.offset == target), None)
        if at is not None:
            del self.seeking[partition]
            return records[at:], False
        return [], time.monotonic() - since > SEEK_RETRY_S

    async def check_idle(self) -> None:
        now = time.monotonic()
        for partition, pl in list(self.partitions.pipelines.items()):
            pending = self.seeking.get(partition)
            if pending is not None:
                if now - pending[1] > SEEK_RETRY_S:  # the target never came back: seek again
                    await self.seek(partition, pending[0])
                continue
            if now - self.partitions.last_input.get(partition, 0.0) < IDLE_CHECK_S:
                continue
            position = await self.app.consumer.position(TP(self.topic, partition))
            if position is not None and position > pl.meta.next_offset:
                await self.seek(partition, pl.meta.next_offset)


class Checkpointer:
    """Signs checkpoints of partitions whose log grew; the timer also forces pending state out."""

    def __init__(self, partitions: Partitions, publisher: Publisher, state: StateWriter) -> None:
        self.partitions = partitions
        self.publisher = publisher
        self.state = state

    def due(self, *, force: bool = False) -> list[Any]:
        return [
            cp
            for pl in list(self.partitions.pipelines.values())
            if (cp := pl.maybe_checkpoint(force=force)) is not None
        ]

    def run(self, force: bool = False) -> None:
        out = Outputs(checkpoints=self.due(force=force))
        if out.checkpoints:
            self.publisher.publish(out)
        self.state.save(list(self.partitions.pipelines), force=force)


class BatchProcessor:
    """One batch from faust: per owned partition, process in offset order; publish; save state."""

    def __init__(
        self,
        partitions: Partitions,
        publisher: Publisher,
        state: StateWriter,
        catch_up: CatchUp,
        checkpointer: Checkpointer,
    ) -> None:
        self.partitions = partitions
        self.publisher = publisher
        self.state = state
        self.catch_up = catch_up
        self.checkpointer = checkpointer

    async def process(self, batch: list[Any]) -> None:
        owned = self.partitions.owned
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
            records, retry = self.catch_up.admit(partition, records)
            if retry:
                seeks.append((partition, self.catch_up.seeking[partition][0]))
            if not records:
                continue
            records.sort(key=lambda r: r.offset)
            self.partitions.last_input[partition] = time.monotonic()
            result, seek_to = processor_metrics.process(self.partitions.get(partition), records)
            out.extend(result)
            self.state.hold(
                partition,
                (
                    events_of[(partition, r.offset)]
                    for r in records
                    if seek_to is None or r.offset < seek_to
                ),
            )
            if seek_to is not None:
                seeks.append((partition, seek_to))
        cps = self.checkpointer.due()
        out.checkpoints += cps
        self.publisher.publish(out)  # outputs acknowledged before state is written
        self.state.save(list(self.partitions.pipelines) if cps else list(by_partition))
        for partition, offset in seeks:
            await self.catch_up.seek(partition, offset)


def build_app(
    settings: Settings,
    bootstrap: str,
    registry: KeyRegistry,
    policy: PolicySet,
    signer: Signer,
    *,
    worker_id: str = "w0",
) -> LineageApp:
    """One App object with one agent; nothing here reads the environment."""
    topics = settings.topics
    options = transport.Options(fetch_wait_ms=settings.fetch_wait_ms)
    app = LineageApp(
        settings.processor_group,
        transport_options=options,
        broker=f"{transport.install()}://{bootstrap}",
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
    config = pipeline_config(settings)

    publisher = Publisher(bootstrap, settings)
    changelog_topic = table.changelog_topic.get_topic_name()
    changelog = ChangelogWriter(publisher.producer, changelog_topic)
    fence = ChangelogFence(bootstrap, changelog_topic)
    options.recovery_end = fence.end_offsets

    def new_pipeline(partition: int) -> PartitionPipeline:
        return PartitionPipeline(
            topic=topics.events,
            partition=partition,
            store=TableStore(table, partition, fence.expected.get(partition), changelog.send),
            registry=registry,
            policy=policy,
            checkpoint_signer=signer,
            config=config,
        )

    partitions = Partitions(topics.events, new_pipeline)
    state = StateWriter(partitions, settings.state_flush_s, changelog)
    catch_up = CatchUp(app, topics.events, partitions)
    checkpointer = Checkpointer(partitions, publisher, state)
    processor = BatchProcessor(partitions, publisher, state, catch_up, checkpointer)
    options.resume_offset = partitions.resume_offset

    async def on_revoked(sender: Any, revoked: Any, **kw: Any) -> None:
        partitions.revoked(revoked)

    async def on_assigned(sender: Any, assigned: Any, **kw: Any) -> None:
        partitions.assigned(assigned)

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]  # mode's signal typing
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    @app.agent(events)
    async def process(stream: Any) -> None:
        async for batch in stream.take_events(2000, within=settings.batch_wait_ms / 1000):
            await processor.process(batch)

    @app.timer(settings.checkpoint_every_s)  # type: ignore[untyped-decorator]
    async def checkpoint_timer() -> None:
        await asyncio.sleep(0)
        checkpointer.run(force=False)
        await catch_up.check_idle()

    app.checkpoint_all = checkpointer.run
    return app
