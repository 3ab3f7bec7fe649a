"""Fuzzing the decoder and the whole pipeline: nothing raises, nothing unauthenticated is chained,
and every input record is accounted for exactly once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineage import codec, hashing, merkle
from lineage.errors import DecodeError
from lineage.model import ExecutionEvent, Seal
from stream_processors.authenticate import emitter_subject
from stream_processors.decode import Decoder, Limits
from stream_processors.pipeline import PartitionPipeline, PipelineConfig
from stream_processors.records import DecodedSeal, Outputs, PendingEvent, RawRecord
from stream_processors.state import DictStore
from tests.support.events import (
    TOPIC,
    Message,
    SimEmitter,
    WorkflowPlan,
    emit_plans,
    entry_bytes,
    interleave,
    make_pipeline,
    registry_for,
    run,
    to_records,
)

EMITTERS = [SimEmitter("svc-a", seal_every=3), SimEmitter("svc-b", seal_every=1)]
FILLER = SimEmitter("svc-filler", seal_every=1)
REGISTRY = registry_for(*EMITTERS, FILLER)
_PLANS = [
    WorkflowPlan("wf-1", [0, 1, 0, 1, 0], [None, 0, 1, 2, 3]),
    WorkflowPlan("wf-2", [0, 0, 0, 0], [None, 0, 0, 2]),
    WorkflowPlan("wf-3", [1, 1, 1], [None, 0, 1], caller=("wf-1", "wf-1/0")),
]
BASE: list[Message] = interleave(
    emit_plans(EMITTERS, _PLANS, [0, 1, 2, 0, 1, 2, 0, 1, 0]), [0, 1, 1, 0, 0, 1, 0, 1]
)
FILL: list[Message] = [m for _ in range(40) for m in FILLER.event("wf-filler")]
DECODER = Decoder(Limits(max_record_bytes=4096, max_attributes=8, max_attribute_bytes=512))
PIPELINE_DECODER = Decoder(PipelineConfig().limits)


@dataclass(frozen=True)
class Mutation:
    index: int
    op: str
    at: int
    data: bytes


_mutations = st.builds(
    Mutation,
    index=st.integers(0, 10_000),
    op=st.sampled_from(
        ["flip", "truncate", "insert", "replace", "key", "duplicate", "drop", "swap"]
    ),
    at=st.integers(0, 10_000),
    data=st.binary(min_size=1, max_size=12),
)


def _apply(messages: list[Message], mutations: list[Mutation]) -> list[tuple[bytes | None, bytes]]:
    out: list[tuple[bytes | None, bytes]] = [(m.key, m.value) for m in messages]
    for mu in mutations:
        if not out:
            break
        i = mu.index % len(out)
        key, value = out[i]
        at = mu.at % (len(value) + 1)
        if mu.op == "flip" and value:
            pos = mu.at % len(value)
            value = value[:pos] + bytes([value[pos] ^ (1 << (mu.data[0] % 8))]) + value[pos + 1 :]
        elif mu.op == "truncate":
            value = value[:at]
        elif mu.op == "insert":
            value = value[:at] + mu.data + value[at:]
        elif mu.op == "replace":
            value = value[:at] + mu.data + value[at + len(mu.data) :]
        elif mu.op == "key":
            key = None if mu.data[0] % 3 == 0 else mu.data
        elif mu.op == "duplicate":
            out.insert(mu.at % (len(out) + 1), (key, value))
            continue
        elif mu.op == "drop":
            del out[i]
            continue
        elif mu.op == "swap":
            j = mu.at % len(out)
            out[i], out[j] = out[j], out[i]
            continue
        out[i] = (key, value)
    return out


def _records(pairs: list[tuple[bytes | None, bytes]]) -> list[RawRecord]:
    return [RawRecord(TOPIC, 0, i, k, v) for i, (k, v) in enumerate(pairs)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.none() | st.binary(max_size=20))
def test_the_decoder_only_raises_decode_errors_on_random_bytes(
    value: bytes, key: bytes | None
) -> None:
    for candidate in (
        value,
        codec.load("execution_event").header + value,
        codec.load("seal").header + value,
    ):
        try:
            DECODER.decode(RawRecord(TOPIC, 0, 0, key, candidate))
        except DecodeError as exc:
            assert exc.code.isupper()


@settings(max_examples=300, deadline=None)
@given(st.lists(_mutations, min_size=1, max_size=6))
def test_the_decoder_only_raises_decode_errors_on_mutated_records(
    mutations: list[Mutation],
) -> None:
    for key, value in _apply(BASE, mutations):
        try:
            decoded = DECODER.decode(RawRecord(TOPIC, 0, 0, key, value))
        except DecodeError:
            continue
        if isinstance(decoded, PendingEvent):
            assert decoded.data == value and decoded.digest == hashing.event_digest(value)
            assert codec.load("execution_event").encode(decoded.event.to_record()) == value


def _offsets(pl: PartitionPipeline) -> list[int]:
    held = [p.offset for st_ in pl.emitters.values() for p in st_.pending.values()]
    held += [p.offset for wf in pl.workflows.values() for p in wf.waiting]
    return held


def _check_entry_is_authenticated(
    entry_value: bytes, seal_value: bytes, index: int, path: tuple[bytes, ...], digest: bytes
) -> None:
    event = ExecutionEvent.from_record(codec.load("execution_event").decode_body(entry_value))
    seal = Seal.from_record(codec.load("seal").decode_body(seal_value))
    assert seal.emitter_id == event.emitter_id
    assert seal.first_seq + index == event.emitter_seq
    assert digest == hashing.event_digest(entry_value)
    assert merkle.verify_inclusion(digest, index, seal.count, path, seal.merkle_root)
    message = hashing.seal_message(
        seal.emitter_id,
        seal.key_id,
        seal.topic,
        seal.partition,
        seal.first_seq,
        seal.last_seq,
        seal.merkle_root,
        seal.prev_seal_hash,
    )
    record = REGISTRY.get(seal.key_id)
    assert record is not None and record.subject == emitter_subject(seal.emitter_id)
    REGISTRY.verify(
        seal.key_id,
        message,
        seal.signature,
        role=record.role,
        subject=record.subject,
        at_us=event.event_time,
    )


def _account(records: list[RawRecord], pl: PartitionPipeline, out: Outputs) -> None:
    """Every record is exactly one of: chained, quarantined, a seal, a dropped copy, or held."""
    chained = [e.source_offset for e in out.entries]
    quarantined = [q.source_offset for q in out.quarantine]
    held = _offsets(pl)
    assert len(set(chained)) == len(chained), "an event was chained twice"
    assert len(set(quarantined)) == len(quarantined), "a record was quarantined twice"
    assert len(set(held)) == len(held)
    assert not (set(chained) & set(quarantined)) and not (set(chained) & set(held))
    assert not (set(quarantined) & set(held))
    for q in out.quarantine:
        assert q.raw_value == (records[q.source_offset].value or b"")
        assert (q.source_topic, q.source_partition) == (TOPIC, 0)
    kinds: Counter[str] = Counter()
    dropped: list[RawRecord] = []
    for r in records:
        try:
            decoded = PIPELINE_DECODER.decode(r)
        except DecodeError:
            decoded = None
        if isinstance(decoded, DecodedSeal):
            kinds["seal"] += 1
            assert r.offset not in chained and r.offset not in quarantined
        elif r.offset in chained:
            kinds["chained"] += 1
        elif r.offset in quarantined:
            kinds["quarantined"] += 1
        elif r.offset in held:
            kinds["held"] += 1
        else:
            dropped.append(r)
    assert kinds["seal"] == pl.counters.get("seals", 0)
    # a dropped event is a byte-identical copy of one accounted for at an earlier offset
    accounted = {records[o].value for o in chained + quarantined + held}
    for r in dropped:
        assert r.value in accounted
        assert any(x.value == r.value and x.offset < r.offset for x in records)
    assert len(dropped) <= pl.counters.get("duplicates", 0)
    for e in out.entries:
        assert e.event_bytes == records[e.source_offset].value
        _check_entry_is_authenticated(
            e.event_bytes, e.seal_bytes, e.seal_index, e.seal_path, e.event_digest
        )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_mutations, max_size=6),
    st.lists(st.binary(max_size=80), max_size=3),
    st.booleans(),
)
def test_the_pipeline_accounts_for_every_mutated_record(
    mutations: list[Mutation], garbage: list[bytes], expire: bool
) -> None:
    pairs = _apply(BASE, mutations) + [(b"wf-x", g) for g in garbage]
    if expire:
        pairs += [(m.key, m.value) for m in FILL]
    records = _records(pairs)
    config = PipelineConfig(window_offsets=16) if expire else None
    pl = make_pipeline(REGISTRY, config=config)
    out, seek = pl.process(records)
    assert seek is None
    _account(records, pl, out)
    if expire:
        # everything older than the window is settled: chained, quarantined, or dropped
        horizon = (len(records) - 1) // 64 * 64 - 16
        assert all(o >= horizon for o in _offsets(pl))
    again = make_pipeline(REGISTRY, config=config)
    out2, _ = again.process(records)
    assert out2.entries == out.entries and out2.violations == out.violations
    assert out2.quarantine == out.quarantine


def test_the_unmutated_base_scenario_chains_everything() -> None:
    records = to_records(BASE)
    pl = make_pipeline(REGISTRY)
    out, _ = pl.process(records)
    assert len(out.entries) == 12
    assert out.quarantine == []
    _account(records, pl, out)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_mutations, max_size=6),
    st.lists(st.integers(0, 120), min_size=1, max_size=3),
    st.booleans(),
)
def test_crash_and_resume_on_damaged_input_matches_an_uninterrupted_run(
    mutations: list[Mutation], cuts: list[int], redeliver: bool
) -> None:
    """Whatever the input holds, restarting from saved state changes no output, byte for byte."""
    records = _records(_apply(BASE, mutations) + [(m.key, m.value) for m in FILL])
    config = PipelineConfig(window_offsets=16)
    expected = run(make_pipeline(REGISTRY, config=config), records).outputs
    store = DictStore()
    got = Outputs()
    done = 0
    for cut in [*sorted({min(c, len(records)) for c in cuts}), len(records)]:
        start = done // 2 if redeliver else done
        got.extend(run(make_pipeline(REGISTRY, store, config=config), records[start:cut]).outputs)
        done = max(done, cut)
    assert entry_bytes(got.entries) == entry_bytes(expected.entries)
    assert got.violations == expected.violations
    assert got.quarantine == expected.quarantine
    assert got.containments == expected.containments
