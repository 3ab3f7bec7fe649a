"""Decode stage: framing, size limits and invariants; each bad record gets its own quarantine reason."""

from __future__ import annotations

import io
import json

import fastavro
import pytest

from lineage import codec
from lineage.errors import DecodeError
from lineage.hashing import event_digest
from lineage.model import ChainEntry, EventKind
from stream_processors.decode import Decoder, Limits
from stream_processors.records import DecodedSeal, PendingEvent, RawRecord
from tests.support.events import (
    EVENT_SCHEMA,
    TOPIC,
    SimEmitter,
    encode_event,
    make_pipeline,
    reasons,
    registry_for,
    replace_value,
    run,
    to_records,
)


def _one_event(**fields: object) -> tuple[SimEmitter, RawRecord]:
    em = SimEmitter(seal_every=100)
    return em, to_records(em.event("wf-1", **fields))[0]


def _code(raw: RawRecord) -> str:
    with pytest.raises(DecodeError) as err:
        Decoder(Limits()).decode(raw)
    return err.value.code


def test_a_valid_event_decodes_with_its_exact_bytes_and_digest() -> None:
    _, raw = _one_event()
    p = Decoder(Limits()).decode(raw)
    assert isinstance(p, PendingEvent)
    assert (p.offset, p.data, p.event.event_id) == (0, raw.value, "svc-a#1/0")
    assert p.digest == event_digest(raw.value or b"")


def test_a_valid_seal_decodes() -> None:
    em = SimEmitter(seal_every=1)
    msgs = em.event("wf-1")
    raw = to_records(msgs)[1]
    s = Decoder(Limits()).decode(raw)
    assert isinstance(s, DecodedSeal)
    assert (s.seal.first_seq, s.seal.last_seq, s.data) == (0, 0, raw.value)


@pytest.mark.parametrize("cut", [1, 9, 25, 60])
def test_truncated_avro(cut: int) -> None:
    _, raw = _one_event()
    assert _code(replace_value(raw, raw.value[:-cut])) == "TRUNCATED_AVRO"


def test_a_record_shorter_than_the_header_is_truncated() -> None:
    _, raw = _one_event()
    assert _code(replace_value(raw, raw.value[:7])) == "TRUNCATED_AVRO"


def test_trailing_bytes_after_the_body() -> None:
    _, raw = _one_event()
    assert _code(replace_value(raw, raw.value + b"\x00")) == "TRAILING_BYTES"


def test_an_unknown_schema_fingerprint() -> None:
    _, raw = _one_event()
    # A writer with an evolved event schema (one extra field) has its own fingerprint.
    evolved = json.loads((codec.SCHEMA_DIR / "execution_event.avsc").read_text())
    evolved["fields"].append({"name": "tenant", "type": "string", "default": ""})
    canonical = fastavro.schema.to_parsing_canonical_form(evolved)
    header = codec.MAGIC + codec.crc64_avro(canonical.encode()).to_bytes(8, "little")
    record = EVENT_SCHEMA.decode_body(raw.value) | {"tenant": "t1"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(evolved), record)
    assert _code(replace_value(raw, header + body.getvalue())) == "UNKNOWN_FINGERPRINT"


def test_a_flipped_fingerprint_byte_is_unknown() -> None:
    _, raw = _one_event()
    value = raw.value[:5] + bytes([raw.value[5] ^ 0x40]) + raw.value[6:]
    assert _code(replace_value(raw, value)) == "UNKNOWN_FINGERPRINT"


def test_missing_magic_is_not_single_object() -> None:
    _, raw = _one_event()
    assert _code(replace_value(raw, b"\x00\x00" + raw.value[2:])) == "NOT_SINGLE_OBJECT"


def test_a_known_schema_of_the_wrong_record_type() -> None:
    _, raw = _one_event()
    entry = ChainEntry(
        workflow_id="wf-1",
        chain_seq=0,
        event_id="e",
        event_digest=bytes(32),
        prev_hash=bytes(32),
        entry_hash=bytes(32),
        policy_digest=bytes(32),
        event_bytes=raw.value or b"",
        source_partition=0,
        source_offset=0,
        log_index=0,
        seal_bytes=b"",
        seal_index=0,
        seal_path=(),
    )
    value = codec.load("chain_entry").encode(entry.to_record())
    with pytest.raises(DecodeError) as err:
        Decoder(Limits()).decode(replace_value(raw, value))
    assert err.value.code == "WRONG_RECORD_TYPE"
    assert "found a chain_entry record" in str(err.value)


def test_valid_avro_with_an_empty_event_id_is_missing_a_field() -> None:
    _, raw = _one_event()
    record = EVENT_SCHEMA.decode_body(raw.value) | {"event_id": ""}
    with pytest.raises(DecodeError) as err:
        Decoder(Limits()).decode(replace_value(raw, EVENT_SCHEMA.encode(record)))
    assert err.value.code == "MISSING_FIELD"
    assert "event_id: expected a non-empty id" in str(err.value)


@pytest.mark.parametrize("field", ["workflow_id", "emitter_id"])
def test_other_empty_ids_are_missing_fields(field: str) -> None:
    _, raw = _one_event()
    record = EVENT_SCHEMA.decode_body(raw.value) | {field: ""}
    assert _code(replace_value(raw, EVENT_SCHEMA.encode(record), key=b"")) == "MISSING_FIELD"


def test_an_invalid_seal_is_missing_a_field() -> None:
    em = SimEmitter(seal_every=1)
    raw = to_records(em.event("wf-1"))[1]
    seal = codec.load("seal")
    record = seal.decode_body(raw.value) | {"merkle_root": b"\x00" * 31}
    assert _code(replace_value(raw, seal.encode(record))) == "MISSING_FIELD"


def test_oversized_record() -> None:
    _, raw = _one_event()
    size = len(raw.value or b"")
    Decoder(Limits(max_record_bytes=size)).decode(raw)
    with pytest.raises(DecodeError) as err:
        Decoder(Limits(max_record_bytes=size - 1)).decode(raw)
    assert err.value.code == "OVERSIZED"
    assert f"record is {size} bytes, limit is {size - 1}" in str(err.value)


def test_oversized_default_limit() -> None:
    _, raw = _one_event(action="x" * (256 * 1024))
    assert _code(raw) == "OVERSIZED"


def test_too_many_attributes() -> None:
    _, ok = _one_event(attributes={f"k{i}": "v" for i in range(64)})
    assert isinstance(Decoder(Limits()).decode(ok), PendingEvent)
    _, raw = _one_event(attributes={f"k{i}": "v" for i in range(65)})
    with pytest.raises(DecodeError) as err:
        Decoder(Limits()).decode(raw)
    assert err.value.code == "OVERSIZED_ATTRIBUTES"
    assert "65 attributes, limit is 64" in str(err.value)


def test_too_many_attribute_bytes() -> None:
    _, raw = _one_event(attributes={"blob": "x" * (16 * 1024)})
    assert _code(raw) == "OVERSIZED_ATTRIBUTES"


def test_non_utf8_bytes_inside_a_string_field() -> None:
    _, raw = _one_event(principal="user:alice")
    value = (raw.value or b"").replace(b"user:alice", b"user:al\xffce")
    assert len(value) == len(raw.value or b"")
    assert _code(replace_value(raw, value)) == "BAD_UTF8"


def test_null_key() -> None:
    _, raw = _one_event()
    assert _code(replace_value(raw, key=None)) == "NULL_KEY"


def test_null_value_tombstone() -> None:
    _, raw = _one_event()
    with pytest.raises(DecodeError) as err:
        Decoder(Limits()).decode(RawRecord(raw.topic, raw.partition, raw.offset, raw.key, None))
    assert err.value.code == "NULL_VALUE"


def test_key_mismatch() -> None:
    _, raw = _one_event()
    with pytest.raises(DecodeError) as err:
        Decoder(Limits()).decode(replace_value(raw, key=b"wf-2"))
    assert err.value.code == "KEY_MISMATCH"
    assert "expected key 'wf-1', found b'wf-2'" in str(err.value)


def test_an_event_replayed_from_another_topic() -> None:
    staging = SimEmitter(topic="lineage.events.staging", seal_every=100)
    (msg,) = staging.event("wf-1")
    raw = RawRecord(TOPIC, 0, 0, msg.key, msg.value)
    with pytest.raises(DecodeError) as err:
        Decoder(Limits()).decode(raw)
    assert err.value.code == "WRONG_TOPIC"
    assert "written for lineage.events.staging[0], found on lineage.events[0]" in str(err.value)


def test_an_event_replayed_from_another_partition() -> None:
    em = SimEmitter(partition=3, seal_every=100)
    (msg,) = em.event("wf-1")
    assert _code(RawRecord(TOPIC, 0, 0, msg.key, msg.value)) == "WRONG_TOPIC"


def test_a_seal_replayed_from_another_topic() -> None:
    staging = SimEmitter(topic="lineage.events.staging", seal_every=1)
    seal = staging.event("wf-1")[1]
    assert _code(RawRecord(TOPIC, 0, 0, seal.key, seal.value)) == "WRONG_TOPIC"


def test_an_event_built_with_the_sdk_kinds_decodes_unchanged() -> None:
    em = SimEmitter(seal_every=100)
    for kind in (EventKind.WORKFLOW_STARTED, EventKind.EXECUTION_COMPLETED, EventKind.ATTESTATION):
        (msg,) = em.event("wf-1", kind=kind)
        p = Decoder(Limits()).decode(RawRecord(TOPIC, 0, 0, msg.key, msg.value))
        assert isinstance(p, PendingEvent)
        assert p.event == msg.event
        assert encode_event(p.event) == msg.value


def test_the_pipeline_quarantines_each_bad_record_byte_for_byte() -> None:
    em = SimEmitter(seal_every=1)
    good = to_records(em.event("wf-1"))
    _, base = _one_event()
    value = base.value or b""
    bad = [
        replace_value(base, value[:-4]),
        replace_value(base, key=None),
        replace_value(base, key=b"other"),
        replace_value(base, value.replace(b"user:alice", b"user:al\xffce")),
        replace_value(base, b"\x00\x01not an avro record"),
    ]
    records = good + [replace_value(r, offset=2 + i) for i, r in enumerate(bad)]
    result = run(make_pipeline(registry_for(em)), records)
    out = result.outputs
    assert [e.event_id for e in out.entries] == ["svc-a#1/0"]
    assert reasons(out) == [
        "TRUNCATED_AVRO",
        "NULL_KEY",
        "KEY_MISMATCH",
        "BAD_UTF8",
        "NOT_SINGLE_OBJECT",
    ]
    assert [(q.raw_value, q.raw_key, q.source_offset, q.source_topic) for q in out.quarantine] == [
        (r.value, r.key, r.offset, TOPIC) for r in records[2:]
    ]
    assert out.violations == []


def test_events_decode_through_the_strict_decoder_to_the_reference_record() -> None:
    from stream_processors.decode import _strict_event

    _, raw = _one_event(principal="user:ålice", attributes={"k": "v"})
    value = raw.value or b""
    strict = _strict_event(value)
    assert strict is not None, "a canonical event must take the fast path"
    assert strict == codec.load("execution_event").decode_body(value)


def test_a_non_canonical_spelling_is_refused_as_before_through_the_reference_decoder() -> None:
    from stream_processors.decode import _strict_event

    _, raw = _one_event(principal="user:alice")
    value = raw.value or b""
    # The principal's length (10, zig-zag 0x14) spelled as an over-long two-byte varint: fastavro
    # reads the same record, so only the canonical-spelling check can refuse it.
    at = value.index(b"\x14user:alice")
    longer = value[:at] + b"\x94\x00" + value[at + 1 :]
    assert _strict_event(longer) is None
    with pytest.raises(DecodeError, match="not the canonical Avro binary encoding") as err:
        Decoder(Limits()).decode(replace_value(raw, longer))
    assert err.value.code == "MALFORMED_AVRO"
