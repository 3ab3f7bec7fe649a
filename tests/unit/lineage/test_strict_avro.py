"""The verifier's strict Avro decoder never accepts what ``decode_body`` refuses, and agrees with it.

Real events (from a processor run), generated events with unusual values, and byte mutations of
real events: whenever the strict decoder returns a record, ``codec.Schema.decode_body`` returns
the same record; non-canonical spellings that ``decode_body`` refuses are refused here too.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineage import codec
from lineage.errors import LineageError
from lineage.verify.strict_avro import (
    StrictDecodeError,
    _varint,
    compile_decoder,
    decoder_for,
)
from tests.support.lineage_builder import build_dataset

pytestmark = pytest.mark.timeout(300)

SCHEMA = codec.load("execution_event")
DECODE = decoder_for("execution_event")
EVENTS = [e.event_bytes for e in build_dataset(workflows=3, steps=3).entries]


def _reference(data: bytes) -> dict[str, Any] | None:
    try:
        return SCHEMA.decode_body(data)
    except (LineageError, ValueError, TypeError, IndexError, OverflowError):
        return None


def _strict(data: bytes) -> dict[str, Any] | None:
    assert DECODE is not None
    try:
        return DECODE(data, codec.HEADER_LEN)
    except StrictDecodeError:
        return None


def _zigzag(v: int) -> bytes:
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def test_the_event_schema_compiles() -> None:
    assert DECODE is not None


def test_real_events_decode_as_the_reference_does() -> None:
    assert EVENTS
    for data in EVENTS:
        assert _strict(data) == SCHEMA.decode_body(data)


def test_unsupported_schemas_give_no_decoder() -> None:
    assert (
        compile_decoder({"type": "record", "name": "x", "fields": [{"name": "a", "type": "bytes"}]})
        is None
    )
    assert (
        compile_decoder(
            {"type": "record", "name": "x", "fields": [{"name": "a", "type": "boolean"}]}
        )
        is None
    )
    assert compile_decoder("string") is None


def test_varints() -> None:
    for v in (0, -1, 1, 63, -64, 64, 2**31, -(2**63), 2**63 - 1):
        assert _varint(_zigzag(v) + b"\x00", 0) == (v, len(_zigzag(v)))
    with pytest.raises(StrictDecodeError, match="shortest"):
        _varint(b"\x80\x00", 0)
    with pytest.raises(StrictDecodeError, match="longer than 10"):
        _varint(b"\xff" * 11, 0)
    with pytest.raises(StrictDecodeError, match="beyond 64 bits"):
        _varint(b"\xff" * 9 + b"\x7f", 0)


def _body(record: dict[str, Any]) -> bytes:
    return SCHEMA.encode(record)


def _base() -> dict[str, Any]:
    return dict(SCHEMA.decode_body(EVENTS[1]))


def _with_attributes(attributes: bytes) -> bytes:
    """A real event whose attributes map is spelled by ``attributes`` (the bytes after it kept)."""
    record = _base()
    record["attributes"] = {}
    data = _body(record)
    tail = _zigzag(0) + b"".join(
        _zigzag(len(s.encode())) + s.encode() for s in (record["emitter_id"],)
    )
    at = data.rindex(tail)
    assert data[at : at + 1] == b"\x00"
    return data[:at] + attributes + data[at + 1 :]


@pytest.mark.parametrize(
    "attributes",
    [
        _zigzag(1) + b"\x02k\x02v" + _zigzag(1) + b"\x02j\x02w\x00",  # two blocks
        _zigzag(-1) + _zigzag(6) + b"\x02k\x02v\x00",  # negative count with byte size
        _zigzag(2) + b"\x02k\x02v\x02k\x02w\x00",  # duplicate key
        b"\x81\x00" + b"\x02k\x02v\x00",  # over-long count
        _zigzag(1) + b"\x02k\x02\xff\x00",  # value not UTF-8
    ],
)
def test_non_canonical_maps_are_refused_by_both(attributes: bytes) -> None:
    data = _with_attributes(attributes)
    assert _reference(data) is None
    assert _strict(data) is None


def test_canonical_map_is_read() -> None:
    data = _with_attributes(_zigzag(1) + b"\x02k\x02v\x00")
    assert _strict(data) == _reference(data) is not None
    assert _strict(data)["attributes"] == {"k": "v"}  # type: ignore[index]


def test_non_canonical_union_and_trailing_bytes_are_refused() -> None:
    data = EVENTS[0]
    body = data[codec.HEADER_LEN :]
    # the third field is a ["null", "string"] union: index 0 as a two-byte varint
    first = body[0] >> 1
    second = body[1 + first] >> 1
    at = codec.HEADER_LEN + 1 + first + 1 + second
    assert data[at] in (0, 2)
    if data[at] == 0:
        spelled = data[:at] + b"\x80\x00" + data[at + 1 :]
        assert _reference(spelled) is None and _strict(spelled) is None
        negative = data[:at] + b"\x01" + data[at + 1 :]
        assert _strict(negative) is None
    for bad in (data + b"\x00", data[:-1], data[:-5]):
        assert _reference(bad) is None and _strict(bad) is None


texts = st.text(max_size=30) | st.sampled_from(["", "é", "日本", "\x00", "a" * 200])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    principal=texts,
    attributes=st.dictionaries(texts, texts, max_size=5),
    agent=st.none() | texts,
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    partition=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    event_time=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_generated_events_decode_as_the_reference_does(
    principal: str,
    attributes: dict[str, str],
    agent: str | None,
    seq: int,
    partition: int,
    event_time: int,
) -> None:
    record = _base()
    record.update(
        principal=principal,
        attributes=attributes,
        agent_id=agent,
        emitter_seq=seq,
        partition=partition,
        event_time=event_time,
    )
    try:
        data = _body(record)
    except LineageError:  # e.g. text the schema layer refuses
        return
    reference = _reference(data)
    assert reference is not None
    assert _strict(data) == reference


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(min_value=0, max_value=len(EVENTS) - 1),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete"]),
            st.integers(min_value=codec.HEADER_LEN, max_value=10_000),
            st.integers(min_value=0, max_value=255),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_mutated_events_are_never_accepted_unless_the_reference_agrees(
    which: int, edits: list[tuple[str, int, int]]
) -> None:
    data = bytearray(EVENTS[which])
    for op, at, value in edits:
        at = codec.HEADER_LEN + (at - codec.HEADER_LEN) % max(len(data) - codec.HEADER_LEN, 1)
        if op == "set" and at < len(data):
            data[at] = value
        elif op == "insert":
            data[at:at] = bytes([value])
        elif op == "delete" and at < len(data):
            del data[at]
    mutated = bytes(data)
    strict = _strict(mutated)
    if strict is not None:
        assert strict == _reference(mutated)


def test_int_range_is_the_reference_range() -> None:
    record = _base()
    record["partition"] = 2**31 - 1
    assert _strict(_body(record)) == _reference(_body(record))
    data = _body(record)
    too_big = data[: -len(_zigzag(2**31 - 1))] + _zigzag(2**31)
    assert _strict(too_big) is None
