"""The processor's policy stage: stream rules checked per workflow, in chain order, on event time only."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, Protocol

from lineage.errors import ConfigError, DecodeError
from lineage.model import Decision, EventKind, ExecutionEvent, Severity, ViolationType
from lineage.policy import PolicySet

DEFAULT_MAX_TRACKED = 10_000
"""Per workflow and per map, the most ids the state keeps (oldest-inserted evicted first)."""

STATE_VERSION = 1
ACCESS_KINDS = frozenset({EventKind.EXECUTION_STARTED, EventKind.RESOURCE_ACCESS})
"""Kinds that touch their resource; only they are checked against forbidden resources."""


@dataclass(frozen=True, slots=True)
class SeenAuthorization:
    """What the rules keep of an AUTHORIZATION_DECISION event."""

    decision: Decision
    expires_at: int
    authorized_action: str
    authorized_resource: str | None
    authorizer_ok: bool
    emitter_id: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict on one event; the processor turns it into a Violation record."""

    violation_type: ViolationType
    rule: str
    severity: Severity
    explanation: str
    related_event_ids: tuple[str, ...] = ()


@dataclass
class WorkflowPolicyState:
    """Everything the stream rules remember about one workflow (persisted in a changelog table).

    ``depths`` maps event ids with a causal depth >= 1 to that depth, ``fanout`` counts child
    executions per parent event id, ``measurements`` holds the first runtime measurement seen per
    agent. Maps are bounded by the stage's ``max_tracked`` (oldest-inserted ids evicted first).
    """

    authorizations: dict[str, SeenAuthorization] = field(default_factory=dict)
    depths: dict[str, int] = field(default_factory=dict)
    fanout: dict[str, int] = field(default_factory=dict)
    measurements: dict[str, str] = field(default_factory=dict)
    contained: bool = False
    contained_by: str | None = None
    contained_at: str | None = None
    journal: list[tuple[Any, ...]] | None = field(default=None, compare=False, repr=False)
    """When set, every change to the maps is appended here as an operation (``JOURNAL_MAPS``):
    the workflow's state is written as these deltas (``state.WorkflowState.records``)."""

    def to_bytes(self) -> bytes:
        """Compact JSON; map order is kept so that eviction after a restore stays identical."""
        doc = {
            "v": STATE_VERSION,
            "authorizations": [
                [event_id, *_auth_to_json(a)] for event_id, a in self.authorizations.items()
            ],
            "depths": list(self.depths.items()),
            "fanout": list(self.fanout.items()),
            "measurements": list(self.measurements.items()),
            "contained": self.contained,
            "contained_by": self.contained_by,
            "contained_at": self.contained_at,
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> WorkflowPolicyState:
        """Inverse of to_bytes; DecodeError("BAD_POLICY_STATE") on anything else."""
        try:
            doc = json.loads(data.decode("utf-8"))
            if doc.get("v") != STATE_VERSION:
                raise ValueError(f"expected state version {STATE_VERSION}, found {doc.get('v')!r}")
            return cls(
                authorizations={str(v[0]): _auth_from_json(v[1:]) for v in doc["authorizations"]},
                depths={str(k): _int(v) for k, v in doc["depths"]},
                fanout={str(k): _int(v) for k, v in doc["fanout"]},
                measurements={str(k): str(v) for k, v in doc["measurements"]},
                contained=_bool(doc["contained"]),
                contained_by=_opt_str(doc["contained_by"]),
                contained_at=_opt_str(doc["contained_at"]),
            )
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DecodeError(
                "BAD_POLICY_STATE",
                f"policy state: expected a version {STATE_VERSION} document: {e}",
            ) from e

    def snapshot_ops(self) -> list[list[Any]]:
        """Operations that rebuild the maps as they are, in insertion order, from empty."""
        return [
            journal_op_json((tag, key, value))
            for tag, name in JOURNAL_MAPS.items()
            for key, value in getattr(self, name).items()
        ]

    def apply(self, ops: Sequence[Any]) -> None:
        """Replay journal operations (as ``journal_op_json`` writes them); DecodeError
        ("BAD_POLICY_STATE") on anything else."""
        try:
            for op in ops:
                mapping: dict[str, Any] = getattr(self, JOURNAL_MAPS[op[0]])
                if len(op) == 2:
                    del mapping[str(op[1])]
                else:
                    mapping[str(op[1])] = _VALUE_FROM_JSON[op[0]](op[2])
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise DecodeError(
                "BAD_POLICY_STATE", f"policy state journal: unreadable operation: {e!r}"
            ) from e


def _auth_to_json(a: SeenAuthorization) -> list[Any]:
    return [
        a.decision.value,
        a.expires_at,
        a.authorized_action,
        a.authorized_resource,
        a.authorizer_ok,
        a.emitter_id,
    ]


def _auth_from_json(v: Sequence[Any]) -> SeenAuthorization:
    decision, expires_at, action, resource, ok, emitter_id = v
    return SeenAuthorization(
        decision=Decision(decision),
        expires_at=_int(expires_at),
        authorized_action=str(action),
        authorized_resource=None if resource is None else str(resource),
        authorizer_ok=_bool(ok),
        emitter_id=str(emitter_id),
    )


def journal_op_json(op: tuple[Any, ...]) -> list[Any]:
    """A journal operation as JSON-ready values."""
    if len(op) == 3 and op[0] == "a":
        return [op[0], op[1], _auth_to_json(op[2])]
    return list(op)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, found {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected a boolean, found {value!r}")
    return value


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a string or null, found {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule may consult besides the event and the workflow state."""

    policy: PolicySet
    decision_trusted: bool


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule's positive result: why, and which other events it concerns."""

    explanation: str
    related_event_ids: tuple[str, ...] = ()


class Rule(Protocol):
    """A stream rule: reads the state as it was before the event, never changes it."""

    @property
    def name(self) -> str:
        """The rule name recorded in violations."""
        ...

    @property
    def violation_type(self) -> ViolationType:
        """The one violation type this rule reports."""
        ...

    def check(
        self, event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext
    ) -> Hit | None:
        """Return a hit if the event violates the rule."""
        ...


@dataclass(frozen=True, slots=True)
class FunctionRule:
    """A rule made of a name, a violation type and a check function."""

    name: str
    violation_type: ViolationType
    fn: Callable[[ExecutionEvent, WorkflowPolicyState, RuleContext], Hit | None]

    def check(
        self, event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext
    ) -> Hit | None:
        """Apply the function."""
        return self.fn(event, state, ctx)


def _matches(authorized: str | None, actual: str | None) -> bool:
    """Exact match, or ``authorized`` is a prefix pattern ending with ``*``."""
    if authorized is None or actual is None:
        return authorized == actual
    if authorized.endswith("*"):
        return actual.startswith(authorized[:-1])
    return authorized == actual


def _needs_authorization(event: ExecutionEvent, ctx: RuleContext) -> bool:
    return event.kind in ctx.policy.authorization_required_for


def _referenced(
    event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext
) -> tuple[str, SeenAuthorization] | None:
    """The authorization an event that needs one runs under, if it was seen earlier."""
    auth_id = event.authorization_id
    if not _needs_authorization(event, ctx) or auth_id is None:
        return None
    seen = state.authorizations.get(auth_id)
    return None if seen is None else (auth_id, seen)


def _unauthorized(
    event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext
) -> Hit | None:
    if not _needs_authorization(event, ctx):
        return None
    if event.authorization_id is None:
        return Hit(f"{event.kind} {event.action!r} carries no authorization_id")
    if event.authorization_id not in state.authorizations:
        return Hit(
            f"{event.kind} {event.action!r} refers to authorization {event.authorization_id}, "
            "which is not an earlier AUTHORIZATION_DECISION of this workflow",
            (event.authorization_id,),
        )
    return None


def _denied(event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext) -> Hit | None:
    ref = _referenced(event, state, ctx)
    if ref is None or ref[1].decision is not Decision.DENY:
        return None
    return Hit(
        f"{event.kind} {event.action!r} ran under authorization {ref[0]}, which was a DENY",
        (ref[0],),
    )


def _expired(event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext) -> Hit | None:
    ref = _referenced(event, state, ctx)
    if ref is None:
        return None
    auth_id, seen = ref
    if seen.decision is not Decision.ALLOW or event.event_time <= seen.expires_at:
        return None
    return Hit(
        f"{event.kind} at {event.event_time} µs is after authorization {auth_id} "
        f"expired at {seen.expires_at} µs",
        (auth_id,),
    )


def _scope(event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext) -> Hit | None:
    ref = _referenced(event, state, ctx)
    if ref is None:
        return None
    auth_id, seen = ref
    if seen.decision is not Decision.ALLOW:
        return None
    problems = []
    if not _matches(seen.authorized_action, event.action):
        problems.append(f"action {event.action!r} is not {seen.authorized_action!r}")
    if not _matches(seen.authorized_resource, event.resource):
        problems.append(f"resource {event.resource!r} is not {seen.authorized_resource!r}")
    if not problems:
        return None
    return Hit(f"outside the scope of authorization {auth_id}: {'; '.join(problems)}", (auth_id,))


def _untrusted(event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext) -> Hit | None:
    if event.kind is EventKind.AUTHORIZATION_DECISION:
        if ctx.decision_trusted:
            return None
        return Hit(f"decision emitted by {event.emitter_id!r}, which is not a trusted authorizer")
    ref = _referenced(event, state, ctx)
    if ref is None or ref[1].authorizer_ok:
        return None
    return Hit(
        f"{event.kind} relies on authorization {ref[0]} emitted by {ref[1].emitter_id!r}, "
        "which is not a trusted authorizer",
        (ref[0],),
    )


def _agent(event: ExecutionEvent) -> str:
    return event.agent_id if event.agent_id is not None else event.principal


@lru_cache(maxsize=4096)
def _first_match(value: str, patterns: tuple[str, ...]) -> str | None:
    """The first of ``patterns`` that ``value`` matches (fnmatch, case-sensitive), or None.

    Memoized: agents and resources repeat from event to event, and ``fnmatchcase`` costs a
    cache lookup and a regex match per pattern (a quarter of the policy stage's time before).
    """
    for pattern in patterns:
        if fnmatchcase(value, pattern):
            return pattern
    return None


def _attestation_required(event: ExecutionEvent, ctx: RuleContext) -> bool:
    return _first_match(_agent(event), ctx.policy.attestation_required_for_agents) is not None


def _measurement(event: ExecutionEvent) -> str | None:
    return event.runtime.measurement if event.runtime is not None else None


def _missing_attestation(
    event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext
) -> Hit | None:
    if event.kind is not EventKind.EXECUTION_STARTED or not _attestation_required(event, ctx):
        return None
    if _measurement(event):
        return None
    return Hit(f"agent {_agent(event)!r} started an execution without a runtime measurement")


def _attestation_changed(
    event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext
) -> Hit | None:
    if event.kind not in (EventKind.EXECUTION_STARTED, EventKind.ATTESTATION):
        return None
    if not _attestation_required(event, ctx):
        return None
    measurement = _measurement(event)
    first = state.measurements.get(_agent(event))
    if not measurement or first is None or measurement == first:
        return None
    return Hit(
        f"agent {_agent(event)!r} presented measurement {measurement!r}, "
        f"first seen in this workflow as {first!r}"
    )


def _depth_of(event: ExecutionEvent, state: WorkflowPolicyState) -> int:
    parent = state.depths.get(event.parent_event_id, 0) if event.parent_event_id else 0
    return parent + (1 if event.kind is EventKind.EXECUTION_STARTED else 0)


def _depth(event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext) -> Hit | None:
    if event.kind is not EventKind.EXECUTION_STARTED:
        return None
    depth = _depth_of(event, state)
    if depth <= ctx.policy.max_depth:
        return None
    related = (event.parent_event_id,) if event.parent_event_id else ()
    return Hit(f"execution at causal depth {depth}, limit {ctx.policy.max_depth}", related)


def _fanout(event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext) -> Hit | None:
    if event.kind is not EventKind.EXECUTION_STARTED or event.parent_event_id is None:
        return None
    count = state.fanout.get(event.parent_event_id, 0) + 1
    if count <= ctx.policy.max_fanout:
        return None
    return Hit(
        f"child execution #{count} of {event.parent_event_id}, limit {ctx.policy.max_fanout}",
        (event.parent_event_id,),
    )


def _forbidden(event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext) -> Hit | None:
    if event.kind not in ACCESS_KINDS or event.resource is None:
        return None
    pattern = _first_match(event.resource, ctx.policy.forbidden_resources)
    if pattern is None:
        return None
    return Hit(f"{event.kind} on {event.resource!r}, forbidden by pattern {pattern!r}")


DEFAULT_RULES: tuple[Rule, ...] = (
    FunctionRule("authorization.required", ViolationType.UNAUTHORIZED_EXECUTION, _unauthorized),
    FunctionRule("authorization.denied", ViolationType.DENIED_EXECUTION, _denied),
    FunctionRule("authorization.expiry", ViolationType.EXPIRED_AUTHORIZATION, _expired),
    FunctionRule("authorization.scope", ViolationType.SCOPE_MISMATCH, _scope),
    FunctionRule(
        "authorization.trusted_authorizer", ViolationType.UNTRUSTED_AUTHORIZER, _untrusted
    ),
    FunctionRule("attestation.required", ViolationType.MISSING_ATTESTATION, _missing_attestation),
    FunctionRule("attestation.stable", ViolationType.ATTESTATION_CHANGED, _attestation_changed),
    FunctionRule("limits.depth", ViolationType.DEPTH_EXCEEDED, _depth),
    FunctionRule("limits.fanout", ViolationType.FANOUT_EXCEEDED, _fanout),
    FunctionRule("resources.forbidden", ViolationType.FORBIDDEN_RESOURCE, _forbidden),
)
"""Every stream rule, in the order their findings are reported."""

CONTAINMENT_RULE = "containment"


JOURNAL_MAPS = {"a": "authorizations", "d": "depths", "f": "fanout", "m": "measurements"}
"""Journal tag of each map: ``(tag, key, value)`` sets a key, ``(tag, key)`` deletes it."""
_VALUE_FROM_JSON: dict[str, Callable[[Any], Any]] = {
    "a": _auth_from_json,
    "d": _int,
    "f": _int,
    "m": str,
}


def _put(
    mapping: dict[str, Any],
    key: str,
    value: Any,
    limit: int,
    journal: list[tuple[Any, ...]] | None,
    tag: str,
) -> None:
    """Insert or update, evicting the oldest-inserted keys beyond ``limit``; each change is
    appended to ``journal`` (when set) under the map's ``tag``."""
    if key not in mapping:
        while len(mapping) >= limit:
            oldest = next(iter(mapping))
            del mapping[oldest]
            if journal is not None:
                journal.append((tag, oldest))
    mapping[key] = value
    if journal is not None:
        journal.append((tag, key, value))


class PolicyStage:
    """Checks each event of a workflow, in chain order, against the stream rules."""

    def __init__(
        self,
        policy: PolicySet,
        is_trusted_authorizer: Callable[[str], bool],
        *,
        rules: Sequence[Rule] = DEFAULT_RULES,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        if not rules:
            raise ConfigError("policy stage: expected at least one rule, found none (fail closed)")
        if max_tracked < 1:
            raise ConfigError(f"policy stage: max_tracked: expected >= 1, found {max_tracked}")
        self.policy = policy
        self.is_trusted_authorizer = is_trusted_authorizer
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.max_tracked = max_tracked

    def check(
        self, event: ExecutionEvent, state: WorkflowPolicyState, *, authorizer_trusted: bool
    ) -> list[Finding]:
        """Findings for one event, in rule order; ``state`` is updated in place.

        A decision counts as trusted only if ``authorizer_trusted`` is true for its event (the
        processor authenticated it) and ``is_trusted_authorizer`` accepts its emitter_id. The flag
        is ignored for other kinds.
        """
        trusted = (
            event.kind is EventKind.AUTHORIZATION_DECISION
            and authorizer_trusted
            and self.is_trusted_authorizer(event.emitter_id)
        )
        ctx = RuleContext(self.policy, trusted)
        findings: list[Finding] = []
        if state.contained:
            findings.append(
                Finding(
                    ViolationType.CONTAINED_WORKFLOW,
                    CONTAINMENT_RULE,
                    self.policy.severity_for(ViolationType.CONTAINED_WORKFLOW),
                    f"workflow {event.workflow_id} is contained since {state.contained_by} "
                    f"at event {state.contained_at}",
                    (state.contained_at,) if state.contained_at else (),
                )
            )
        for rule in self.rules:
            hit = rule.check(event, state, ctx)
            if hit is not None:
                findings.append(
                    Finding(
                        rule.violation_type,
                        rule.name,
                        self.policy.severity_for(rule.violation_type),
                        hit.explanation,
                        hit.related_event_ids,
                    )
                )
        self._record(event, state, ctx)
        self._contain(event, state, findings)
        return findings

    def _record(self, event: ExecutionEvent, state: WorkflowPolicyState, ctx: RuleContext) -> None:
        limit = self.max_tracked
        auth = event.authorization
        if event.kind is EventKind.AUTHORIZATION_DECISION and auth is not None:
            seen = SeenAuthorization(
                decision=auth.decision,
                expires_at=auth.expires_at,
                authorized_action=auth.authorized_action,
                authorized_resource=auth.authorized_resource,
                authorizer_ok=ctx.decision_trusted,
                emitter_id=event.emitter_id,
            )
            _put(state.authorizations, event.event_id, seen, limit, state.journal, "a")
        if event.kind is not EventKind.WORKFLOW_COMPLETED:
            depth = _depth_of(event, state)
            if depth > 0:
                _put(state.depths, event.event_id, depth, limit, state.journal, "d")
        if event.kind is EventKind.EXECUTION_STARTED and event.parent_event_id is not None:
            count = state.fanout.get(event.parent_event_id, 0) + 1
            _put(state.fanout, event.parent_event_id, count, limit, state.journal, "f")
        measurement = _measurement(event)
        if (
            measurement
            and event.kind in (EventKind.EXECUTION_STARTED, EventKind.ATTESTATION)
            and _agent(event) not in state.measurements
        ):
            _put(state.measurements, _agent(event), measurement, limit, state.journal, "m")

    def _contain(
        self, event: ExecutionEvent, state: WorkflowPolicyState, findings: Iterable[Finding]
    ) -> None:
        if state.contained or not self.policy.critical_contains:
            return
        for finding in findings:
            if finding.severity is Severity.CRITICAL:
                state.contained = True
                state.contained_by = finding.violation_type.value
                state.contained_at = event.event_id
                return
