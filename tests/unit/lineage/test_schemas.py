"""The .avsc files are the contract: both Avro implementations read them, and the models follow them."""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest

from lineage import codec
from lineage.model import (
    Authorization,
    ChainEntry,
    Checkpoint,
    Containment,
    Decision,
    EventKind,
    ExecutionEvent,
    QuarantineRecord,
    Runtime,
    Seal,
    SealedBatch,
    Severity,
    Violation,
    ViolationType,
)

SCHEMAS = Path(codec.SCHEMA_DIR)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
T = 1_700_000_000_123_456

MODELS: dict[str, type] = {
    "execution_event": ExecutionEvent,
    "seal": Seal,
    "sealed_batch": SealedBatch,
    "chain_entry": ChainEntry,
    "violation": Violation,
    "checkpoint": Checkpoint,
    "quarantine": QuarantineRecord,
    "containment": Containment,
}

EVENT = ExecutionEvent(
    event_id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    workflow_id="wf-ünïcode-1",
    kind=EventKind.AUTHORIZATION_DECISION,
    event_time=T,
    principal="user:alice",
    action="tool.call:search",
    emitter_id="gate#1",
    emitter_seq=2**40,
    topic="lineage.events",
    partition=7,
    parent_event_id="0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5a",
    parent_workflow_id="wf-0",
    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    span_id="00f067aa0ba902b7",
    agent_id="agent:planner",
    model_id="model-x",
    model_version="2026-01",
    resource="docs:faq",
    authorization_id=None,
    authorization=Authorization(
        decision=Decision.DENY,
        policy_id="lineage-demo",
        policy_digest="sha256:" + "ab" * 32,
        determining_policies=("p1", "p2"),
        input_digest="sha256:" + "cd" * 32,
        expires_at=T + 60_000_000,
        authorized_action="tool.call:search",
        authorized_resource=None,
    ),
    runtime=Runtime(host="h1", image_digest="sha256:ee", attestation_type="tpm", measurement="m"),
    input_digest="sha256:01",
    output_digest=None,
    attributes={"a": "1", "ключ": "значение", "": ""},
)

RECORDS: dict[str, Any] = {
    "execution_event": EVENT,
    "sealed_batch": SealedBatch(1, b"\xc3\x01seal-bytes", (b"\xc3\x01event-1", b"\xc3\x01event-2")),
    "seal": Seal(
        emitter_id="svc-a#1",
        key_id="ed25519:abc",
        topic="lineage.events",
        partition=3,
        first_seq=10,
        last_seq=19,
        merkle_root=bytes(range(32)),
        prev_seal_hash=bytes(32),
        signature=bytes(range(64)),
    ),
    "chain_entry": ChainEntry(
        workflow_id="wf-1",
        chain_seq=5,
        event_id="e5",
        event_digest=b"\x01" * 32,
        prev_hash=b"\x02" * 32,
        entry_hash=b"\x03" * 32,
        policy_digest=b"\x04" * 32,
        event_bytes=b"\xc3\x01" + bytes(200),
        source_partition=2,
        source_offset=2**33,
        log_index=77,
        seal_bytes=b"\xc3\x01seal",
        seal_index=3,
        seal_path=(b"\x05" * 32, b"\x06" * 32),
        flags=("CONTAINED",),
    ),
    "violation": Violation(
        violation_id="ab" * 16,
        violation_type=ViolationType.ORPHAN_EVENT,
        rule="causal-order",
        severity=Severity.HIGH,
        workflow_id="wf-1",
        policy_digest="sha256:" + "00" * 32,
        explanation="parent never arrived",
        source_partition=0,
        source_offset=12,
        event_time=T,
        event_id="e7",
        related_event_ids=("e1", "e2"),
    ),
    "checkpoint": Checkpoint(
        origin="lineage.local/lineage.events/0",
        partition=0,
        tree_size=12,
        root_hash=b"\x09" * 32,
        note="lineage.local/lineage.events/0\n12\nCQk=\n\n— k sig\n",
        key_name="lineage-processor",
        source_offset=40,
    ),
    "quarantine": QuarantineRecord(
        reason_code="TRUNCATED_AVRO",
        reason="body ends early",
        raw_value=b"\xc3\x01\xff",
        source_topic="lineage.events",
        source_partition=1,
        source_offset=9,
        raw_key=None,
    ),
    "containment": Containment(
        workflow_id="wf-1",
        violation_id="cd" * 16,
        violation_type="FORBIDDEN_RESOURCE",
        event_id="e9",
        policy_digest="sha256:" + "00" * 32,
        source_partition=4,
        source_offset=99,
    ),
}


def _raw(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.avsc").read_text())


def _avro(name: str) -> avro.schema.Schema:
    return avro.schema.parse((SCHEMAS / f"{name}.avsc").read_text())


def _from_avro(value: Any) -> Any:
    """avro-python returns timestamp-micros as aware datetimes; the models keep integer µs."""
    if isinstance(value, dt.datetime):
        return (value - EPOCH) // dt.timedelta(microseconds=1)
    if isinstance(value, dict):
        return {k: _from_avro(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_avro(v) for v in value]
    return value


def _to_avro(schema: Any, value: Any) -> Any:
    """The inverse of _from_avro, guided by the .avsc (avro-python insists on datetimes)."""
    if isinstance(schema, dict):
        if schema.get("logicalType") == "timestamp-micros":
            return EPOCH + dt.timedelta(microseconds=value)
        if schema.get("type") == "record":
            return {f["name"]: _to_avro(f["type"], value[f["name"]]) for f in schema["fields"]}
        if schema.get("type") == "array":
            return [_to_avro(schema["items"], v) for v in value]
        if schema.get("type") == "map":
            return {k: _to_avro(schema["values"], v) for k, v in value.items()}
    if isinstance(schema, list) and value is not None:
        branch = next(b for b in schema if b != "null")
        return _to_avro(branch, value)
    return value


def test_schema_names_cover_every_avsc_file() -> None:
    assert sorted(p.stem for p in SCHEMAS.glob("*.avsc")) == sorted(codec.SCHEMA_NAMES)
    assert sorted(MODELS) == sorted(codec.SCHEMA_NAMES)


@pytest.mark.parametrize("name", codec.SCHEMA_NAMES)
def test_every_schema_parses_with_fastavro_and_apache_avro(name: str) -> None:
    raw = _raw(name)
    parsed = fastavro.parse_schema(raw)
    assert parsed["name"] == f"lineage.v1.{raw['name']}"
    schema = _avro(name)
    assert schema.fullname == f"lineage.v1.{raw['name']}"
    assert [f.name for f in schema.fields] == [f["name"] for f in raw["fields"]]


@pytest.mark.parametrize("name", codec.SCHEMA_NAMES)
def test_fastavro_single_object_bodies_are_read_by_apache_avro(name: str) -> None:
    record = RECORDS[name].to_record()
    data = codec.load(name).encode(record)
    assert data[:10] == codec.load(name).header
    reader = avro.io.DatumReader(_avro(name))
    body = io.BytesIO(data[codec.HEADER_LEN :])
    decoded = reader.read(avro.io.BinaryDecoder(body))
    assert body.tell() == len(data) - codec.HEADER_LEN
    assert _from_avro(decoded) == record


@pytest.mark.parametrize("name", codec.SCHEMA_NAMES)
def test_apache_avro_writes_the_same_bytes_fastavro_writes(name: str) -> None:
    record = RECORDS[name].to_record()
    out = io.BytesIO()
    avro.io.DatumWriter(_avro(name)).write(_to_avro(_raw(name), record), avro.io.BinaryEncoder(out))
    schema = codec.load(name)
    assert schema.header + out.getvalue() == schema.encode(record)
    assert (
        MODELS[name].from_record(schema.decode_body(schema.header + out.getvalue()))
        == RECORDS[name]
    )


@pytest.mark.parametrize("name", codec.SCHEMA_NAMES)
def test_fingerprint_matches_fastavro_and_avro_python_up_to_logical_types(name: str) -> None:
    schema = codec.load(name)
    canonical = fastavro.schema.to_parsing_canonical_form(_raw(name))
    assert schema.canonical == canonical
    # fastavro reports the fingerprint as the little-endian bytes used in the single-object header.
    assert fastavro.schema.fingerprint(canonical, "CRC-64-AVRO") == schema.header[2:].hex()
    assert schema.header == b"\xc3\x01" + schema.fingerprint.to_bytes(8, "little")
    # avro-python keeps {"type":"long"} where the spec's canonical form has "long" for a
    # logical type; apart from that the two canonical forms are the same text.
    avro_canonical = _avro(name).canonical_form
    assert avro_canonical.replace('{"type":"long"}', '"long"') == canonical
    if '{"type":"long"}' not in avro_canonical:
        assert _avro(name).fingerprint("CRC-64-AVRO") == schema.header[2:]


def _record_fields(schema: dict[str, Any]) -> list[str]:
    return [f["name"] for f in schema["fields"]]


def _nested(schema: dict[str, Any], field_name: str) -> dict[str, Any]:
    (f,) = [f for f in schema["fields"] if f["name"] == field_name]
    return next(b for b in f["type"] if isinstance(b, dict))


@pytest.mark.parametrize("name", codec.SCHEMA_NAMES)
def test_model_fields_are_the_schema_fields(name: str) -> None:
    assert sorted(f.name for f in fields(MODELS[name])) == sorted(_record_fields(_raw(name)))


def test_nested_event_records_follow_the_schema() -> None:
    raw = _raw("execution_event")
    assert [f.name for f in fields(Authorization)] == _record_fields(_nested(raw, "authorization"))
    assert [f.name for f in fields(Runtime)] == _record_fields(_nested(raw, "runtime"))


def _enum_symbols(schema: Any, enum_name: str) -> list[str]:
    if isinstance(schema, dict):
        if schema.get("type") == "enum" and schema.get("name") == enum_name:
            return list(schema["symbols"])
        for v in schema.values():
            found = _enum_symbols(v, enum_name)
            if found:
                return found
    if isinstance(schema, list):
        for v in schema:
            found = _enum_symbols(v, enum_name)
            if found:
                return found
    return []


@pytest.mark.parametrize(
    ("schema_name", "enum_name", "enum"),
    [
        ("execution_event", "EventKind", EventKind),
        ("execution_event", "Decision", Decision),
        ("violation", "ViolationType", ViolationType),
        ("violation", "Severity", Severity),
    ],
)
def test_model_enums_are_the_schema_enums(
    schema_name: str, enum_name: str, enum: type[StrEnum]
) -> None:
    assert [e.value for e in enum] == _enum_symbols(_raw(schema_name), enum_name)


@pytest.mark.parametrize("name", codec.SCHEMA_NAMES)
def test_every_model_round_trips_through_its_schema(name: str) -> None:
    schema = codec.load(name)
    data = schema.encode(RECORDS[name].to_record())
    assert MODELS[name].from_record(schema.decode_body(data)) == RECORDS[name]
    assert codec.decode(data)[0] is schema
