"""Typed, frozen records decoded from the Avro schemas; each checks its invariants when built."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from lineage.errors import SchemaViolation


class EventKind(StrEnum):
    WORKFLOW_STARTED = "WORKFLOW_STARTED"
    AUTHORIZATION_DECISION = "AUTHORIZATION_DECISION"
    EXECUTION_STARTED = "EXECUTION_STARTED"
    EXECUTION_COMPLETED = "EXECUTION_COMPLETED"
    EXECUTION_FAILED = "EXECUTION_FAILED"
    RESOURCE_ACCESS = "RESOURCE_ACCESS"
    ATTESTATION = "ATTESTATION"
    WORKFLOW_COMPLETED = "WORKFLOW_COMPLETED"


EXECUTION_KINDS = frozenset(
    {EventKind.EXECUTION_STARTED, EventKind.EXECUTION_COMPLETED, EventKind.EXECUTION_FAILED}
)


class Decision(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


class Severity(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class ViolationType(StrEnum):
    UNAUTHORIZED_EXECUTION = "UNAUTHORIZED_EXECUTION"
    DENIED_EXECUTION = "DENIED_EXECUTION"
    EXPIRED_AUTHORIZATION = "EXPIRED_AUTHORIZATION"
    SCOPE_MISMATCH = "SCOPE_MISMATCH"
    UNTRUSTED_AUTHORIZER = "UNTRUSTED_AUTHORIZER"
    MISSING_ATTESTATION = "MISSING_ATTESTATION"
    ATTESTATION_CHANGED = "ATTESTATION_CHANGED"
    DEPTH_EXCEEDED = "DEPTH_EXCEEDED"
    FANOUT_EXCEEDED = "FANOUT_EXCEEDED"
    FORBIDDEN_RESOURCE = "FORBIDDEN_RESOURCE"
    SEQUENCE_GAP = "SEQUENCE_GAP"
    DUPLICATE_CONFLICT = "DUPLICATE_CONFLICT"
    ORPHAN_EVENT = "ORPHAN_EVENT"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    UNSEALED_EVENT = "UNSEALED_EVENT"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    CONTAINED_WORKFLOW = "CONTAINED_WORKFLOW"


class QuarantineReason(StrEnum):
    """Why a record was kept out of verified lineage (``QuarantineRecord.reason_code``)."""

    NULL_VALUE = "NULL_VALUE"
    NULL_KEY = "NULL_KEY"
    OVERSIZED = "OVERSIZED"
    OVERSIZED_ATTRIBUTES = "OVERSIZED_ATTRIBUTES"
    WRONG_RECORD_TYPE = "WRONG_RECORD_TYPE"
    NOT_SINGLE_OBJECT = "NOT_SINGLE_OBJECT"
    UNKNOWN_FINGERPRINT = "UNKNOWN_FINGERPRINT"
    TRUNCATED_AVRO = "TRUNCATED_AVRO"
    MALFORMED_AVRO = "MALFORMED_AVRO"
    TRAILING_BYTES = "TRAILING_BYTES"
    BAD_UTF8 = "BAD_UTF8"
    MISSING_FIELD = "MISSING_FIELD"
    WRONG_TOPIC = "WRONG_TOPIC"
    KEY_MISMATCH = "KEY_MISMATCH"
    WRONG_PARTITION = "WRONG_PARTITION"
    DUPLICATE_CONFLICT = "DUPLICATE_CONFLICT"
    UNSEALED_EVENT = "UNSEALED_EVENT"
    SEAL_INCOMPLETE = "SEAL_INCOMPLETE"
    DIGEST_MISMATCH = "DIGEST_MISMATCH"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    ORPHAN_EVENT = "ORPHAN_EVENT"
    # A sealed-batch record (schemas/sealed_batch.avsc) refused whole: an unknown format_version,
    # or framing that is not a seal plus that seal's event bytes.
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    MALFORMED_BATCH = "MALFORMED_BATCH"
    # Refused by the sink (sinks/clickhouse.py): a chain-row record it cannot decode, or rows
    # ClickHouse refused as data (not an outage).
    SINK_UNDECODABLE = "SINK_UNDECODABLE"
    SINK_REJECTED = "SINK_REJECTED"


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise SchemaViolation(message)


@dataclass(frozen=True, slots=True)
class Authorization:
    decision: Decision
    policy_id: str
    policy_digest: str
    determining_policies: tuple[str, ...]
    input_digest: str
    expires_at: int
    authorized_action: str
    authorized_resource: str | None = None

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Authorization:
        return cls(
            decision=Decision(r["decision"]),
            policy_id=r["policy_id"],
            policy_digest=r["policy_digest"],
            determining_policies=tuple(r["determining_policies"]),
            input_digest=r["input_digest"],
            expires_at=r["expires_at"],
            authorized_action=r["authorized_action"],
            authorized_resource=r.get("authorized_resource"),
        )

    def to_record(self) -> dict[str, Any]:
        r = asdict(self)
        r["decision"] = self.decision.value
        r["determining_policies"] = list(self.determining_policies)
        return r


@dataclass(frozen=True, slots=True)
class Runtime:
    host: str
    image_digest: str | None = None
    attestation_type: str | None = None
    measurement: str | None = None

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Runtime:
        return cls(**r)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ExecutionEvent:
    """An execution event (schemas/execution_event.avsc)."""

    event_id: str
    workflow_id: str
    kind: EventKind
    event_time: int
    principal: str
    action: str
    emitter_id: str
    emitter_seq: int
    topic: str
    partition: int
    parent_event_id: str | None = None
    parent_workflow_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    agent_id: str | None = None
    model_id: str | None = None
    model_version: str | None = None
    resource: str | None = None
    authorization_id: str | None = None
    authorization: Authorization | None = None
    runtime: Runtime | None = None
    input_digest: str | None = None
    output_digest: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One cheap test for the common case (the SDK builds an event per call); the messages,
        # formatted only when something is wrong, come from _explain.
        if (
            self.event_id
            and self.workflow_id
            and self.emitter_id
            and self.emitter_seq >= 0
            and self.event_time > 0
            and self.parent_event_id != self.event_id
            and (self.kind is EventKind.AUTHORIZATION_DECISION) == (self.authorization is not None)
        ):
            return
        self._explain()

    def _explain(self) -> None:
        _require(bool(self.event_id), "event_id: expected a non-empty id, found ''")
        _require(bool(self.workflow_id), "workflow_id: expected a non-empty id, found ''")
        _require(bool(self.emitter_id), "emitter_id: expected a non-empty id, found ''")
        _require(self.emitter_seq >= 0, f"emitter_seq: expected >= 0, found {self.emitter_seq}")
        _require(self.event_time > 0, f"event_time: expected > 0 µs, found {self.event_time}")
        _require(
            self.parent_event_id != self.event_id,
            "parent_event_id: an event cannot be its own parent",
        )
        is_decision = self.kind is EventKind.AUTHORIZATION_DECISION
        _require(
            is_decision == (self.authorization is not None),
            f"authorization: expected {'a decision' if is_decision else 'none'} on a {self.kind} event",
        )

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> ExecutionEvent:
        auth = r.get("authorization")
        rt = r.get("runtime")
        values = dict(r)
        values["kind"] = EventKind(r["kind"])
        values["authorization"] = Authorization.from_record(auth) if auth is not None else None
        values["runtime"] = Runtime.from_record(rt) if rt is not None else None
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        r = {name: getattr(self, name) for name in _EVENT_FIELDS}
        r["kind"] = self.kind.value
        r["authorization"] = self.authorization.to_record() if self.authorization else None
        r["runtime"] = self.runtime.to_record() if self.runtime else None
        return r


_EVENT_FIELDS = tuple(f.name for f in fields(ExecutionEvent))


class _Draft:
    """ExecutionEvent's memory layout without its frozen ``__setattr__``: ``new_event`` fills
    one, then makes it an ExecutionEvent (``__class__`` may change between classes whose slots
    are the same)."""

    __slots__ = ExecutionEvent.__slots__


def new_event(
    event_id: str,
    workflow_id: str,
    kind: EventKind,
    event_time: int,
    principal: str,
    action: str,
    emitter_id: str,
    emitter_seq: int,
    topic: str,
    partition: int,
    parent_event_id: str | None,
    parent_workflow_id: str | None,
    trace_id: str | None,
    span_id: str | None,
    agent_id: str | None,
    model_id: str | None,
    model_version: str | None,
    resource: str | None,
    authorization_id: str | None,
    authorization: Authorization | None,
    runtime: Runtime | None,
    input_digest: str | None,
    output_digest: str | None,
    attributes: dict[str, str],
) -> ExecutionEvent:
    """``ExecutionEvent(...)`` with every field given, in field order, at a fifth of the cost.

    The frozen dataclass's ``__init__`` stores each of the 24 fields through
    ``object.__setattr__``; this stores them as plain slot writes on a ``_Draft`` of the same
    layout, turns the draft into an ExecutionEvent, then checks the same invariants
    (``__post_init__``). For the SDK's hot path; a test holds it equal to the dataclass
    constructor, and the check below fails the import if the fields and this signature differ.
    """
    e: Any = _Draft()
    e.event_id = event_id
    e.workflow_id = workflow_id
    e.kind = kind
    e.event_time = event_time
    e.principal = principal
    e.action = action
    e.emitter_id = emitter_id
    e.emitter_seq = emitter_seq
    e.topic = topic
    e.partition = partition
    e.parent_event_id = parent_event_id
    e.parent_workflow_id = parent_workflow_id
    e.trace_id = trace_id
    e.span_id = span_id
    e.agent_id = agent_id
    e.model_id = model_id
    e.model_version = model_version
    e.resource = resource
    e.authorization_id = authorization_id
    e.authorization = authorization
    e.runtime = runtime
    e.input_digest = input_digest
    e.output_digest = output_digest
    e.attributes = attributes
    e.__class__ = ExecutionEvent
    event: ExecutionEvent = e
    event.__post_init__()
    return event


if tuple(new_event.__code__.co_varnames[: new_event.__code__.co_argcount]) != _EVENT_FIELDS:
    raise TypeError(f"new_event's parameters differ from ExecutionEvent's fields {_EVENT_FIELDS}")


@dataclass(frozen=True, slots=True)
class Seal:
    """An emitter's signed commitment to a range of its events (schemas/seal.avsc)."""

    emitter_id: str
    key_id: str
    topic: str
    partition: int
    first_seq: int
    last_seq: int
    merkle_root: bytes
    prev_seal_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _require(
            0 <= self.first_seq <= self.last_seq,
            f"seal range: expected 0 <= first <= last, found {self.first_seq}..{self.last_seq}",
        )
        _require(
            len(self.merkle_root) == 32,
            f"merkle_root: expected 32 bytes, found {len(self.merkle_root)}",
        )
        _require(
            len(self.prev_seal_hash) == 32,
            f"prev_seal_hash: expected 32 bytes, found {len(self.prev_seal_hash)}",
        )
        _require(
            len(self.signature) == 64, f"signature: expected 64 bytes, found {len(self.signature)}"
        )

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Seal:
        return cls(**r)

    def to_record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SEALED_BATCH_VERSION = 1


@dataclass(frozen=True, slots=True)
class SealedBatch:
    """One record per seal: the seal's exact bytes and its events' exact bytes, in seq order
    (schemas/sealed_batch.avsc). The bytes are what hashes and signatures cover."""

    format_version: int
    seal: bytes
    events: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _require(
            self.format_version == SEALED_BATCH_VERSION,
            f"format_version: expected {SEALED_BATCH_VERSION}, found {self.format_version}",
        )
        _require(len(self.events) > 0, "events: expected at least one event, found none")

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> SealedBatch:
        return cls(r["format_version"], r["seal"], tuple(r["events"]))

    def to_record(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "seal": self.seal,
            "events": list(self.events),
        }


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """A chained, verified event (schemas/chain_entry.avsc)."""

    workflow_id: str
    chain_seq: int
    event_id: str
    event_digest: bytes
    prev_hash: bytes
    entry_hash: bytes
    policy_digest: bytes
    event_bytes: bytes
    source_partition: int
    source_offset: int
    log_index: int
    seal_bytes: bytes
    seal_index: int
    seal_path: tuple[bytes, ...]
    flags: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> ChainEntry:
        values = dict(r)
        values["seal_path"] = tuple(r["seal_path"])
        values["flags"] = tuple(r["flags"])
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        r = {f.name: getattr(self, f.name) for f in fields(self)}
        r["seal_path"] = list(self.seal_path)
        r["flags"] = list(self.flags)
        return r


@dataclass(frozen=True, slots=True)
class Violation:
    """A policy or integrity violation (schemas/violation.avsc)."""

    violation_id: str
    violation_type: ViolationType
    rule: str
    severity: Severity
    workflow_id: str
    policy_digest: str
    explanation: str
    source_partition: int
    source_offset: int
    event_time: int
    event_id: str | None = None
    related_event_ids: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Violation:
        values = dict(r)
        values["violation_type"] = ViolationType(r["violation_type"])
        values["severity"] = Severity(r["severity"])
        values["related_event_ids"] = tuple(r["related_event_ids"])
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        r = {f.name: getattr(self, f.name) for f in fields(self)}
        r["violation_type"] = self.violation_type.value
        r["severity"] = self.severity.value
        r["related_event_ids"] = list(self.related_event_ids)
        return r


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed checkpoint of one partition's log (schemas/checkpoint.avsc)."""

    origin: str
    partition: int
    tree_size: int
    root_hash: bytes
    note: str
    key_name: str
    source_offset: int

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Checkpoint:
        return cls(**r)

    def to_record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """A record kept out of verified lineage, with its reason (schemas/quarantine.avsc)."""

    reason_code: QuarantineReason
    reason: str
    raw_value: bytes
    source_topic: str
    source_partition: int
    source_offset: int
    raw_key: bytes | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "reason_code", QuarantineReason(self.reason_code))
        except ValueError:
            raise SchemaViolation(
                f"reason_code: expected one of {', '.join(QuarantineReason)}, "
                f"found {self.reason_code!r}"
            ) from None

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> QuarantineRecord:
        return cls(**r)

    def to_record(self) -> dict[str, Any]:
        r = {f.name: getattr(self, f.name) for f in fields(self)}
        r["reason_code"] = self.reason_code.value
        return r


@dataclass(frozen=True, slots=True)
class Containment:
    """A workflow contained after a critical violation (schemas/containment.avsc)."""

    workflow_id: str
    violation_id: str
    violation_type: str
    event_id: str
    policy_digest: str
    source_partition: int
    source_offset: int

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Containment:
        return cls(**r)

    def to_record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
