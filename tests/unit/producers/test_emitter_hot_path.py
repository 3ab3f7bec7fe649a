"""The emitter's hot path (direct writer, cached partitions, batched UUID randomness) sends the
records the reference path sends, byte for byte: same events, same seals, same signatures."""

from __future__ import annotations

import re
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from lineage import codec, hashing, merkle
from lineage.keys import Role, Signer
from lineage.model import Authorization, Decision, EventKind, ExecutionEvent, Runtime, Seal
from producers import emitter as emitter_module
from producers.emitter import Emitter, Uuid7Source
from producers.partitioner import partition_for

T0 = 1_767_225_600_000_000


class _RecordingProducer:
    """confluent-kafka's place: keeps every record, delivers nothing."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.records: list[tuple[bytes, bytes, int]] = []
        self.closed = False

    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = SimpleNamespace(partitions=dict.fromkeys(range(4)), error=None)
        return SimpleNamespace(topics={topic: meta})

    def produce(
        self, topic: str, *, value: bytes, key: bytes, partition: int, on_delivery: Any
    ) -> None:
        self.records.append((key, value, partition))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0

    def close(self) -> bool:
        self.closed = True
        return True


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emitter_module, "Producer", _RecordingProducer)


SIGNER, _ = Signer.generate_ephemeral("svc", Role.EMITTER)


def _run(*, reference: bool, batch_records: bool) -> list[tuple[bytes, bytes, int]]:
    clock = iter(range(T0, T0 + 10_000))
    em = Emitter(
        bootstrap="unused:9092",
        topic="lineage.events",
        signer=SIGNER,
        instance="i1",
        seal_every=7,
        seal_ms=10**9,
        clock=lambda: next(clock),
        batch_records=batch_records,
        reference_encoding=reference,
    )
    rt = Runtime(host="node-1", image_digest="sha256:" + "ab" * 32)
    auth = Authorization(
        decision=Decision.ALLOW,
        policy_id="default",
        policy_digest="sha256:" + "00" * 32,
        determining_policies=("allow-search",),
        input_digest="sha256:" + "11" * 32,
        expires_at=T0 + 60_000_000,
        authorized_action="tool.call:search",
        authorized_resource="web:search",
    )
    for i in range(60):
        wf = f"wf-{i % 9}-ü"
        kind = list(EventKind)[i % len(EventKind)]
        em.emit(
            event_id=f"ev-{i}",
            workflow_id=wf,
            kind=kind,
            principal="user:ålice",
            action="tool.call:search",
            resource="web:search" if i % 2 else None,
            agent_id="agent:planner",
            authorization=auth if kind is EventKind.AUTHORIZATION_DECISION else None,
            runtime=rt if i % 3 else Runtime(host=f"node-{i}"),
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id=f"{i:016x}",
            attributes={"step": str(i), "😀": "x" * (i * 40)},
            seal=i == 30,  # the gate's case: this event's batch sealed at once
        )
    em.seal_all()
    records: list[tuple[bytes, bytes, int]] = em._producer.records  # type: ignore[attr-defined]
    em.close(0)
    return records


@pytest.mark.parametrize("batch_records", [True, False], ids=["sealed-batches", "record-per-event"])
def test_hot_path_sends_the_reference_paths_records_byte_for_byte(
    recording: None, batch_records: bool
) -> None:
    fast = _run(reference=False, batch_records=batch_records)
    reference = _run(reference=True, batch_records=batch_records)
    assert len(fast) >= 10 if batch_records else len(fast) > 60
    assert fast == reference


def test_every_sealed_batch_verifies(recording: None) -> None:
    """Each record: a seal signed over the Merkle root of its events' digests, chained."""
    prev: dict[int, bytes] = {}
    for key, value, partition in _run(reference=False, batch_records=True):
        assert key == b"batch:svc#i1"
        _, batch = codec.decode(value)
        _, seal_record = codec.decode(batch["seal"])
        seal = Seal.from_record(seal_record)
        assert seal.partition == partition
        assert seal.count == len(batch["events"])
        digests = [hashing.event_digest(e) for e in batch["events"]]
        assert seal.merkle_root == merkle.root(digests)
        assert seal.prev_seal_hash == prev.get(partition, hashing.ZERO_HASH)
        message = hashing.seal_message(
            seal.emitter_id,
            seal.key_id,
            seal.topic,
            partition,
            seal.first_seq,
            seal.last_seq,
            seal.merkle_root,
            seal.prev_seal_hash,
        )
        Ed25519PublicKey.from_public_bytes(SIGNER.public_key).verify(seal.signature, message)
        prev[partition] = hashing.seal_hash(batch["seal"])
        for seq, data in enumerate(batch["events"], start=seal.first_seq):
            _, event = codec.decode(data)  # canonical check included
            assert event["emitter_seq"] == seq
            assert partition_for(event["workflow_id"].encode(), 4) == partition


_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_uuid7_source_makes_rfc9562_v7_ids_with_the_time_in_front() -> None:
    src = Uuid7Source()
    ids = [src(unix_ms=0x0190A1B2C3D4) for _ in range(3 * emitter_module._UUID_BATCH + 5)]
    assert len(set(ids)) == len(ids)  # across several refills of the random buffer
    for u in ids:
        assert _UUID7.match(u), u
        assert u.replace("-", "")[:12] == "0190a1b2c3d4"


def test_uuid7_source_draws_fresh_randomness_after_a_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    src = Uuid7Source()
    before = src(unix_ms=1)
    buffer = src._hex
    monkeypatch.setattr(emitter_module, "_forks", emitter_module._forks + 1)  # as in a child
    src(unix_ms=1)
    assert src._hex is not buffer and src._pos == 20
    assert _UUID7.match(before)


def test_partition_cache_agrees_with_murmur2_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(emitter_module, "_PARTITION_CACHE", 100)
    hot = emitter_module._HotPath(7)
    for i in range(1_000):
        wf = f"workflow-{i}-ñ"
        got = hot.partitions.get(wf)
        assert (got if got is not None else hot.partition_of(wf)) == partition_for(wf.encode(), 7)
        assert len(hot.partitions) <= 100


def test_concurrent_emits_number_every_partition_without_gaps(recording: None) -> None:
    em = Emitter(
        bootstrap="unused:9092",
        topic="t",
        signer=SIGNER,
        instance="c",
        seal_every=10,
        seal_ms=10**9,
    )

    def work(n: int) -> None:
        for i in range(300):
            em.emit(
                workflow_id=f"wf-{n}-{i % 5}",
                kind=EventKind.RESOURCE_ACCESS,
                principal="p",
                action="a",
            )

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    em.seal_all()
    seqs: dict[int, list[int]] = {}
    ids: set[str] = set()
    for _, value, partition in em._producer.records:  # type: ignore[attr-defined]
        _, batch = codec.decode(value)
        for data in batch["events"]:
            _, event = codec.decode(data)
            seqs.setdefault(partition, []).append(event["emitter_seq"])
            ids.add(event["event_id"])
    em.close(0)
    assert len(ids) == 1_200
    for partition, got in seqs.items():
        assert got == list(range(len(got))), partition


def test_emit_returns_the_event_it_was_given(recording: None) -> None:
    """Every argument lands in its own field (the hot path builds the event positionally)."""
    em = Emitter(bootstrap="unused:9092", topic="t", signer=SIGNER, instance="r", seal_ms=10**9)
    auth = Authorization(
        decision=Decision.DENY,
        policy_id="pid",
        policy_digest="pdig",
        determining_policies=("d1",),
        input_digest="idig",
        expires_at=5,
        authorized_action="aa",
        authorized_resource="ar",
    )
    given: dict[str, Any] = {
        "event_id": "eid",
        "workflow_id": "wid",
        "kind": EventKind.AUTHORIZATION_DECISION,
        "event_time": 123,
        "principal": "pr",
        "action": "ac",
        "parent_event_id": "pe",
        "parent_workflow_id": "pw",
        "trace_id": "tr",
        "span_id": "sp",
        "agent_id": "ag",
        "model_id": "mi",
        "model_version": "mv",
        "resource": "rs",
        "authorization_id": "ai",
        "authorization": auth,
        "runtime": Runtime(host="h", image_digest="i", attestation_type="a", measurement="m"),
        "input_digest": "id",
        "output_digest": "od",
        "attributes": {"k": "v"},
    }
    event = em.emit(**given)
    em.close(0)
    expected = ExecutionEvent(
        **given,
        emitter_id="svc#r",
        emitter_seq=0,
        topic="t",
        partition=partition_for(b"wid", 4),
    )
    assert event == expected
    _, batch = codec.decode(em._producer.records[0][1])  # type: ignore[attr-defined]
    assert ExecutionEvent.from_record(codec.decode(batch["events"][0])[1]) == expected


def test_close_releases_the_kafka_client_once_nothing_is_pending(recording: None) -> None:
    """A closed emitter kept referenced must not keep reconnecting to a broker that has gone."""
    em = Emitter(bootstrap="unused:9092", topic="lineage.events", signer=SIGNER, instance="i2")
    producer: _RecordingProducer = em._producer  # type: ignore[assignment]
    report = em.close(0)
    assert producer.closed and report.undelivered == 0
    assert em.pending() == 0 and em.flush(0).undelivered == 0, "usable after close, not raising"
