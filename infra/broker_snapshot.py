"""Save the embedded broker's topics to disk when ``lineage up`` stops, and load them back into
the next run's broker, so that a restart resumes instead of starting a new log epoch.

Tansu, the embedded broker, keeps everything in memory. The processor's state lives in its
changelog topic, the events it has not processed yet in the events topic, and the sink's and the
processor's positions in their consumer groups. With all of that copied out and back, a restarted
``lineage up`` is, to the processor and the sink, a broker that stayed up while they restarted:
the processor recovers its state from the changelog, resumes each partition where that state
ends, and continues every workflow's chain and every partition's log. That path is the one the
crash tests exercise.

Format (``SNAPSHOT_FORMAT`` 1), in ``<data dir>/broker-snapshot/``:

- ``records.avro``: an Avro object container file (deflate) of ``RECORD_SCHEMA`` records (the
  schema travels in the file's header, so any Avro library reads it), one per Kafka record, in
  offset order within each partition: topic, partition, offset, timestamp (ms), key, value and
  headers, byte for byte.
- ``manifest.json``: the format, when it was taken, each topic's partition count, each
  partition's record count, the committed offsets of every consumer group, the SHA-256 of
  ``records.avro``, and the marker of the store it goes with (a random token ``lineage up``
  also writes into the chDB directory).

A snapshot is loaded at most once: it is renamed before the load starts. Loading checks that each
replayed record lands at its saved offset; anything else (a gap, another record first, a digest
or store mismatch) refuses the load, and ``lineage up`` starts a new epoch instead, saying why.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineage.errors import LineageError

SNAPSHOT_FORMAT = 1
SNAPSHOT_DIR = "broker-snapshot"
RECORD_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "BrokerSnapshotRecord",
    "namespace": "lineage.ops",
    "doc": "One Kafka record as the embedded broker held it when lineage up stopped (snapshot "
    "format 1). Operational state, not evidence.",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp", "type": "long", "doc": "ms since the Unix epoch; -1: none"},
        {"name": "key", "type": ["null", "bytes"], "default": None},
        {"name": "value", "type": ["null", "bytes"], "default": None},
        {
            "name": "headers",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Header",
                    "fields": [
                        {"name": "key", "type": "string"},
                        {"name": "value", "type": ["null", "bytes"], "default": None},
                    ],
                },
            },
            "default": [],
        },
    ],
}


class SnapshotError(LineageError):
    """A snapshot cannot be taken or loaded; the message says why."""


@dataclass
class Manifest:
    format: int
    created_at: float
    topics: dict[str, int]
    records: dict[str, dict[int, int]]
    groups: dict[str, dict[str, dict[int, int]]]
    data_sha256: str
    store: dict[str, str] = field(default_factory=dict)

    @property
    def record_count(self) -> int:
        return sum(n for ps in self.records.values() for n in ps.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created_at": self.created_at,
            "topics": self.topics,
            "records": {t: {str(p): n for p, n in ps.items()} for t, ps in self.records.items()},
            "groups": {
                g: {t: {str(p): o for p, o in ps.items()} for t, ps in ts.items()}
                for g, ts in self.groups.items()
            },
            "data_sha256": self.data_sha256,
            "store": self.store,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        fmt = doc.get("format")
        if fmt != SNAPSHOT_FORMAT:
            raise SnapshotError(
                f"broker snapshot format {fmt!r} is not one this version reads ({SNAPSHOT_FORMAT})"
            )
        try:
            return cls(
                format=fmt,
                created_at=float(doc["created_at"]),
                topics={str(t): int(n) for t, n in doc["topics"].items()},
                records={
                    str(t): {int(p): int(n) for p, n in ps.items()}
                    for t, ps in doc["records"].items()
                },
                groups={
                    str(g): {
                        str(t): {int(p): int(o) for p, o in ps.items()} for t, ps in ts.items()
                    }
                    for g, ts in doc["groups"].items()
                },
                data_sha256=str(doc["data_sha256"]),
                store={str(k): str(v) for k, v in doc.get("store", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"broker snapshot manifest is malformed: {exc!r}") from None


def _schema() -> Any:
    import fastavro

    return fastavro.parse_schema(RECORD_SCHEMA)


def _admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})


def _read_all(
    bootstrap: str, topics: dict[str, int], idle_s: float, progress: Callable[[int], None] | None
) -> Iterator[dict[str, Any]]:
    """Every record of ``topics`` from offset 0, until none has come for ``idle_s``.

    Reading to the listed end offsets is not enough: Tansu lists a partition's end as the base
    offset of its last record batch + 1 (``tests/faults/test_changelog_fence.py``).
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lineage-snapshot-{time.time_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 50,
            "log_level": 3,
        }
    )
    try:
        consumer.assign(
            [TopicPartition(t, p, 0) for t, n in sorted(topics.items()) for p in range(n)]
        )
        seen = 0
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            batch = consumer.consume(10_000, 0.1)
            for msg in batch:
                err = msg.error()
                if err is not None:  # partition EOF events are off
                    raise SnapshotError(f"reading {msg.topic()}/{msg.partition()}: {err}")
                yield {
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "timestamp": msg.timestamp()[1],
                    "key": msg.key(),
                    "value": msg.value(),
                    "headers": [{"key": h[0], "value": h[1]} for h in (msg.headers() or [])],
                }
            if batch:
                seen += len(batch)
                last = time.monotonic()
                if progress is not None:
                    progress(seen)
    finally:
        consumer.close()


def _group_offsets(bootstrap: str, topics: dict[str, int]) -> dict[str, dict[str, dict[int, int]]]:
    from confluent_kafka import Consumer, TopicPartition

    admin = _admin(bootstrap)
    listed = admin.list_consumer_groups(request_timeout=15).result(20)
    groups: dict[str, dict[str, dict[int, int]]] = {}
    tps = [TopicPartition(t, p) for t, n in sorted(topics.items()) for p in range(n)]
    for group in sorted(g.group_id for g in listed.valid):
        if group.startswith("lineage-snapshot-"):
            continue
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        try:
            committed = consumer.committed(tps, timeout=15)
        finally:
            consumer.close()
        offsets: dict[str, dict[int, int]] = {}
        for tp in committed:
            if tp.error is None and tp.offset >= 0:
                offsets.setdefault(tp.topic, {})[tp.partition] = tp.offset
        if offsets:
            groups[group] = offsets
    return groups


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(
    bootstrap: str,
    data_dir: Path,
    *,
    store: dict[str, str] | None = None,
    idle_s: float = 1.0,
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Copy every topic and every group's committed offsets to ``<data_dir>/broker-snapshot``.

    Take it after the processor and the sink have stopped and before the broker does: a record
    a producer gets acknowledged after the read went idle is not in it.
    """
    import fastavro

    metadata = _admin(bootstrap).list_topics(timeout=15)
    topics = {
        name: len(meta.partitions)
        for name, meta in sorted(metadata.topics.items())
        if meta.error is None and not name.startswith("__consumer_offsets")
    }
    target = data_dir / SNAPSHOT_DIR
    partial = data_dir / (SNAPSHOT_DIR + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    counts: dict[str, dict[int, int]] = {t: {} for t in topics}
    expected: dict[tuple[str, int], int] = {}

    def checked() -> Iterator[dict[str, Any]]:
        for record in _read_all(bootstrap, topics, idle_s, progress):
            tp = (record["topic"], record["partition"])
            want = expected.get(tp, 0)
            if record["offset"] != want:
                raise SnapshotError(
                    f"{tp[0]}/{tp[1]}: expected the record at offset {want}, read offset "
                    f"{record['offset']}; a snapshot needs every offset from 0"
                )
            expected[tp] = want + 1
            counts[tp[0]][tp[1]] = want + 1
            yield record

    with (partial / "records.avro").open("wb") as fh:
        fastavro.writer(fh, _schema(), checked(), codec="deflate")
    groups = _group_offsets(bootstrap, topics)
    manifest = Manifest(
        format=SNAPSHOT_FORMAT,
        created_at=time.time(),
        topics=topics,
        records={t: dict(sorted(ps.items())) for t, ps in counts.items() if ps},
        groups=groups,
        data_sha256=_sha256(partial / "records.avro"),
        store=dict(store or {}),
    )
    (partial / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=1) + "\n")
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    return manifest


def take(data_dir: Path) -> Path | None:
    """Claim the snapshot for one load: rename it so it is never loaded twice (a run that then
    crashes must not come back to a state older than its store). None when there is none."""
    source = data_dir / SNAPSHOT_DIR
    if not (source / "manifest.json").exists():
        return None
    claimed = data_dir / f"{SNAPSHOT_DIR}.loaded-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns()}"
    source.rename(claimed)
    return claimed


def read_manifest(directory: Path) -> Manifest:
    try:
        doc = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"cannot read {directory / 'manifest.json'}: {exc}") from None
    return Manifest.from_json(doc)


def load(
    bootstrap: str,
    directory: Path,
    *,
    store: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Replay a snapshot into an empty broker: topics, every record at its offset, group offsets.

    ``store``: the store's marker now; it must equal the one the snapshot was taken with.
    """
    import fastavro
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    manifest = read_manifest(directory)
    data = directory / "records.avro"
    if _sha256(data) != manifest.data_sha256:
        raise SnapshotError(f"{data} does not have the digest its manifest records")
    if store is not None and manifest.store and store != manifest.store:
        raise SnapshotError(
            f"the store has changed since the snapshot (snapshot {manifest.store}, now {store})"
        )
    admin = _admin(bootstrap)
    existing = admin.list_topics(timeout=15).topics
    for name, meta in existing.items():
        if name in manifest.topics and len(meta.partitions) != manifest.topics[name]:
            raise SnapshotError(
                f"topic {name} has {len(meta.partitions)} partitions, the snapshot "
                f"{manifest.topics[name]}"
            )
    wanted = [NewTopic(t, n, 1) for t, n in manifest.topics.items() if t not in existing]
    if wanted:
        for name, fut in admin.create_topics(wanted, request_timeout=15).items():
            try:
                fut.result(20)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise SnapshotError(f"cannot create topic {name}: {exc}") from exc
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 1,  # retries must not reorder a partition
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 200_000,
            "log_level": 3,
        }
    )
    misplaced: list[str] = []
    delivered = 0

    def on_delivery(err: Any, msg: Any, want: int) -> None:
        nonlocal delivered
        if err is not None:
            misplaced.append(f"{msg.topic()}/{msg.partition()} offset {want}: {err}")
        elif msg.offset() != want:
            misplaced.append(
                f"{msg.topic()}/{msg.partition()}: record for offset {want} landed at {msg.offset()}"
            )
        delivered += 1

    sent = 0
    with data.open("rb") as fh:
        for item in fastavro.reader(fh):
            record: dict[str, Any] = item  # type: ignore[assignment]
            kwargs: dict[str, Any] = {
                "partition": record["partition"],
                "key": record["key"],
                "value": record["value"],
                "headers": [(h["key"], h["value"]) for h in record["headers"]] or None,
                "on_delivery": lambda err, msg, want=record["offset"]: on_delivery(err, msg, want),
            }
            if record["timestamp"] > 0:
                kwargs["timestamp"] = record["timestamp"]
            while True:
                try:
                    producer.produce(record["topic"], **kwargs)
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
            if sent % 10_000 == 0:
                producer.poll(0)
                if progress is not None:
                    progress(sent)
    if producer.flush(120) != 0:
        raise SnapshotError("the broker did not take every snapshot record within 120 s")
    if misplaced:
        raise SnapshotError(
            f"{len(misplaced)} snapshot record(s) not at their offsets, first: {misplaced[0]}"
        )
    if delivered != manifest.record_count:
        raise SnapshotError(f"{delivered} records replayed, the manifest counts another number")
    for group, offsets in manifest.groups.items():
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        try:
            consumer.commit(
                offsets=[
                    TopicPartition(t, p, o) for t, ps in offsets.items() for p, o in ps.items()
                ],
                asynchronous=False,
            )
        finally:
            consumer.close()
    if progress is not None:
        progress(sent)
    return manifest
