"""Sealed-batch records: one record per seal carries the seal and its events' exact bytes."""

from __future__ import annotations

import io

import avro.io
import avro.schema
import pytest

from lineage import codec
from lineage.errors import DecodeError
from stream_processors.decode import Decoder, Limits
from stream_processors.records import DecodedBatch
from tests.support.events import (
    BATCH_SCHEMA,
    Message,
    SimEmitter,
    batch_message,
    batched,
    chain_keys,
    entry_bytes,
    make_pipeline,
    reasons,
    registry_for,
    run,
    to_records,
    violation_types,
)


def _flows() -> tuple[list[Message], SimEmitter, SimEmitter]:
    a, b = SimEmitter("svc-a", seal_every=4), SimEmitter("svc-b", seal_every=3)
    msgs: list[Message] = []
    for i in range(12):
        msgs += a.chain(f"wf-a{i % 3}", 1) if i < 3 else a.event(f"wf-a{i % 3}")
        msgs += b.event(f"wf-b{i % 2}")
    msgs += a.seal() + b.seal()
    return msgs, a, b


def _batch_record(seal_every: int = 3) -> tuple[SimEmitter, list[Message], Message]:
    em = SimEmitter(seal_every=seal_every)
    msgs = [m for i in range(seal_every) for m in em.event(f"wf-{i}")]
    return em, msgs, batched(msgs)[0]


def _decode_code(msg: Message) -> str:
    with pytest.raises(DecodeError) as err:
        Decoder(Limits()).decode(to_records([msg])[0])
    return err.value.code


def test_batches_chain_the_same_entries_as_one_record_per_event() -> None:
    msgs, a, b = _flows()
    registry = registry_for(a, b)
    single = run(make_pipeline(registry), to_records(msgs)).outputs
    grouped = run(make_pipeline(registry), to_records(batched(msgs))).outputs
    assert len(single.entries) == 24
    # Same chains, the same exact event and seal bytes and inclusion paths: the evidence is the
    # same whatever the framing; only the source offsets (one per batch record) differ.
    assert chain_keys(grouped.entries) == chain_keys(single.entries)
    key = lambda e: (e.workflow_id, e.chain_seq)  # noqa: E731
    for g, s in zip(sorted(grouped.entries, key=key), sorted(single.entries, key=key), strict=True):
        assert (g.event_bytes, g.seal_bytes, g.seal_index, g.seal_path, g.entry_hash) == (
            s.event_bytes,
            s.seal_bytes,
            s.seal_index,
            s.seal_path,
            s.entry_hash,
        )
    assert grouped.violations == [] and grouped.quarantine == []


def test_a_batch_replayed_from_a_fresh_processor_is_byte_identical() -> None:
    msgs, a, b = _flows()
    records = to_records(batched(msgs))
    first = run(make_pipeline(registry_for(a, b)), records).outputs
    second = run(make_pipeline(registry_for(a, b)), records[:2], records[2:]).outputs
    assert entry_bytes(first.entries) == entry_bytes(second.entries)


def test_a_batch_delivered_twice_is_a_duplicate_not_a_second_chain_entry() -> None:
    em, _, batch = _batch_record()
    pl = make_pipeline(registry_for(em))
    out = run(pl, to_records([batch, batch])).outputs
    assert len(out.entries) == 3
    assert out.violations == [] and out.quarantine == []
    assert pl.counters["duplicates"] == 4  # three events and the seal


def test_a_flipped_byte_in_an_event_fails_the_seal_root_for_the_whole_batch() -> None:
    em, msgs, _ = _batch_record()
    events, seal = msgs[:-1], msgs[-1]
    tampered = bytearray(events[1].value)
    at = bytes(tampered).index(b"alice")
    tampered[at] ^= 0x02  # "alice" -> "clice": still decodes, the digest changes
    forged = [events[0], Message(events[1].key, bytes(tampered), event=events[1].event), events[2]]
    out = run(make_pipeline(registry_for(em)), to_records([batch_message(seal, forged)])).outputs
    assert out.entries == []
    assert reasons(out) == ["DIGEST_MISMATCH"] * 3
    assert violation_types(out) == ["BAD_SIGNATURE"] * 3


def test_a_flipped_signature_byte_rejects_every_event_of_the_batch() -> None:
    em, msgs, _ = _batch_record()
    seal = msgs[-1]
    bad = bytearray(seal.value)
    bad[-1] ^= 0x01
    forged = Message(seal.key, bytes(bad), seal=seal.seal)
    out = run(make_pipeline(registry_for(em)), to_records([batch_message(forged, msgs[:-1])]))
    assert out.outputs.entries == []
    assert violation_types(out.outputs) == ["BAD_SIGNATURE"] * 3
    assert reasons(out.outputs) == ["BAD_SIGNATURE"] * 3


def test_an_event_that_does_not_decode_is_quarantined_and_the_seal_then_finds_it_missing() -> None:
    em, msgs, _ = _batch_record()
    events, seal = msgs[:-1], msgs[-1]
    broken = Message(events[2].key, events[2].value[:-4], event=events[2].event)
    out = run(
        make_pipeline(registry_for(em)), to_records([batch_message(seal, [*events[:2], broken])])
    ).outputs
    assert out.entries == []
    assert reasons(out) == ["TRUNCATED_AVRO", "SEAL_INCOMPLETE", "SEAL_INCOMPLETE"]
    assert out.quarantine[0].raw_value == broken.value


def test_an_unknown_batch_version_is_refused_with_the_version_found() -> None:
    _, msgs, _ = _batch_record()
    msg = batch_message(msgs[-1], msgs[:-1], version=2)
    with pytest.raises(DecodeError) as err:
        Decoder(Limits()).decode(to_records([msg])[0])
    assert err.value.code == "UNSUPPORTED_VERSION"
    assert "expected 1, found 2" in str(err.value)


def test_a_batch_that_carries_fewer_events_than_its_seal_covers_is_malformed() -> None:
    _, msgs, _ = _batch_record()
    assert _decode_code(batch_message(msgs[-1], msgs[:2])) == "MALFORMED_BATCH"


def test_events_out_of_sequence_inside_a_batch_are_rejected() -> None:
    em, msgs, _ = _batch_record()
    events = msgs[:-1]
    decoded = Decoder(Limits()).decode(
        to_records([batch_message(msgs[-1], [events[1], events[0], events[2]])])[0]
    )
    assert isinstance(decoded, DecodedBatch)
    assert [code for _, code, _ in decoded.rejected] == ["MALFORMED_BATCH"] * 2
    out = run(
        make_pipeline(registry_for(em)),
        to_records([batch_message(msgs[-1], [events[1], events[0], events[2]])]),
    ).outputs
    assert out.entries == []


def test_the_key_must_name_the_seals_emitter() -> None:
    _, _, batch = _batch_record()
    assert _decode_code(Message(b"batch:someone-else#1", batch.value)) == "KEY_MISMATCH"


def test_an_oversized_batch_is_quarantined_whole() -> None:
    _, _, batch = _batch_record()
    raw = to_records([batch])[0]
    with pytest.raises(DecodeError) as err:
        Decoder(Limits(max_batch_bytes=len(batch.value) - 1)).decode(raw)
    assert err.value.code == "OVERSIZED"


def test_a_plain_avro_library_reads_the_batch_and_its_parts() -> None:
    """A consumer in another language needs only the .avsc files and a plain Avro library."""
    _, msgs, batch = _batch_record()
    assert batch.value[: codec.HEADER_LEN] == BATCH_SCHEMA.header
    schema = avro.schema.parse((codec.SCHEMA_DIR / "sealed_batch.avsc").read_text())
    body = io.BytesIO(batch.value[codec.HEADER_LEN :])
    record = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(body))
    assert record["format_version"] == 1
    assert record["seal"] == msgs[-1].value
    assert record["events"] == [m.value for m in msgs[:-1]]
    event_schema = avro.schema.parse((codec.SCHEMA_DIR / "execution_event.avsc").read_text())
    first = avro.io.DatumReader(event_schema).read(
        avro.io.BinaryDecoder(io.BytesIO(record["events"][0][codec.HEADER_LEN :]))
    )
    assert first["event_id"] == msgs[0].event.event_id  # type: ignore[union-attr]
