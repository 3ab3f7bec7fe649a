"""Deterministic violation and quarantine records built by the stages."""

from __future__ import annotations

import hashlib

from lineage.model import QuarantineReason, QuarantineRecord, Severity, Violation, ViolationType
from stream_processors.records import PendingEvent

INTEGRITY_SEVERITY = Severity.CRITICAL


def violation_id(
    vtype: ViolationType,
    workflow_id: str,
    event_id: str | None,
    partition: int,
    offset: int,
    rule: str,
) -> str:
    """Same inputs, same id: a replayed violation deduplicates downstream.

    The rule is part of the id: one seal can break two rules of one type at one offset (the
    seal chain and the emitter sequence), and the sink must keep both.
    """
    text = f"{vtype.value}|{rule}|{workflow_id}|{event_id or ''}|{partition}|{offset}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def integrity_violation(
    vtype: ViolationType,
    *,
    rule: str,
    explanation: str,
    workflow_id: str,
    partition: int,
    offset: int,
    event_time: int,
    policy_digest: str,
    event_id: str | None = None,
    related: tuple[str, ...] = (),
    severity: Severity = INTEGRITY_SEVERITY,
) -> Violation:
    return Violation(
        violation_id=violation_id(vtype, workflow_id, event_id, partition, offset, rule),
        violation_type=vtype,
        rule=rule,
        severity=severity,
        workflow_id=workflow_id,
        policy_digest=policy_digest,
        explanation=explanation,
        source_partition=partition,
        source_offset=offset,
        event_time=event_time,
        event_id=event_id,
        related_event_ids=related,
    )


def quarantine_event(
    p: PendingEvent, topic: str, partition: int, code: QuarantineReason | str, reason: str
) -> QuarantineRecord:
    """The quarantine record of an event refused after decoding; ``code`` must be a reason."""
    return QuarantineRecord(
        reason_code=QuarantineReason(code),
        reason=reason,
        raw_value=p.data,
        source_topic=topic,
        source_partition=partition,
        source_offset=p.offset,
        raw_key=p.event.workflow_id.encode(),
    )
