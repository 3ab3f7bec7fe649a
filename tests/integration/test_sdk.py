"""The emitter SDK and the pre-execution gate against the real broker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from infra.embedded import Broker, create_topics, start_broker
from lineage import codec
from lineage.errors import SchemaViolation
from lineage.keys import Role, Signer
from lineage.model import EventKind, ExecutionEvent, Runtime, Seal, SealedBatch
from lineage.policy import PolicySet
from producers.emitter import Emitter
from producers.errors import BackpressureTimeout
from producers.gate import AuthorizationDenied, Gate, GateError, TraceContext

POLICY = PolicySet.load(Path(__file__).resolve().parents[2] / "policies" / "default.toml")
RT = Runtime(host="h", attestation_type="tpm2-quote", measurement="sha256:" + "ab" * 32)


@pytest.fixture
def topic(broker: Broker) -> str:
    name = f"sdk-{uuid.uuid4().hex[:8]}.events"
    create_topics(broker.bootstrap, [name], 4)
    return name


def read_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 20, *, events: bool = False
) -> list[tuple[bytes | None, bytes]]:
    """Records of ``topic`` until ``expected`` records (or events, inside batches) were read."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"r-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 50,
        }
    )
    c.subscribe([topic])
    out: list[tuple[bytes | None, bytes]] = []
    import time

    deadline = time.monotonic() + timeout

    def count() -> int:
        if not events:
            return len(out)
        return sum(codec.read_header(v).name == "execution_event" for _, v in expand(out))

    while count() < expected and time.monotonic() < deadline:
        for m in c.consume(500, 0.5):
            if not m.error() and m.value() is not None:
                out.append((m.key(), m.value()))
    c.close()
    return out


def expand(records: list[tuple[bytes | None, bytes]]) -> list[tuple[bytes | None, bytes]]:
    """Sealed-batch records opened into (key, seal) and (None, event) pairs, in order."""
    out: list[tuple[bytes | None, bytes]] = []
    for key, value in records:
        if codec.read_header(value).name != "sealed_batch":
            out.append((key, value))
            continue
        batch = SealedBatch.from_record(codec.load("sealed_batch").decode_body(value))
        out += [(None, e) for e in batch.events] + [(key, batch.seal)]
    return out


def emitter(bootstrap: str, topic: str, role: Role = Role.AUTHORIZER, **kw: Any) -> Emitter:
    signer, _ = Signer.generate_ephemeral("svc", role)
    return Emitter(bootstrap=bootstrap, topic=topic, signer=signer, **kw)


def test_invalid_event_raises_before_anything_is_sent(broker: Broker, topic: str) -> None:
    with emitter(broker.bootstrap, topic) as em:
        with pytest.raises(SchemaViolation, match="workflow_id: expected a non-empty id"):
            em.emit(workflow_id="", kind=EventKind.WORKFLOW_STARTED, principal="p", action="a")
        with pytest.raises(SchemaViolation, match="does not match schema"):
            em.emit(
                workflow_id="wf",
                kind=EventKind.WORKFLOW_STARTED,
                principal="p",
                action="a",
                attributes={"n": 1},
            )  # type: ignore[dict-item]
        assert em.emitted == 0 and em.pending() == 0
        em.emit(workflow_id="wf", kind=EventKind.WORKFLOW_STARTED, principal="p", action="a")
        report = em.flush(10)
    assert report.ok and report.delivered == 1, report  # one sealed batch, nothing else
    assert em.delivered_events == 1
    records = read_all(broker.bootstrap, topic, 1)
    assert [codec.read_header(v).name for _, v in records] == ["sealed_batch"]
    kinds = sorted(codec.read_header(v).name for _, v in expand(records))
    assert kinds == ["execution_event", "seal"]


@pytest.mark.parametrize("batch_records", [True, False])
def test_events_keyed_by_workflow_numbered_and_sealed(
    broker: Broker, topic: str, batch_records: bool
) -> None:
    with emitter(broker.bootstrap, topic, seal_every=3, batch_records=batch_records) as em:
        events = [
            em.emit(workflow_id="wf-1", kind=EventKind.RESOURCE_ACCESS, principal="p", action="a")
            for _ in range(7)
        ]
    assert [e.emitter_seq for e in events] == list(range(7))
    raw = read_all(broker.bootstrap, topic, 3 if batch_records else 7 + 3)
    records = expand(raw)
    if batch_records:
        assert {k for k, _ in raw} == {f"batch:{em.emitter_id}".encode()}
    seals = [
        Seal.from_record(codec.load("seal").decode_body(v))
        for k, v in records
        if codec.read_header(v).name == "seal"
    ]
    assert [(s.first_seq, s.last_seq) for s in seals] == [(0, 2), (3, 5), (6, 6)]
    keys = {k for k, v in records if codec.read_header(v).name == "execution_event"}
    assert keys == ({None} if batch_records else {b"wf-1"})


def test_broker_down_flush_reports_undelivered_and_backpressure_blocks(tmp_path: Path) -> None:
    own = start_broker(tmp_path / "b.log")
    name = "down.events"
    create_topics(own.bootstrap, [name], 2)
    em = emitter(
        own.bootstrap,
        name,
        batch_records=False,  # one record per event: the producer's queue fills event by event
        queue_max=5,
        block_timeout_s=1.0,
        producer_config={"message.timeout.ms": 60_000},
    )
    own.stop()
    for _ in range(4):
        em.emit(workflow_id="wf", kind=EventKind.RESOURCE_ACCESS, principal="p", action="a")
    report = em.flush(2.0)
    assert report.undelivered == 5 and not report.ok, (
        f"4 events + 1 seal are undelivered, found {report}"
    )
    with pytest.raises(BackpressureTimeout, match="local queue full"):
        em.emit(workflow_id="wf", kind=EventKind.RESOURCE_ACCESS, principal="p", action="a")
    # librdkafka's queue length also counts its own queued requests and delivery reports (the
    # producer-id request waiting for the broker), so it may exceed the 5 records
    assert em.pending() >= 5, "nothing was dropped"
    em.close(timeout=0.1)


def test_gate_allow_deny_and_execution_events(broker: Broker, topic: str) -> None:
    with emitter(broker.bootstrap, topic) as em:
        gate = Gate(em, POLICY)
        grant = gate.authorize(
            workflow_id="wf-g",
            principal="agent:a",
            action="tool.call:search",
            resource="web:search",
            agent_id="agent:a",
        )
        assert grant.decision.determining_policies == ("agents-call-tools",)
        auth = grant.event.authorization
        assert (
            auth is not None
            and auth.policy_digest == POLICY.digest_hex
            and auth.expires_at > grant.event.event_time
        )
        with gate.execution(grant, principal="agent:a", agent_id="agent:a", runtime=RT) as ex:
            downstream = TraceContext.parse(ex.trace.traceparent)
            assert downstream.trace_id == grant.trace.trace_id
        with pytest.raises(RuntimeError), gate.execution(grant, principal="agent:a", runtime=RT):
            raise RuntimeError("tool crashed")
        with pytest.raises(AuthorizationDenied, match="agents-never-delete-records") as denied:
            gate.authorize(
                workflow_id="wf-g",
                principal="agent:a",
                action="tool.call:delete_records",
                resource="prod-db:crm/accounts",
            )
        assert denied.value.event.authorization is not None
        assert denied.value.event.authorization.decision.value == "DENY"
    records = expand(read_all(broker.bootstrap, topic, 6, events=True))
    kinds = [
        ExecutionEvent.from_record(codec.load("execution_event").decode_body(v)).kind
        for _, v in records
        if codec.read_header(v).name == "execution_event"
    ]
    assert sorted(k.value for k in kinds) == sorted(
        [
            "AUTHORIZATION_DECISION",
            "EXECUTION_STARTED",
            "EXECUTION_COMPLETED",
            "EXECUTION_STARTED",
            "EXECUTION_FAILED",
            "AUTHORIZATION_DECISION",
        ]
    )


def test_gate_fails_closed_when_policy_cannot_be_evaluated(broker: Broker, topic: str) -> None:
    with emitter(broker.bootstrap, topic) as em:
        gate = Gate(em, POLICY)
        with pytest.raises(GateError, match="policy could not be evaluated"):
            gate.authorize(
                workflow_id="wf",
                principal="agent:a",
                action="tool.call:search",
                context={"bad": 1.5},
            )  # type: ignore[dict-item]
        assert em.emitted == 0, "no decision may be recorded for an unevaluated request"


def test_gate_fails_closed_when_decision_cannot_be_recorded(tmp_path: Path) -> None:
    own = start_broker(tmp_path / "b.log")
    create_topics(own.bootstrap, ["gate.events"], 2)
    em = emitter(own.bootstrap, "gate.events", producer_config={"message.timeout.ms": 60_000})
    own.stop()
    ran = False
    with pytest.raises(GateError, match="decision could not be recorded"):
        grant = Gate(em, POLICY, confirm_timeout_s=1.5).authorize(
            workflow_id="wf", principal="agent:a", action="tool.call:search", resource="web:search"
        )
        ran = grant is not None
    assert not ran
    em.close(timeout=0.1)
