"""The SDK's direct event writer writes exactly the bytes fastavro writes for the same event.

Hashes and signatures cover the exact bytes, so ``codec.EventWriter`` (the emitter's hot path) may
differ from the reference encoding (``Schema.encode``: fastavro's validation and writer) in speed
only. Every event the strategy draws is written both ways; the bytes must be equal and must pass
``decode_body``'s canonical check, which re-encodes the decoded record.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lineage import codec, model
from lineage.errors import SchemaViolation
from lineage.model import Authorization, Decision, EventKind, ExecutionEvent, Runtime

SCHEMA = codec.load("execution_event")
WRITER = codec.EventWriter()  # one writer for every example: its caches are exercised too

# The processor's default limits (lineage.config): 16 KiB of attributes, 64 attributes.
MAX_ATTRIBUTE_BYTES = 16 * 1024

# Any Unicode scalar value (Hypothesis leaves out lone surrogates, which are not UTF-8).
_text = st.text(max_size=12)
# Lengths around the writer's table of encoded lengths (1,024) and varint byte boundaries.
_long_text = st.builds(
    lambda c, n: c * n,
    st.sampled_from(["a", "é", "€", "😀", "\x00"]),
    st.sampled_from([0, 1, 63, 64, 65, 1023, 1024, 1025, 8191, 8192, 8193]),
)
_any_text = _text | _long_text
_opt = st.none() | st.just("") | _any_text
_long = st.integers(-(2**63), 2**63 - 1)


@st.composite
def _attributes(draw: st.DrawFn) -> dict[str, str]:
    shape = draw(st.sampled_from(["empty", "small", "many", "max"]))
    if shape == "empty":
        return {}
    if shape == "small":
        return draw(st.dictionaries(_any_text, _any_text, max_size=4))
    if shape == "many":
        return {f"k{i}": draw(_text) for i in range(64)}
    # One attribute filling the whole budget, in multi-byte characters: 16 KiB of UTF-8.
    char = draw(st.sampled_from(["x", "é", "😀"]))
    key = draw(_text)
    room = MAX_ATTRIBUTE_BYTES - len(key.encode())
    return {key: char * (room // len(char.encode()))}


@st.composite
def _runtime(draw: st.DrawFn) -> Runtime | None:
    if draw(st.booleans()):
        return None
    return Runtime(
        host=draw(_any_text),
        image_digest=draw(_opt),
        attestation_type=draw(_opt),
        measurement=draw(_opt),
    )


@st.composite
def events(draw: st.DrawFn) -> ExecutionEvent:
    kind = draw(st.sampled_from(list(EventKind)))
    auth = None
    if kind is EventKind.AUTHORIZATION_DECISION:
        auth = Authorization(
            decision=draw(st.sampled_from(list(Decision))),
            policy_id=draw(_any_text),
            policy_digest=draw(_text),
            determining_policies=tuple(draw(st.lists(_any_text, max_size=4))),
            input_digest=draw(_any_text),
            expires_at=draw(_long),
            authorized_action=draw(_any_text),
            authorized_resource=draw(_opt),
        )
    event_id = draw(st.text(min_size=1, max_size=40))
    return ExecutionEvent(
        event_id=event_id,
        workflow_id=draw(st.text(min_size=1, max_size=30) | _long_text.filter(bool)),
        kind=kind,
        event_time=draw(st.integers(1, 2**63 - 1)),
        principal=draw(_any_text),
        action=draw(_any_text),
        emitter_id=draw(st.text(min_size=1, max_size=30)),
        emitter_seq=draw(st.integers(0, 2**63 - 1)),
        topic=draw(_text),
        partition=draw(st.integers(-(2**31), 2**31 - 1)),
        parent_event_id=draw(_opt.filter(lambda p: p != event_id)),
        parent_workflow_id=draw(_opt),
        trace_id=draw(_opt),
        span_id=draw(_opt),
        agent_id=draw(_opt),
        model_id=draw(_opt),
        model_version=draw(_opt),
        resource=draw(_opt),
        authorization_id=draw(_opt),
        authorization=auth,
        runtime=draw(_runtime()),
        input_digest=draw(_opt),
        output_digest=draw(_opt),
        attributes=draw(_attributes()),
    )


def _event(**overrides: Any) -> ExecutionEvent:
    values: dict[str, Any] = {
        "event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "workflow_id": "wf-1",
        "kind": EventKind.RESOURCE_ACCESS,
        "event_time": 1_764_662_400_123_456,
        "principal": "agent:planner",
        "action": "tool.call:search",
        "emitter_id": "svc#1",
        "emitter_seq": 7,
        "topic": "lineage.events",
        "partition": 3,
        "runtime": Runtime(host="node-1", image_digest="sha256:" + "ab" * 32),
        "attributes": {"step": "1"},
    }
    values.update(overrides)
    return ExecutionEvent(**values)


def _check_identical(event: ExecutionEvent, writer: codec.EventWriter = WRITER) -> bytes:
    fast = writer.encode(event)
    reference = SCHEMA.encode(event.to_record())
    assert fast == reference
    schema, record = codec.decode(fast)  # decode_body re-encodes: only the canonical bytes pass
    assert schema is SCHEMA
    assert ExecutionEvent.from_record(record) == event
    return fast


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
@example(_event())
@example(_event(attributes={}, runtime=None, principal="", action=""))
@example(
    _event(workflow_id="流程-ü-😀", principal="用户:ålice", attributes={"ключ": "значение 😀"})
)
@example(_event(event_time=2**63 - 1, emitter_seq=2**63 - 1, partition=2**31 - 1))
@example(_event(partition=-(2**31), event_time=1, emitter_seq=0))
def test_direct_writer_matches_fastavro_byte_for_byte(event: ExecutionEvent) -> None:
    _check_identical(event)


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_event_kind_is_written_identically(kind: EventKind) -> None:
    auth = None
    if kind is EventKind.AUTHORIZATION_DECISION:
        auth = Authorization(
            decision=Decision.DENY,
            policy_id="p",
            policy_digest="sha256:" + "00" * 32,
            determining_policies=("a", "b"),
            input_digest="sha256:" + "11" * 32,
            expires_at=-5,
            authorized_action="tool.call:search",
        )
    _check_identical(_event(kind=kind, authorization=auth))


def test_the_caches_never_change_the_bytes() -> None:
    writer = codec.EventWriter()
    rt = Runtime(host="node-1")
    # The same Runtime object, then an equal one, then one that differs: each written afresh.
    first = _check_identical(_event(runtime=rt), writer)
    assert _check_identical(_event(runtime=rt), writer) == first
    assert _check_identical(_event(runtime=Runtime(host="node-1")), writer) == first
    assert _check_identical(_event(runtime=Runtime(host="node-2")), writer) != first
    # More distinct strings than the cache holds: it is emptied and refilled, bytes unchanged.
    for i in range(codec._CACHE_ENTRIES + 50):
        _check_identical(_event(workflow_id=f"wf-{i}", attributes={f"k{i % 7}": str(i)}), writer)
    # Timestamps whose high bits change between events (the writer keeps the last ones encoded).
    for t in (1, 0x3FFF, 0x4000, 2**40, 2**40 + 1, 2**50, 2**40, 2**63 - 1):
        _check_identical(_event(event_time=t), writer)


def test_a_list_of_determining_policies_is_written_like_a_tuple() -> None:
    auth = Authorization(
        decision=Decision.ALLOW,
        policy_id="p",
        policy_digest="d",
        determining_policies=["x", "y"],  # type: ignore[arg-type]  # callers may pass a list
        input_digest="i",
        expires_at=9,
        authorized_action="a",
    )
    ev = _event(kind=EventKind.AUTHORIZATION_DECISION, authorization=auth)
    assert WRITER.encode(ev) == SCHEMA.encode(ev.to_record())


class _Seq(int):
    """An int subclass: left to the reference encoder (fastavro takes any Integral)."""


def test_values_the_writer_does_not_handle_go_to_the_reference_encoder() -> None:
    ev = _event(emitter_seq=_Seq(5))
    assert WRITER.encode(ev) == SCHEMA.encode(_event(emitter_seq=5).to_record())


@pytest.mark.parametrize(
    ("overrides", "found"),
    [
        ({"principal": 5}, "principal"),
        ({"event_time": 2**63}, "event_time"),
        ({"partition": 2**31}, "partition"),
        ({"attributes": {"k": 1}}, "attributes"),
        ({"resource": b"bytes"}, "resource"),
    ],
)
def test_values_outside_the_schema_raise_the_reference_schema_violation(
    overrides: dict[str, Any], found: str
) -> None:
    ev = _event(**overrides)
    with pytest.raises(
        SchemaViolation, match="execution_event: record does not match schema"
    ) as err:
        WRITER.encode(ev)
    assert found in str(err.value)


def test_a_string_that_is_not_utf8_is_a_schema_violation() -> None:
    ev = _event(principal="half a pair: \ud800")
    with pytest.raises(SchemaViolation, match="execution_event: string is not encodable as UTF-8"):
        WRITER.encode(ev)


@settings(max_examples=100, deadline=None)
@given(events())
def test_new_event_builds_what_the_dataclass_constructor_builds(event: ExecutionEvent) -> None:
    values = [getattr(event, name) for name in model._EVENT_FIELDS]
    built = model.new_event(*values)
    assert built == event
    assert [getattr(built, name) for name in model._EVENT_FIELDS] == values
    with pytest.raises(FrozenInstanceError):
        built.workflow_id = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"event_id": ""}, "event_id: expected a non-empty id, found ''"),
        ({"workflow_id": ""}, "workflow_id: expected a non-empty id, found ''"),
        ({"emitter_seq": -1}, "emitter_seq: expected >= 0, found -1"),
        ({"event_time": 0}, "event_time: expected > 0 µs, found 0"),
        ({"parent_event_id": "e"}, "parent_event_id: an event cannot be its own parent"),
        ({"kind": EventKind.AUTHORIZATION_DECISION}, "authorization: expected a decision"),
    ],
)
def test_new_event_checks_the_models_invariants(overrides: dict[str, Any], message: str) -> None:
    values = {**_event(event_id="e").to_record(), "kind": EventKind.RESOURCE_ACCESS}
    values["runtime"] = None
    values.update(overrides)
    with pytest.raises(SchemaViolation) as err:
        ExecutionEvent(**values)
    assert message in str(err.value)
    with pytest.raises(SchemaViolation) as err:
        model.new_event(*(values[name] for name in model._EVENT_FIELDS))
    assert message in str(err.value)


BATCH_SCHEMA = codec.load("sealed_batch")


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(2**31), 2**31 - 1),
    st.binary(max_size=200) | st.just(b"s" * 1024),
    st.lists(
        st.binary(max_size=2000) | st.sampled_from([b"", b"e" * 1023, b"e" * 1024]), max_size=70
    ),
)
def test_sealed_batch_writer_matches_fastavro_byte_for_byte(
    version: int, seal: bytes, events: list[bytes]
) -> None:
    fast = codec.write_sealed_batch(version, seal, events)
    record = {"format_version": version, "seal": seal, "events": events}
    assert fast == BATCH_SCHEMA.encode(record)
    assert codec.decode(fast) == (BATCH_SCHEMA, record)


@pytest.mark.parametrize(
    "args",
    [
        (1, "seal", []),
        (1, b"s", (b"e",)),
        (1, b"s", [b"e", "e"]),
        (2**31, b"s", []),
        (True, b"s", []),
    ],
)
def test_sealed_batch_writer_refuses_values_outside_the_schema(args: tuple[Any, Any, Any]) -> None:
    with pytest.raises(SchemaViolation, match=r"sealed_batch: .*expected"):
        codec.write_sealed_batch(*args)


def test_a_plain_string_is_not_an_event_kind() -> None:
    """Equal to a member's value, but not the member: refused, not written as that kind."""
    ev = _event(kind="AUTHORIZATION_DECISION")  # no authorization: the model's check passes
    with pytest.raises(SchemaViolation, match="execution_event: record does not match schema"):
        WRITER.encode(ev)
    auth = Authorization(
        decision="ALLOW",  # type: ignore[arg-type]
        policy_id="p",
        policy_digest="d",
        determining_policies=(),
        input_digest="i",
        expires_at=1,
        authorized_action="a",
    )
    ev = _event(kind=EventKind.AUTHORIZATION_DECISION, authorization=auth)
    with pytest.raises(SchemaViolation, match="execution_event: record does not match schema"):
        WRITER.encode(ev)
