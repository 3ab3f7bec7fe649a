"""The gate records each decision's exact request, so the decision can be re-run."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from lineage.model import Decision, EventKind, ExecutionEvent
from lineage.policy import MAX_REQUEST_BYTES, REQUEST_ATTRIBUTE, PolicySet, parse_request
from lineage.policy_replay import replay
from producers.gate import AuthorizationDenied, Gate, GateError
from tests.support.lineage_builder import POLICY_FILE

T = 1_767_225_600_000_000


@dataclass
class _Report:
    ok: bool = True
    undelivered: int = 0
    failed: int = 0


@dataclass
class FakeEmitter:
    """Records what the gate emits; numbers nothing (the gate does not look)."""

    emitted: list[ExecutionEvent] = field(default_factory=list)

    def clock(self) -> int:
        return T

    def emit(self, **kw: Any) -> ExecutionEvent:
        kw.pop("seal", None)  # whether the emitter seals at once (test_sdk covers it)
        event = ExecutionEvent(
            event_id=f"e{len(self.emitted)}",
            emitter_id="policy-gate#1",
            emitter_seq=len(self.emitted),
            topic="lineage.events",
            partition=0,
            event_time=kw.pop("event_time", None) or T,
            attributes=dict(kw.pop("attributes", None) or {}),
            **kw,
        )
        self.emitted.append(event)
        return event

    def flush(self, timeout: float, *, seal: bool = True) -> _Report:
        return _Report()


@pytest.fixture
def policy() -> PolicySet:
    return PolicySet.load(POLICY_FILE)


def _gate(policy: PolicySet) -> tuple[Gate, FakeEmitter]:
    em = FakeEmitter()
    return Gate(em, policy), em  # type: ignore[arg-type]  # duck-typed emitter


def test_allow_records_the_request_its_input_digest_covers(policy: PolicySet) -> None:
    gate, em = _gate(policy)
    grant = gate.authorize(
        workflow_id="wf-1",
        principal="agent:planner",
        action="tool.call:search",
        resource="web:search",
        context={"k": 1, "q": "ünïcode"},
    )
    [event] = em.emitted
    assert event.kind is EventKind.AUTHORIZATION_DECISION
    text = event.attributes[REQUEST_ATTRIBUTE]
    assert event.authorization is not None
    assert event.authorization.input_digest == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    request = parse_request(text)
    assert (request.principal, request.action, request.resource) == (
        "agent:planner",
        "tool.call:search",
        "web:search",
    )
    assert request.context == {"k": 1, "q": "ünïcode"}
    replayed = replay(event.to_record(), {policy.digest_hex: policy})
    assert replayed.decision == grant.decision.decision.value == "ALLOW"


def test_deny_is_recorded_with_its_request_too(policy: PolicySet) -> None:
    gate, em = _gate(policy)
    with pytest.raises(AuthorizationDenied):
        gate.authorize(
            workflow_id="wf-1",
            principal="agent:planner",
            action="tool.call:delete_records",
            resource="crm:accounts",
        )
    [event] = em.emitted
    assert event.authorization is not None
    assert event.authorization.decision is Decision.DENY
    assert replay(event.to_record(), {policy.digest_hex: policy}).decision == "DENY"


def test_a_request_too_large_to_record_is_not_decided(policy: PolicySet) -> None:
    gate, em = _gate(policy)
    with pytest.raises(GateError, match="recorded"):
        gate.authorize(
            workflow_id="wf-1",
            principal="agent:planner",
            action="tool.call:search",
            context={"blob": "x" * MAX_REQUEST_BYTES},
        )
    assert em.emitted == []
