"""The state table's changelog on the embedded broker: where its end is, and the fence that finds it.

faust recovers a table up to the end offset the broker lists. Tansu lists the base offset of a
partition's last record batch + 1, so a recovery stopped at the first record of the last batch of
state records; a later restore then read records the heir had never seen (the root cause of the
crash-suite failures with multi-record state writes, docs/performance.md "State writes").
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from faust.types import TP

from infra.embedded import Broker, create_topics
from stream_processors.app import ChangelogFence
from stream_processors.state import fence_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _topic(broker: Broker, partitions: int = 2) -> str:
    topic = f"fence-{uuid.uuid4().hex[:10]}"
    create_topics(broker.bootstrap, [topic], partitions)
    return topic


def _one_batch(broker: Broker, topic: str, partition: int, n: int) -> None:
    """``n`` records in one produce request (one record batch), as a state write goes out."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200, "acks": "all"})
    for i in range(n):
        p.produce(topic, b"v%d" % i, key=b"k%d" % i, partition=partition)
    assert p.flush(10) == 0, "expected every record acknowledged"


def _listed_end(broker: Broker, topic: str, partition: int) -> int:
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "fence-probe"})
    try:
        return int(
            c.get_watermark_offsets(TopicPartition(topic, partition), timeout=5, cached=False)[1]
        )
    finally:
        c.close()


def _read_all(broker: Broker, topic: str, partition: int, expect: int) -> list[Any]:
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "fence-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        c.assign([TopicPartition(topic, partition, 0)])
        got: list[Any] = []
        deadline = time.monotonic() + 20
        while len(got) < expect:
            assert time.monotonic() < deadline, f"read {len(got)} of {expect} records"
            got += [m for m in c.consume(1000, 0.2) if not m.error()]
        return got
    finally:
        c.close()


def test_the_broker_lists_the_last_batch_base_offset_plus_one_as_the_end(broker: Broker) -> None:
    """The observation behind the fence (if this fails, the broker changed; the fence still holds)."""
    topic = _topic(broker)
    _one_batch(broker, topic, 0, 1)  # offset 0
    _one_batch(broker, topic, 0, 10)  # offsets 1..10, one batch
    assert len(_read_all(broker, topic, 0, 11)) == 11
    assert _listed_end(broker, topic, 0) == 2, (
        "expected Tansu to list the end as the last batch's base offset + 1 (2), not 11"
    )


def test_the_fence_gives_recovery_the_real_end_of_each_partition(broker: Broker) -> None:
    topic = _topic(broker)
    _one_batch(broker, topic, 0, 1)
    _one_batch(broker, topic, 0, 10)  # partition 0: offsets 0..10, the last 10 in one batch
    fence = ChangelogFence(broker.bootstrap, topic)
    ends = fence.end_offsets([TP(topic, 0), TP(topic, 1), TP("another-topic", 0)])
    assert ends == {TP(topic, 0): 12, TP(topic, 1): 1}, (
        "expected the offset after each fence record (the other topic's partitions left alone)"
    )
    records = _read_all(broker, topic, 0, 12)
    assert [m.offset() for m in records] == list(range(12))
    last = records[-1]
    assert (last.key(), last.value()) == (fence_key(0), fence.expected[0]), (
        "expected the fence record last, holding the value TableStore will look for"
    )
    again = fence.end_offsets([TP(topic, 0)])
    assert again == {TP(topic, 0): 13} and fence.expected[0] != last.value(), (
        "expected a new recovery to place a new fence, with a new value"
    )
