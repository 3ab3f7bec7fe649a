"""The embedded broker's topics survive a ``lineage up`` restart: saved to disk, replayed at the
same offsets into a new broker, with every consumer group's committed offsets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra import broker_snapshot
from infra.broker_snapshot import SnapshotError
from infra.embedded import Broker, create_topics, start_broker


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    first = start_broker(tmp_path / "b1.log")
    second = start_broker(tmp_path / "b2.log")
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def _produce(bootstrap: str) -> None:
    create_topics(bootstrap, ["ev", "state-changelog"], 3)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 3})
    for i in range(500):  # several records per batch, as the processor's producers write them
        producer.produce(
            "ev",
            key=None if i % 7 == 0 else b"k%d" % i,
            value=b"event %d" % i,
            partition=i % 3,
            headers=[("traceparent", b"00-%032x-%016x-01" % (i, i)), ("empty", None)],
            timestamp=1_700_000_000_000 + i,
        )
    for i in range(40):
        producer.produce("state-changelog", key=b"s%d" % (i % 5), value=None if i == 39 else b"v")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "lineage-sink"})
    consumer.commit(
        offsets=[TopicPartition("ev", 0, 100), TopicPartition("ev", 2, 7)], asynchronous=False
    )
    consumer.close()


def _everything(bootstrap: str) -> list[tuple[Any, ...]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-{time.time_ns()}", "log_level": 3}
    )
    consumer.assign([TopicPartition(t, p, 0) for t in ("ev", "state-changelog") for p in range(3)])
    got: list[tuple[Any, ...]] = []
    last = time.monotonic()
    while time.monotonic() - last < 1.5:
        batch = consumer.consume(1000, 0.1)
        if batch:
            last = time.monotonic()
        got += [
            (
                m.topic(),
                m.partition(),
                m.offset(),
                m.timestamp()[1],
                m.key(),
                m.value(),
                m.headers(),
            )
            for m in batch
        ]
    consumer.close()
    return sorted(got, key=lambda r: (r[0], r[1], r[2]))


def _committed(bootstrap: str) -> list[tuple[int, int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "lineage-sink"})
    tps = consumer.committed([TopicPartition("ev", p) for p in range(3)], timeout=15)
    consumer.close()
    return [(tp.partition, tp.offset) for tp in tps]


def test_every_record_comes_back_at_its_offset_with_the_group_offsets(
    two_brokers: tuple[Broker, Broker], tmp_path: Path
) -> None:
    first, second = two_brokers
    _produce(first.bootstrap)
    before = _everything(first.bootstrap)
    assert len(before) == 540
    manifest = broker_snapshot.save(first.bootstrap, tmp_path, store={"marker": "m1"})
    assert manifest.records["ev"] == {0: 167, 1: 167, 2: 166}
    assert manifest.groups["lineage-sink"] == {"ev": {0: 100, 2: 7}}

    claimed = broker_snapshot.take(tmp_path)
    assert claimed is not None and broker_snapshot.take(tmp_path) is None, "loaded at most once"
    broker_snapshot.load(second.bootstrap, claimed, store={"marker": "m1"})
    assert _everything(second.bootstrap) == before
    assert _committed(second.bootstrap) == [(0, 100), (1, -1001), (2, 7)]


def test_a_snapshot_that_does_not_match_is_refused(
    two_brokers: tuple[Broker, Broker], tmp_path: Path
) -> None:
    first, second = two_brokers
    _produce(first.bootstrap)
    broker_snapshot.save(first.bootstrap, tmp_path, store={"marker": "m1"})
    directory = tmp_path / broker_snapshot.SNAPSHOT_DIR
    with pytest.raises(SnapshotError, match=r"the store has changed since the snapshot"):
        broker_snapshot.load(second.bootstrap, directory, store={"marker": "m2"})

    data = directory / "records.avro"
    raw = bytearray(data.read_bytes())
    raw[-40] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError, match=r"records.avro does not have the digest"):
        broker_snapshot.load(second.bootstrap, directory, store={"marker": "m1"})

    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["format"] = 2
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match=r"format 2 is not one this version reads \(1\)"):
        broker_snapshot.load(second.bootstrap, directory)
    assert _everything(second.bootstrap) == [], "a refused snapshot writes nothing"


def test_records_already_in_the_new_broker_refuse_the_load(
    two_brokers: tuple[Broker, Broker], tmp_path: Path
) -> None:
    first, second = two_brokers
    _produce(first.bootstrap)
    broker_snapshot.save(first.bootstrap, tmp_path)
    create_topics(second.bootstrap, ["ev"], 3)
    producer = Producer({"bootstrap.servers": second.bootstrap, "log_level": 3})
    producer.produce("ev", value=b"first", partition=1)
    assert producer.flush(10) == 0
    with pytest.raises(SnapshotError, match=r"ev/1: record for offset 0 landed at 1"):
        broker_snapshot.load(second.bootstrap, tmp_path / broker_snapshot.SNAPSHOT_DIR)
