"""Single-object encoding: CRC-64-AVRO vectors, header framing, strict body decoding, round trips."""

from __future__ import annotations

import struct

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage import codec
from lineage.errors import DecodeError, SchemaViolation
from lineage.model import Authorization, Decision, EventKind, ExecutionEvent, Runtime
from tests.support.events import SimEmitter


def _signed(value: int) -> int:
    return value & 0xFFFF_FFFF_FFFF_FFFF


# Apache Avro share/test/data/schema-tests.txt: canonical form -> fingerprint (signed 64-bit).
SPEC_VECTORS = [
    ('"null"', 7195948357588979594),
    ('"boolean"', -6970731678124411036),
    ('"int"', 8247732601305521295),
    ('"long"', -3434872931120570953),
    ('"float"', 5583340709985441680),
    ('"double"', -8181574048448539266),
    ('"bytes"', 5746618253357095269),
    ('"string"', -8142146995180207161),
    ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    (
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
        7843277075252814651,
    ),
    (
        '{"name":"PigValue","type":"record","fields":[{"name":"value","type":["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]


def test_crc64_of_empty_input_is_the_spec_seed() -> None:
    assert codec.crc64_avro(b"") == 0xC15D213AA4D7A795


@pytest.mark.parametrize(("canonical", "expected"), SPEC_VECTORS)
def test_crc64_avro_matches_the_avro_spec_vectors(canonical: str, expected: int) -> None:
    assert codec.crc64_avro(canonical.encode()) == _signed(expected)
    assert (
        fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
        == struct.pack("<Q", _signed(expected)).hex()
    )


def test_single_object_header_is_little_endian_as_in_the_spec() -> None:
    # The Avro Ruby test suite's single-object header for "int".
    schema = codec.Schema("int", fastavro.parse_schema("int"), '"int"', codec.crc64_avro(b'"int"'))
    assert schema.header == bytes.fromhex("c3018f5c393f1ad57572")


@pytest.mark.parametrize("name", codec.SCHEMA_NAMES)
def test_headers_are_distinct_and_resolve_back(name: str) -> None:
    schema = codec.load(name)
    assert codec.read_header(schema.header + b"\x00") is schema
    assert len({codec.load(n).header for n in codec.SCHEMA_NAMES}) == len(codec.SCHEMA_NAMES)


def test_read_header_rejects_short_input_wrong_magic_and_unknown_fingerprints() -> None:
    header = codec.load("execution_event").header
    with pytest.raises(DecodeError) as short:
        codec.read_header(header[:9])
    assert short.value.code == "TRUNCATED_AVRO"
    assert "expected at least 10 bytes, found 9" in str(short.value)
    with pytest.raises(DecodeError) as magic:
        codec.read_header(b"\x00\x00" + header[2:])
    assert magic.value.code == "NOT_SINGLE_OBJECT"
    with pytest.raises(DecodeError) as unknown:
        codec.read_header(header[:9] + bytes([header[9] ^ 0x01]))
    assert unknown.value.code == "UNKNOWN_FINGERPRINT"


def _event_bytes(**fields: object) -> bytes:
    em = SimEmitter()
    return em.event("wf-1", **fields)[0].value


def test_decode_body_requires_every_byte_to_be_consumed() -> None:
    data = _event_bytes()
    schema = codec.load("execution_event")
    assert schema.decode_body(data)["workflow_id"] == "wf-1"
    with pytest.raises(DecodeError) as trailing:
        schema.decode_body(data + b"\x00")
    assert trailing.value.code == "TRAILING_BYTES"
    assert f"expected {len(data)} bytes, found {len(data) + 1}" in str(trailing.value)


@pytest.mark.parametrize("cut", [1, 2, 11, 30, 60])
def test_every_truncation_of_an_event_body_is_reported_as_truncated(cut: int) -> None:
    data = _event_bytes()
    with pytest.raises(DecodeError) as err:
        codec.load("execution_event").decode_body(data[:-cut])
    assert err.value.code == "TRUNCATED_AVRO"


def test_non_utf8_string_bytes_are_reported_as_bad_utf8() -> None:
    data = _event_bytes(principal="user:alice")
    bad = data.replace(b"user:alice", b"user:al\xffce")
    with pytest.raises(DecodeError) as err:
        codec.load("execution_event").decode_body(bad)
    assert err.value.code == "BAD_UTF8"


_KIND_AT = codec.HEADER_LEN + 1 + len("svc-a#1/0") + 1 + len("wf-1") + 4


@pytest.mark.parametrize(
    ("at", "byte"),
    [
        (_KIND_AT, 2 * 8),  # kind: symbol index 8 of 8 symbols
        (_KIND_AT - 4, 2 * 2),  # parent_event_id: union branch 2 of ["null", "string"]
    ],
    ids=["enum", "union"],
)
def test_an_index_out_of_range_is_malformed_not_truncated(at: int, byte: int) -> None:
    data = _event_bytes(kind=EventKind.WORKFLOW_STARTED)
    assert data[at] == 0
    bad = data[:at] + bytes([byte]) + data[at + 1 :]
    with pytest.raises(DecodeError) as err:
        codec.load("execution_event").decode_body(bad)
    assert err.value.code == "MALFORMED_AVRO"
    assert f"malformed body at byte {at + 1}" in str(err.value)


def test_encode_rejects_records_that_do_not_match_the_schema() -> None:
    record = ExecutionEvent(
        event_id="e",
        workflow_id="w",
        kind=EventKind.WORKFLOW_STARTED,
        event_time=1,
        principal="p",
        action="a",
        emitter_id="x#1",
        emitter_seq=0,
        topic="t",
        partition=0,
    ).to_record()
    record["partition"] = "zero"
    with pytest.raises(SchemaViolation, match="execution_event: record does not match schema"):
        codec.load("execution_event").encode(record)


def test_decode_returns_the_writer_schema() -> None:
    data = _event_bytes()
    schema, record = codec.decode(data)
    assert schema.name == "execution_event"
    assert record["event_id"] == "svc-a#1/0"


_text = st.text(max_size=12)
_opt = st.none() | _text
_us = st.integers(min_value=1, max_value=2**62)


@st.composite
def events(draw: st.DrawFn) -> ExecutionEvent:
    kind = draw(st.sampled_from(list(EventKind)))
    auth = None
    if kind is EventKind.AUTHORIZATION_DECISION:
        auth = Authorization(
            decision=draw(st.sampled_from(list(Decision))),
            policy_id=draw(_text),
            policy_digest=draw(_text),
            determining_policies=tuple(draw(st.lists(_text, max_size=3))),
            input_digest=draw(_text),
            expires_at=draw(st.integers(-(2**62), 2**62)),
            authorized_action=draw(_text),
            authorized_resource=draw(_opt),
        )
    event_id = draw(st.text(min_size=1, max_size=36))
    return ExecutionEvent(
        event_id=event_id,
        workflow_id=draw(st.text(min_size=1, max_size=20)),
        kind=kind,
        event_time=draw(_us),
        principal=draw(_text),
        action=draw(_text),
        emitter_id=draw(st.text(min_size=1, max_size=20)),
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
        runtime=draw(
            st.none()
            | st.builds(
                Runtime, host=_text, image_digest=_opt, attestation_type=_opt, measurement=_opt
            )
        ),
        input_digest=draw(_opt),
        output_digest=draw(_opt),
        attributes=draw(st.dictionaries(_text, _text, max_size=4)),
    )


@settings(max_examples=150, deadline=None)
@given(events())
def test_execution_events_round_trip_byte_for_byte(event: ExecutionEvent) -> None:
    schema = codec.load("execution_event")
    data = schema.encode(event.to_record())
    decoded = ExecutionEvent.from_record(schema.decode_body(data))
    assert decoded == event
    assert schema.encode(decoded.to_record()) == data


def _genuine_event_bytes() -> bytes:
    schema = codec.load("execution_event")
    return next(m.value for m in SimEmitter("svc-a").event("wf-1") if m.value[:10] == schema.header)


def test_a_non_canonical_spelling_of_a_genuine_event_is_refused() -> None:
    """fastavro reads these spellings; a second verifier might not: only one spelling is an event."""
    schema = codec.load("execution_event")
    data = _genuine_event_bytes()
    body = data[codec.HEADER_LEN :]
    event_id_len = body[0]  # zigzag varint of the event_id length, one byte for a UUID
    assert event_id_len < 0x80
    overlong = data[: codec.HEADER_LEN] + bytes([event_id_len | 0x80, 0x00]) + body[1:]
    end_ids = 1 + (event_id_len >> 1)
    wf_len = body[end_ids]
    end_wf = end_ids + 1 + (wf_len >> 1)
    child = schema.encode({**schema.decode_body(data), "parent_event_id": "parent-1"})
    assert child[codec.HEADER_LEN + end_wf] == 0x02  # parent_event_id: union branch 1 (string)
    at = codec.HEADER_LEN + end_wf
    negative_branch = child[:at] + b"\x01" + child[at + 1 :]  # branch -1: fastavro reads "last"
    assert schema.decode_body(data)["event_id"]  # the genuine spelling decodes
    for spelling, what in ((overlong, "over-long varint"), (negative_branch, "union index -1")):
        with pytest.raises(DecodeError) as exc:
            schema.decode_body(spelling)
        assert exc.value.code == "MALFORMED_AVRO", what
        assert "canonical" in str(exc.value), what
