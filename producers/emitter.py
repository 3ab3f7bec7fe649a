"""Emitter: publishes execution events with confluent-kafka and seals them in signed batches.

By default one Kafka record carries one seal and the exact bytes of the events it covers
(``schemas/sealed_batch.avsc``): the broker and the processor pay their per-record cost once per
batch. ``batch_records=False`` sends each event and each seal as a record of its own (format 0).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from lineage import codec, hashing, merkle
from lineage.ids import uuid7
from lineage.model import Authorization, EventKind, ExecutionEvent, Runtime, Seal, new_event
from producers.errors import BackpressureTimeout, EmitterClosed, EmitterError
from producers.partitioner import partition_for


class SignerLike(Protocol):
    key_id: str
    subject: str

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class FlushReport:
    """What flush() could and could not deliver."""

    delivered: int
    undelivered: int
    failed: int
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return (
            self.undelivered == 0
            and self.failed == 0
            and not any("fatal" in e for e in self.errors)
        )


BATCH_FORMAT_VERSION = 1
BATCH_KEY_PREFIX = "batch:"
SEAL_KEY_PREFIX = "seal:"


@dataclass
class _SealBatch:
    first_seq: int = -1
    digests: list[bytes] = field(default_factory=list)
    events: list[bytes] = field(default_factory=list)  # exact bytes, held until sealed (batch mode)
    size: int = 0
    opened_at: float = 0.0


@dataclass
class _PartitionState:
    next_seq: int = 0
    prev_seal_hash: bytes = hashing.ZERO_HASH
    batch: _SealBatch = field(default_factory=_SealBatch)


_EVENT_FIELDS = tuple(f.name for f in fields(ExecutionEvent))
_AUTH_FIELDS = tuple(f.name for f in fields(Authorization))
_RUNTIME_FIELDS = tuple(f.name for f in fields(Runtime))


def event_record(event: ExecutionEvent) -> dict[str, Any]:
    """``event.to_record()`` without ``dataclasses.asdict``'s deep copies."""
    r = {name: getattr(event, name) for name in _EVENT_FIELDS}
    r["kind"] = event.kind.value
    auth = event.authorization
    if auth is not None:
        a = {name: getattr(auth, name) for name in _AUTH_FIELDS}
        a["decision"] = auth.decision.value
        a["determining_policies"] = list(auth.determining_policies)
        r["authorization"] = a
    rt = event.runtime
    if rt is not None:
        r["runtime"] = {name: getattr(rt, name) for name in _RUNTIME_FIELDS}
    return r


_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)

_UUID_BATCH = 256  # UUIDs per os.urandom call
_MASK48 = (1 << 48) - 1


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # 10xx: RFC 9562 variant


class Uuid7Source:
    """RFC 9562 UUIDv7 strings, as ``lineage.ids.uuid7`` makes them, at half the cost.

    48 bits of Unix milliseconds, version 7, 12 random bits, the variant, 62 random bits: the
    random bits are hex digits of one ``os.urandom`` call per 256 ids, and the time's hex is
    reused within a millisecond. The buffer is dropped in a forked child, so parent and child
    never hand out the same bits. Not thread-safe: the emitter calls it under its lock.
    """

    def __init__(self) -> None:
        self._hex = ""
        self._pos = 0
        self._forks = -1
        self._ms = -1
        self._ms_hex = ""

    def __call__(self, unix_ms: int | None = None) -> str:
        pos = self._pos
        if pos >= len(self._hex) or self._forks != _forks:
            self._hex = os.urandom(10 * _UUID_BATCH).hex()
            self._forks = _forks
            pos = 0
        self._pos = pos + 20
        ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
        if ms != self._ms:
            h = f"{ms & _MASK48:012x}"
            self._ms_hex = f"{h[:8]}-{h[8:]}-7"
            self._ms = ms
        r = self._hex
        # rand_a: 3 hex digits (12 bits); rand_b: 2 bits beside the variant, then 15 digits.
        return (
            f"{self._ms_hex}{r[pos : pos + 3]}-{_VARIANT[r[pos + 3]]}{r[pos + 4 : pos + 7]}"
            f"-{r[pos + 7 : pos + 19]}"
        )


_PARTITION_CACHE = 65_536


class _HotPath:
    """What ``emit`` reuses from event to event: the event writer, workflow -> partition, ids.

    ``reference``: the path before the direct writer (fastavro validates and encodes every
    event, ``lineage.ids.uuid7``, murmur2 per event), kept for ``bench.emitter_cpu --reference``
    and for tests that compare the two.
    """

    def __init__(self, partitions: int, *, reference: bool = False) -> None:
        self.count = partitions
        self.partitions: dict[str, int] = {}  # stays empty with ``reference``
        self.remember = not reference
        self.writer = codec.EventWriter()
        self.encode: Callable[[ExecutionEvent], bytes]
        self.uuid7: Callable[[], str]
        if reference:
            self.encode = lambda event: self.writer.schema.encode(event_record(event))
            self.uuid7 = uuid7
        else:
            self.encode = self.writer.encode
            self.uuid7 = Uuid7Source()

    def partition_of(self, workflow_id: str) -> int:
        """murmur2 of the UTF-8 workflow id, remembered (a workflow emits many events)."""
        partition = partition_for(workflow_id.encode(), self.count)
        if self.remember:
            if len(self.partitions) >= _PARTITION_CACHE:
                self.partitions.clear()
            self.partitions[workflow_id] = partition
        return partition


def now_us() -> int:
    return time.time_ns() // 1000


class Emitter:
    """Publishes events keyed by workflow id, numbered per partition, sealed every N events or T ms.

    Use as a context manager; ``close()`` seals and flushes what is pending.
    """

    # Built in __init__, or on the first emit() by subclasses that skip __init__ (bench._offline).
    _hot: _HotPath | None = None
    _produced = False
    _released = False  # the Kafka client is closed (after a close() with nothing pending)
    reference_encoding = False

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        signer: SignerLike,
        instance: str | None = None,
        seal_every: int = 100,
        seal_ms: int = 200,
        queue_max: int = 100_000,
        block_timeout_s: float = 30.0,
        producer_config: Mapping[str, Any] | None = None,
        clock: Callable[[], int] = now_us,
        batch_records: bool = True,
        max_batch_bytes: int = 900_000,
        reference_encoding: bool = False,
    ) -> None:
        """``batch_records``: one record per seal holding its events (default), else one per event.

        ``max_batch_bytes`` seals a batch early so its record stays under the broker's message
        size limit (Kafka's default is 1 MB). ``reference_encoding`` (benchmarks and tests):
        encode every event with fastavro's validation and writer instead of the direct writer;
        the bytes are the same, the CPU is not.
        """
        if seal_every < 1:
            raise EmitterError(f"seal_every: expected >= 1, found {seal_every}")
        self.topic = topic
        self.signer = signer
        self.emitter_id = f"{signer.subject}#{instance or uuid7()[-12:]}"
        self.seal_every = seal_every
        self.seal_ms = seal_ms
        self.batch_records = batch_records
        self.max_batch_bytes = max_batch_bytes
        self.reference_encoding = reference_encoding
        self.block_timeout_s = block_timeout_s
        self.clock = clock
        self._event_schema = codec.load("execution_event")
        self._seal_schema = codec.load("seal")
        self._batch_schema = codec.load("sealed_batch")
        self._batch_key = f"{BATCH_KEY_PREFIX}{self.emitter_id}".encode()
        self._seal_key = f"{SEAL_KEY_PREFIX}{self.emitter_id}".encode()
        self._lock = threading.RLock()
        self._closed = False
        self.delivered = 0  # records acknowledged by the broker (batches, or events and seals)
        self.delivered_events = 0
        self.emitted = 0
        self.fatal: str | None = None
        self.failed = 0
        self.errors: list[str] = []
        self.timer_errors = 0  # timed seals that could not be sent yet (retried next tick)
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": queue_max,
            "message.timeout.ms": 120_000,
            "logger": logging.getLogger("lineage.emitter.kafka"),
            "error_cb": self._on_error,
        }
        conf.update(producer_config or {})
        self._producer = Producer(conf)
        try:
            meta = self._producer.list_topics(topic, timeout=10)
            parts = meta.topics[topic].partitions
            if meta.topics[topic].error is not None or not parts:
                raise EmitterError(f"topic {topic!r} not found on {bootstrap}")
        except KafkaException as exc:
            raise EmitterError(
                f"cannot read metadata of {topic!r} from {bootstrap}: {exc}"
            ) from exc
        self.partitions = len(parts)
        self._hot = _HotPath(self.partitions, reference=reference_encoding)
        self._state: dict[int, _PartitionState] = {}
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._seal_timer, name="emitter-sealer", daemon=True)
        self._timer.start()

    # -- building events -------------------------------------------------

    def emit(
        self,
        *,
        workflow_id: str,
        kind: EventKind,
        principal: str,
        action: str,
        resource: str | None = None,
        parent_event_id: str | None = None,
        parent_workflow_id: str | None = None,
        agent_id: str | None = None,
        model_id: str | None = None,
        model_version: str | None = None,
        authorization_id: str | None = None,
        authorization: Authorization | None = None,
        runtime: Runtime | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        input_digest: str | None = None,
        output_digest: str | None = None,
        attributes: Mapping[str, str] | None = None,
        event_id: str | None = None,
        event_time: int | None = None,
        seal: bool = False,
    ) -> ExecutionEvent:
        """Validate, encode, number and send one event; raise before sending if it is invalid.

        ``seal``: seal the event's batch at once (the gate does, so a decision reaches the broker
        without waiting for the batch to fill); the event is on its way when this returns.
        """
        hot = self._hot or self._make_hot()
        partition = hot.partitions.get(workflow_id)
        if partition is None:
            partition = hot.partition_of(workflow_id)
        with self._lock:
            if self._closed:
                raise EmitterClosed("emit() after close()")
            state = self._state.get(partition)
            if state is None:
                state = self._state[partition] = _PartitionState()
            seq = state.next_seq
            # Positional, in ExecutionEvent's field order (new_event's signature checks it).
            event = new_event(
                event_id or hot.uuid7(),
                workflow_id,
                kind,
                event_time or self.clock(),
                principal,
                action,
                self.emitter_id,
                seq,
                self.topic,
                partition,
                parent_event_id,
                parent_workflow_id,
                trace_id,
                span_id,
                agent_id,
                model_id,
                model_version,
                resource,
                authorization_id,
                authorization,
                runtime,
                input_digest,
                output_digest,
                dict(attributes) if attributes else {},
            )
            data = hot.encode(event)
            batch = state.batch
            if self.batch_records:
                if batch.events and batch.size + len(data) > self.max_batch_bytes:
                    self._seal(partition, state)
                    batch = state.batch
                batch.events.append(data)
                batch.size += len(data)
            else:
                self._produce(workflow_id.encode(), data, partition, 1)
            state.next_seq = seq + 1
            self.emitted += 1
            digests = batch.digests
            if not digests:
                batch.first_seq = seq
                batch.opened_at = time.monotonic()
            digests.append(hashing.event_digest(data))
            if seal or len(digests) >= self.seal_every:
                self._seal(partition, state)
        if self._produced:
            # Delivery callbacks are served after a record went out (once per batch); the seal
            # timer polls too, so a quiet emitter still hears back.
            self._produced = False
            self._producer.poll(0)
        return event

    def _make_hot(self) -> _HotPath:
        self._hot = _HotPath(self.partitions, reference=self.reference_encoding)
        return self._hot

    # -- seals -----------------------------------------------------------

    def _seal(self, partition: int, state: _PartitionState) -> None:
        batch = state.batch
        if not batch.digests:
            return
        last_seq = batch.first_seq + len(batch.digests) - 1
        root = merkle.root(batch.digests)
        message = hashing.seal_message(
            self.emitter_id,
            self.signer.key_id,
            self.topic,
            partition,
            batch.first_seq,
            last_seq,
            root,
            state.prev_seal_hash,
        )
        seal = Seal(
            emitter_id=self.emitter_id,
            key_id=self.signer.key_id,
            topic=self.topic,
            partition=partition,
            first_seq=batch.first_seq,
            last_seq=last_seq,
            merkle_root=root,
            prev_seal_hash=state.prev_seal_hash,
            signature=self.signer.sign(message),
        )
        data = self._seal_schema.encode(seal.to_record(), check=False)
        if self.batch_records:
            if self.reference_encoding:
                record = {
                    "format_version": BATCH_FORMAT_VERSION,
                    "seal": data,
                    "events": batch.events,
                }
                value = self._batch_schema.encode(record, check=False)
            else:
                value = codec.write_sealed_batch(BATCH_FORMAT_VERSION, data, batch.events)
            self._produce(self._batch_key, value, partition, len(batch.events))
        else:
            self._produce(self._seal_key, data, partition, 0)
        state.prev_seal_hash = hashing.seal_hash(data)
        state.batch = _SealBatch()

    def seal_all(self) -> None:
        """Seal every open batch now."""
        with self._lock:
            for partition, state in self._state.items():
                self._seal(partition, state)

    def _seal_timer(self) -> None:
        interval = max(self.seal_ms / 4000, 0.005)
        while not self._stop.wait(interval):
            deadline = time.monotonic() - self.seal_ms / 1000
            with self._lock:
                if self._closed:
                    return
                for partition, state in self._state.items():
                    if state.batch.digests and state.batch.opened_at <= deadline:
                        try:
                            self._seal(partition, state)
                        except EmitterError as exc:
                            # The batch stays open (nothing dropped) and the next tick seals it
                            # again; the thread must outlive a full queue or a broker outage.
                            self.timer_errors += 1
                            if len(self.errors) < 100:
                                self.errors.append(f"timed seal of partition {partition}: {exc}")
            self._producer.poll(0)

    # -- delivery --------------------------------------------------------

    def _on_error(self, err: KafkaError) -> None:
        """Client-level errors; a fatal one (e.g. the idempotent producer fenced) is remembered."""
        if err.fatal():
            self.fatal = f"fatal producer error: {err}"

    def _delivery_cb(self, events: int) -> Callable[[KafkaError | None, Any], None]:
        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                self.delivered += 1
                self.delivered_events += events
            else:
                self.failed += 1
                if len(self.errors) < 100:
                    self.errors.append(str(err))

        return on_delivery

    def _produce(self, key: bytes, value: bytes, partition: int, events: int) -> None:
        deadline = time.monotonic() + self.block_timeout_s
        on_delivery = self._delivery_cb(events)
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    partition=partition,
                    on_delivery=on_delivery,
                )
                self._produced = True
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise BackpressureTimeout(
                        f"local queue full for {self.block_timeout_s:.0f} s; broker not keeping up or down"
                    ) from None
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise EmitterError(f"cannot send to {self.topic}: {exc}") from exc

    def flush(self, timeout: float = 30.0, *, seal: bool = True) -> FlushReport:
        """Seal open batches (unless ``seal`` is false) and wait up to ``timeout`` s for delivery.

        The report says what was not delivered; nothing is dropped silently.
        """
        try:
            if seal:
                self.seal_all()
            remaining = 0 if self._released else self._producer.flush(timeout)
        except (KafkaException, SystemError) as exc:  # a fatal client error surfaces here
            raise EmitterError(f"producer failed: {self.fatal or exc}") from exc
        errors = (*self.errors, self.fatal) if self.fatal else tuple(self.errors)
        return FlushReport(self.delivered, remaining, self.failed, errors)

    def pending(self) -> int:
        """Records handed to the client but not yet acknowledged by the broker."""
        return 0 if self._released else len(self._producer)

    def close(self, timeout: float = 30.0) -> FlushReport:
        """Seal, flush and stop; returns the final delivery report.

        The seal timer stops even when the last seal cannot be sent (the error is raised).
        """
        try:
            return self.flush(timeout)
        finally:
            with self._lock:
                self._closed = True
            self._stop.set()
            self._timer.join(timeout=2)
            if not self._released and not self._timer.is_alive() and len(self._producer) == 0:
                # nothing left to deliver: release the client now, or it keeps reconnecting to
                # a broker that has gone for as long as this object is referenced
                self._producer.close()
                self._released = True

    def __enter__(self) -> Emitter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
