"""Stream policy rules, containment, state persistence and determinism of the policy stage."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage.errors import ConfigError, DecodeError
from lineage.model import (
    Authorization,
    Decision,
    EventKind,
    ExecutionEvent,
    Runtime,
    Severity,
    ViolationType,
)
from lineage.policy import PolicySet
from stream_processors.policy_stage import (
    DEFAULT_RULES,
    Finding,
    PolicyStage,
    WorkflowPolicyState,
)

CEDAR = (Path(__file__).resolve().parents[3] / "policies" / "default.cedar").read_bytes()

TOML = """\
[policy]
id = "stage-test"
version = "1"
cedar = "default.cedar"
[limits]
max_depth = 3
max_fanout = 2
authorization_required_for = ["EXECUTION_STARTED", "RESOURCE_ACCESS"]
[attestation]
required_for_agents = ["agent:*"]
[resources]
forbidden = ["prod-db:payroll/*", "secrets:*"]
[containment]
critical_contains = {contains}
"""

GATE = "gate-1"
MEASUREMENT = "sha256:aaaa"
T0 = 1_700_000_000_000_000


def policy(*, contains: bool = False, extra: str = "") -> PolicySet:
    text = TOML.format(contains="true" if contains else "false") + extra
    return PolicySet.parse(text.encode(), CEDAR)


def stage(p: PolicySet | None = None, **kwargs: Any) -> PolicyStage:
    return PolicyStage(p or policy(), lambda emitter_id: emitter_id == GATE, **kwargs)


_seq = itertools.count()


def ev(
    kind: EventKind,
    event_id: str,
    *,
    t: int = 0,
    action: str = "tool.call:search",
    resource: str | None = "docs:faq",
    agent_id: str | None = "agent:planner",
    measurement: str | None = MEASUREMENT,
    **kwargs: Any,
) -> ExecutionEvent:
    """An event of workflow wf-1 at T0 + t µs, attested by default."""
    return ExecutionEvent(
        event_id=event_id,
        workflow_id="wf-1",
        kind=kind,
        event_time=T0 + t,
        principal="user:alice",
        action=action,
        resource=resource,
        agent_id=agent_id,
        emitter_id=kwargs.pop("emitter_id", "agent-svc"),
        emitter_seq=next(_seq),
        topic="lineage.events",
        partition=0,
        runtime=Runtime(host="h1", measurement=measurement) if measurement else None,
        **kwargs,
    )


def decision(
    event_id: str,
    *,
    allow: bool = True,
    t: int = 0,
    expires: int = 1_000_000,
    action: str = "tool.call:search",
    resource: str | None = "docs:faq",
    emitter_id: str = GATE,
    **kwargs: Any,
) -> ExecutionEvent:
    auth = Authorization(
        decision=Decision.ALLOW if allow else Decision.DENY,
        policy_id="stage-test",
        policy_digest="sha256:00",
        determining_policies=("agents-call-tools",),
        input_digest="sha256:11",
        expires_at=T0 + expires,
        authorized_action=action,
        authorized_resource=resource,
    )
    return ev(
        EventKind.AUTHORIZATION_DECISION,
        event_id,
        t=t,
        action=action,
        resource=resource,
        authorization=auth,
        emitter_id=emitter_id,
        **kwargs,
    )


def start(event_id: str, auth: str | None = "d1", **kwargs: Any) -> ExecutionEvent:
    return ev(EventKind.EXECUTION_STARTED, event_id, authorization_id=auth, **kwargs)


def run(
    events: Iterable[ExecutionEvent],
    s: PolicyStage | None = None,
    state: WorkflowPolicyState | None = None,
    *,
    trusted: bool = True,
) -> list[list[Finding]]:
    s = s or stage()
    state = state if state is not None else WorkflowPolicyState()
    return [s.check(e, state, authorizer_trusted=trusted) for e in events]


def types(findings: list[list[Finding]]) -> list[list[ViolationType]]:
    return [[f.violation_type for f in per_event] for per_event in findings]


def compliant_workflow() -> list[ExecutionEvent]:
    return [
        ev(EventKind.WORKFLOW_STARTED, "w0", action="workflow.start", resource=None),
        decision("d1", t=10, parent_event_id="w0"),
        start("x1", t=20, parent_event_id="w0"),
        ev(EventKind.RESOURCE_ACCESS, "r1", t=30, parent_event_id="x1", authorization_id="d1"),
        decision("d2", t=40, action="api.call", resource="api:*", parent_event_id="x1"),
        start("x2", "d2", t=50, action="api.call", resource="api:weather", parent_event_id="x1"),
        ev(EventKind.EXECUTION_COMPLETED, "c2", t=60, parent_event_id="x2", action="api.call"),
        ev(EventKind.EXECUTION_COMPLETED, "c1", t=1_000_000, parent_event_id="x1"),
        ev(EventKind.WORKFLOW_COMPLETED, "w1", t=1_000_001, action="workflow.end", resource=None),
    ]


def test_compliant_workflow_has_no_findings() -> None:
    assert run(compliant_workflow(), stage(policy(contains=True))) == [[] for _ in range(9)]


def test_compliant_workflow_under_default_policy_file() -> None:
    p = PolicySet.load(Path(__file__).resolve().parents[3] / "policies" / "default.toml")
    assert run(compliant_workflow(), stage(p)) == [[] for _ in range(9)]


def test_unauthorized_without_authorization_id() -> None:
    out = run([start("x1", auth=None)])
    assert types(out) == [[ViolationType.UNAUTHORIZED_EXECUTION]]
    f = out[0][0]
    assert (f.rule, f.severity, f.related_event_ids) == (
        "authorization.required",
        Severity.HIGH,
        (),
    )
    assert "carries no authorization_id" in f.explanation


def test_unauthorized_with_unknown_or_later_authorization() -> None:
    out = run([start("x1", auth="d1", t=5), decision("d1", t=10), start("x2", auth="d9", t=20)])
    assert types(out) == [
        [ViolationType.UNAUTHORIZED_EXECUTION],
        [],
        [ViolationType.UNAUTHORIZED_EXECUTION],
    ]
    assert out[0][0].related_event_ids == ("d1",)
    assert "not an earlier AUTHORIZATION_DECISION" in out[2][0].explanation


def test_resource_access_needs_authorization_but_completion_does_not() -> None:
    out = run(
        [
            ev(EventKind.RESOURCE_ACCESS, "r1"),
            ev(EventKind.EXECUTION_COMPLETED, "c1"),
            ev(EventKind.EXECUTION_FAILED, "f1"),
        ]
    )
    assert types(out) == [[ViolationType.UNAUTHORIZED_EXECUTION], [], []]


def test_denied_execution() -> None:
    out = run([decision("d1", allow=False), start("x1", t=1)])
    assert types(out) == [[], [ViolationType.DENIED_EXECUTION]]
    f = out[1][0]
    assert (f.rule, f.severity, f.related_event_ids) == (
        "authorization.denied",
        Severity.HIGH,
        ("d1",),
    )


def test_expired_authorization() -> None:
    out = run([decision("d1", expires=100), start("x1", t=100), start("x2", t=101)])
    assert types(out) == [[], [], [ViolationType.EXPIRED_AUTHORIZATION]]
    f = out[2][0]
    assert (f.rule, f.severity) == ("authorization.expiry", Severity.MEDIUM)
    assert f"expired at {T0 + 100}" in f.explanation


@pytest.mark.parametrize(
    ("authorized", "actual", "ok"),
    [
        (("tool.call:search", "docs:faq"), ("tool.call:search", "docs:faq"), True),
        (("tool.call:*", "docs:*"), ("tool.call:fetch", "docs:faq/2"), True),
        (("tool.call:search", "docs:faq"), ("tool.call:fetch", "docs:faq"), False),
        (("tool.call:search", "docs:faq"), ("tool.call:search", "docs:other"), False),
        (("tool.call:search", None), ("tool.call:search", None), True),
        (("tool.call:search", None), ("tool.call:search", "docs:faq"), False),
        (("tool.call:search", "docs:faq"), ("tool.call:search", None), False),
        (("tool.call:se", "docs:faq"), ("tool.call:search", "docs:faq"), False),
    ],
)
def test_scope_mismatch(
    authorized: tuple[str, str | None], actual: tuple[str, str | None], ok: bool
) -> None:
    out = run(
        [
            decision("d1", action=authorized[0], resource=authorized[1]),
            start("x1", t=1, action=actual[0], resource=actual[1]),
        ]
    )
    assert types(out) == [[], [] if ok else [ViolationType.SCOPE_MISMATCH]]
    if not ok:
        f = out[1][0]
        assert (f.rule, f.severity, f.related_event_ids) == (
            "authorization.scope",
            Severity.HIGH,
            ("d1",),
        )


def test_untrusted_authorizer_at_decision_and_execution() -> None:
    out = run([decision("d1", emitter_id="rogue"), start("x1", t=1)])
    assert types(out) == [
        [ViolationType.UNTRUSTED_AUTHORIZER],
        [ViolationType.UNTRUSTED_AUTHORIZER],
    ]
    assert out[0][0].severity is Severity.CRITICAL
    assert "'rogue'" in out[0][0].explanation
    assert out[1][0].related_event_ids == ("d1",)
    assert out[1][0].rule == "authorization.trusted_authorizer"


def test_unauthenticated_decision_is_untrusted_even_from_trusted_emitter() -> None:
    out = run([decision("d1"), start("x1", t=1)], trusted=False)
    assert types(out) == [
        [ViolationType.UNTRUSTED_AUTHORIZER],
        [ViolationType.UNTRUSTED_AUTHORIZER],
    ]


def test_authorizer_flag_ignored_for_non_decisions() -> None:
    s, state = stage(), WorkflowPolicyState()
    assert s.check(decision("d1"), state, authorizer_trusted=True) == []
    assert s.check(start("x1", t=1), state, authorizer_trusted=False) == []


def test_missing_attestation() -> None:
    out = run([decision("d1"), start("x1", t=1, measurement=None)])
    assert types(out) == [[], [ViolationType.MISSING_ATTESTATION]]
    assert (out[1][0].rule, out[1][0].severity) == ("attestation.required", Severity.MEDIUM)


def test_attestation_only_for_matching_agents() -> None:
    out = run(
        [
            decision("d1"),
            start("x1", t=1, agent_id="service:batch", measurement=None),
            start("x2", t=2, agent_id=None, measurement=None),
        ]
    )
    assert types(out) == [[], [], []]


def test_principal_stands_in_for_missing_agent_id() -> None:
    p = PolicySet.parse(
        TOML.format(contains="false").replace('"agent:*"', '"user:*"').encode(), CEDAR
    )
    out = run([decision("d1"), start("x1", t=1, agent_id=None, measurement=None)], stage(p))
    assert types(out) == [[], [ViolationType.MISSING_ATTESTATION]]


def test_attestation_changed() -> None:
    out = run(
        [
            decision("d1", action="tool.call:*"),
            start("x1", t=1),
            start("x2", t=2, measurement="sha256:bbbb"),
            start("x3", t=3, agent_id="agent:other", measurement="sha256:cccc"),
            start("x4", t=4),
        ]
    )
    assert types(out) == [[], [], [ViolationType.ATTESTATION_CHANGED], [], []]
    f = out[2][0]
    assert (f.rule, f.severity) == ("attestation.stable", Severity.HIGH)
    assert "'sha256:bbbb'" in f.explanation and f"'{MEASUREMENT}'" in f.explanation


def test_attestation_event_sets_first_measurement() -> None:
    out = run(
        [
            ev(EventKind.ATTESTATION, "a1", measurement="sha256:tee"),
            decision("d1"),
            start("x1", t=1),
        ]
    )
    assert types(out) == [[], [], [ViolationType.ATTESTATION_CHANGED]]


def test_depth_exceeded() -> None:
    events = [decision("d1", action="tool.call:*", resource="docs:*")]
    parent = None
    for i in range(1, 6):
        events.append(start(f"x{i}", t=i, parent_event_id=parent))
        parent = f"x{i}"
    out = run(events)
    assert types(out) == [
        [],
        [],
        [],
        [],
        [ViolationType.DEPTH_EXCEEDED],
        [ViolationType.DEPTH_EXCEEDED],
    ]
    f = out[4][0]
    assert (f.rule, f.severity, f.related_event_ids) == ("limits.depth", Severity.MEDIUM, ("x3",))
    assert "causal depth 4, limit 3" in f.explanation


def test_depth_counts_through_non_execution_events() -> None:
    events = [
        decision("d1", action="tool.call:*", resource="docs:*"),
        start("x1", t=1),
        start("x2", t=2, parent_event_id="x1"),
        ev(EventKind.RESOURCE_ACCESS, "r2", t=3, parent_event_id="x2", authorization_id="d1"),
        start("x3", t=4, parent_event_id="r2"),
        start("x4", t=5, parent_event_id="r2"),
        ev(EventKind.EXECUTION_COMPLETED, "c3", t=6, parent_event_id="x3"),
        start("x5", t=7, parent_event_id="c3"),
    ]
    assert types(run(events)) == [[], [], [], [], [], [], [], [ViolationType.DEPTH_EXCEEDED]]


def test_fanout_exceeded() -> None:
    events = [
        decision("d1", action="tool.call:*", resource="docs:*"),
        start("x0", t=1),
        *(start(f"c{i}", t=2 + i, parent_event_id="x0") for i in range(4)),
        start("other", t=9, parent_event_id="c0"),
    ]
    out = run(events)
    assert types(out) == [
        [],
        [],
        [],
        [],
        [ViolationType.FANOUT_EXCEEDED],
        [ViolationType.FANOUT_EXCEEDED],
        [],
    ]
    f = out[4][0]
    assert (f.rule, f.severity, f.related_event_ids) == ("limits.fanout", Severity.MEDIUM, ("x0",))
    assert "child execution #3 of x0, limit 2" in f.explanation


def test_forbidden_resource() -> None:
    out = run(
        [
            decision("d1", resource="secrets:*"),
            start("x1", t=1, resource="secrets:db-password"),
            ev(
                EventKind.RESOURCE_ACCESS,
                "r1",
                t=2,
                resource="secrets:api-key",
                authorization_id="d1",
            ),
            ev(EventKind.EXECUTION_COMPLETED, "c1", t=3, resource="secrets:db-password"),
        ]
    )
    assert types(out) == [
        [],
        [ViolationType.FORBIDDEN_RESOURCE],
        [ViolationType.FORBIDDEN_RESOURCE],
        [],
    ]
    f = out[1][0]
    assert (f.rule, f.severity) == ("resources.forbidden", Severity.HIGH)
    assert "'secrets:*'" in f.explanation


def test_severity_override_applies() -> None:
    p = policy(extra='[severity]\nFORBIDDEN_RESOURCE = "LOW"\n')
    out = run(
        [decision("d1", resource="secrets:x"), start("x1", t=1, resource="secrets:x")], stage(p)
    )
    assert out[1][0].severity is Severity.LOW


def test_critical_finding_contains_workflow() -> None:
    events = [
        decision("d1", emitter_id="rogue"),
        start("x1", t=1),
        decision("d2", t=2),
        start("x2", "d2", t=3),
        ev(EventKind.WORKFLOW_COMPLETED, "w1", t=4),
    ]
    out = run(events, stage(policy(contains=True)))
    assert types(out) == [
        [ViolationType.UNTRUSTED_AUTHORIZER],
        [ViolationType.CONTAINED_WORKFLOW, ViolationType.UNTRUSTED_AUTHORIZER],
        [ViolationType.CONTAINED_WORKFLOW],
        [ViolationType.CONTAINED_WORKFLOW],
        [ViolationType.CONTAINED_WORKFLOW],
    ]
    f = out[2][0]
    assert (f.rule, f.severity, f.related_event_ids) == ("containment", Severity.HIGH, ("d1",))
    assert "UNTRUSTED_AUTHORIZER" in f.explanation and "d1" in f.explanation


def test_no_containment_when_disabled_or_not_critical() -> None:
    assert types(run([decision("d1", emitter_id="rogue"), start("x1", t=1)])) == [
        [ViolationType.UNTRUSTED_AUTHORIZER],
        [ViolationType.UNTRUSTED_AUTHORIZER],
    ]
    out = run([start("x1", auth=None), start("x2", auth=None)], stage(policy(contains=True)))
    assert types(out) == [[ViolationType.UNAUTHORIZED_EXECUTION]] * 2


def test_severity_override_to_critical_contains() -> None:
    p = policy(contains=True, extra='[severity]\nFORBIDDEN_RESOURCE = "CRITICAL"\n')
    state = WorkflowPolicyState()
    run(
        [decision("d1", resource="secrets:x"), start("x1", t=1, resource="secrets:x")],
        stage(p),
        state,
    )
    assert (state.contained, state.contained_by, state.contained_at) == (
        True,
        "FORBIDDEN_RESOURCE",
        "x1",
    )


def test_state_round_trip_mid_workflow_gives_identical_findings() -> None:
    events = [
        decision("d1", action="tool.call:*", resource="docs:*"),
        start("x1", t=1),
        start("x2", t=2, parent_event_id="x1", measurement="sha256:zz"),
        decision("d2", emitter_id="rogue", t=3),
        start("x3", "d2", t=4, parent_event_id="x2"),
        start("x4", t=5, parent_event_id="x3"),
        start("x5", t=6, parent_event_id="x1"),
        start("x6", t=7, parent_event_id="x1"),
        start("x7", t=8, resource="secrets:k"),
    ]
    s = stage(policy(contains=True))
    whole = run(events, s)
    for cut in range(len(events) + 1):
        state = WorkflowPolicyState()
        first = run(events[:cut], s, state)
        data = state.to_bytes()
        restored = WorkflowPolicyState.from_bytes(data)
        assert restored == state
        assert restored.to_bytes() == data
        assert first + run(events[cut:], s, restored) == whole
    assert any(whole[4:])


def test_state_bounded_with_fifo_eviction() -> None:
    s = stage(max_tracked=2)
    state = WorkflowPolicyState()
    events = [
        decision("d1", action="tool.call:*", resource="docs:*"),
        start("x1", t=1),
        start("x2", t=2, parent_event_id="x1"),
        start("x3", t=3, parent_event_id="x2"),
    ]
    run(events, s, state)
    assert list(state.depths) == ["x2", "x3"]
    assert list(state.fanout) == ["x1", "x2"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"[]",
        b'{"v":2}',
        b'{"v":1}',
        b'{"v":1,"authorizations":[["d","MAYBE",1,"a",null,true,"e"]]}',
    ],
)
def test_bad_state_bytes(data: bytes) -> None:
    with pytest.raises(DecodeError) as err:
        WorkflowPolicyState.from_bytes(data)
    assert err.value.code == "BAD_POLICY_STATE"


def test_empty_rule_set_fails_closed() -> None:
    with pytest.raises(ConfigError, match="at least one rule"):
        stage(rules=())
    with pytest.raises(ConfigError, match="max_tracked"):
        stage(max_tracked=0)


def test_rules_are_combinable() -> None:
    only_forbidden = tuple(r for r in DEFAULT_RULES if r.name == "resources.forbidden")
    out = run(
        [start("x1", auth=None, resource="secrets:k", measurement=None)],
        stage(rules=only_forbidden),
    )
    assert types(out) == [[ViolationType.FORBIDDEN_RESOURCE]]


IDS = [f"e{i}" for i in range(12)]


@st.composite
def event_sequences(draw: st.DrawFn) -> list[tuple[ExecutionEvent, bool]]:
    count = draw(st.integers(min_value=1, max_value=len(IDS)))
    out: list[tuple[ExecutionEvent, bool]] = []
    for i in range(count):
        earlier = IDS[:i]
        kind = draw(st.sampled_from(list(EventKind)))
        parent = draw(st.none() | st.sampled_from(earlier)) if earlier else None
        common: dict[str, Any] = {
            "t": draw(st.integers(min_value=0, max_value=300)),
            "action": draw(
                st.sampled_from(["tool.call:search", "tool.call:delete_records", "api.call"])
            ),
            "resource": draw(st.sampled_from([None, "docs:faq", "secrets:k", "api:weather"])),
            "agent_id": draw(st.sampled_from([None, "agent:a", "agent:b", "svc:c"])),
            "measurement": draw(st.sampled_from([None, "m1", "m2"])),
            "parent_event_id": parent,
        }
        if kind is EventKind.AUTHORIZATION_DECISION:
            e = decision(
                IDS[i],
                allow=draw(st.booleans()),
                expires=draw(st.integers(min_value=0, max_value=300)),
                emitter_id=draw(st.sampled_from([GATE, "rogue"])),
                **common,
            )
        else:
            auth = draw(st.none() | st.sampled_from([*earlier, "nowhere"]))
            e = ev(kind, IDS[i], authorization_id=auth, **common)
        out.append((e, draw(st.booleans())))
    return out


@settings(max_examples=200, deadline=None)
@given(event_sequences(), st.integers(min_value=0, max_value=len(IDS)), st.booleans())
def test_findings_are_a_function_of_the_event_sequence(
    seq: list[tuple[ExecutionEvent, bool]], cut: int, contains: bool
) -> None:
    p = policy(contains=contains)

    def replay(restore_at: int | None) -> list[list[Finding]]:
        s, state = stage(p), WorkflowPolicyState()
        out = []
        for i, (e, trusted) in enumerate(seq):
            if i == restore_at:
                state = WorkflowPolicyState.from_bytes(state.to_bytes())
            out.append(s.check(e, state, authorizer_trusted=trusted))
        return out

    first = replay(None)
    assert replay(None) == first
    assert replay(cut) == first
    contained = False
    for findings in first:
        if contained:
            assert findings[0].violation_type is ViolationType.CONTAINED_WORKFLOW
        contained = contained or (
            contains and any(f.severity is Severity.CRITICAL for f in findings)
        )
