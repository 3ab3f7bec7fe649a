"""Authenticate stage: events wait for the seal that covers them; every way a seal can fail is named."""

from __future__ import annotations

import time

import pytest

from lineage import merkle
from lineage.hashing import ZERO_HASH, seal_hash
from lineage.keys import Role, Signer
from lineage.model import Seal, ViolationType
from stream_processors.authenticate import Authenticator
from stream_processors.decode import Decoder, Limits
from stream_processors.pipeline import PipelineConfig, _decode_event
from stream_processors.records import DecodedSeal, PendingEvent
from stream_processors.state import EmitterState
from tests.support.events import (
    TOPIC,
    Message,
    SimEmitter,
    chained_ids,
    encode_event,
    event_ids,
    make_pipeline,
    reasons,
    registry_for,
    replace_value,
    run,
    to_records,
    violation_types,
)


def _events(em: SimEmitter, n: int, workflow: str = "wf-1") -> list[Message]:
    """``n`` independent events (no parent links) of one workflow, sealed as the emitter goes."""
    out: list[Message] = []
    for _ in range(n):
        out += em.event(workflow)
    return out


@pytest.mark.parametrize("n", [1, 10, 100])
def test_a_seal_every_n_events_releases_exactly_that_batch(n: int) -> None:
    em = SimEmitter(seal_every=n)
    msgs = _events(em, 2 * n)
    assert [m.seal is not None for m in msgs].count(True) == 2
    records = to_records(msgs)
    pl = make_pipeline(registry_for(em))
    before_seal = run(pl, records[:n]).outputs
    assert (
        before_seal.entries == [] and before_seal.quarantine == [] and before_seal.violations == []
    )
    assert len(pl.emitters[em.emitter_id].pending) == n
    first = run(pl, records[n : n + 1]).outputs
    assert chained_ids(first.entries) == [f"{em.emitter_id}/{i}" for i in range(n)]
    rest = run(pl, records[n + 1 :]).outputs
    assert chained_ids(rest.entries) == [f"{em.emitter_id}/{i}" for i in range(n, 2 * n)]
    assert pl.emitters[em.emitter_id].pending == {}
    assert (pl.counters["chained"], pl.counters["seals"], pl.counters.get("quarantined", 0)) == (
        2 * n,
        2,
        0,
    )
    for batch, entries in ((msgs[n], first.entries), (msgs[-1], rest.entries)):
        seal = batch.seal
        assert seal is not None
        digests = [e.event_digest for e in entries]
        for i, e in enumerate(entries):
            assert (e.seal_bytes, e.seal_index) == (batch.value, i)
            assert list(e.seal_path) == merkle.inclusion_proof(i, digests)
            assert merkle.verify_inclusion(e.event_digest, i, n, e.seal_path, seal.merkle_root)


def test_the_seal_chain_links_consecutive_seals() -> None:
    em = SimEmitter(seal_every=2)
    msgs = _events(em, 6)
    seals = [m.seal for m in msgs if m.seal is not None]
    assert seals[0].prev_seal_hash == ZERO_HASH
    sealed_values = [m.value for m in msgs if m.seal is not None]
    assert [s.prev_seal_hash for s in seals[1:]] == [seal_hash(v) for v in sealed_values[:-1]]
    out = run(make_pipeline(registry_for(em)), to_records(msgs)).outputs
    assert len(out.entries) == 6 and out.violations == []


def _tamper_signature(m: Message) -> Message:
    value = m.value[:-1] + bytes([m.value[-1] ^ 0x01])  # the signature is the last field
    return Message(m.key, value, seal=m.seal)


def test_a_bad_signature_quarantines_every_covered_event() -> None:
    em = SimEmitter(seal_every=3)
    msgs = _events(em, 3)
    msgs[-1] = _tamper_signature(msgs[-1])
    out = run(make_pipeline(registry_for(em)), to_records(msgs)).outputs
    assert out.entries == []
    assert reasons(out) == ["BAD_SIGNATURE"] * 3
    assert violation_types(out) == ["BAD_SIGNATURE"] * 3
    assert [q.raw_value for q in out.quarantine] == [m.value for m in msgs[:3]]
    assert [v.event_id for v in out.violations] == event_ids(msgs)
    assert all(v.severity.value == "CRITICAL" for v in out.violations)
    assert [(c.workflow_id, c.violation_type, c.event_id) for c in out.containments] == [
        ("wf-1", "BAD_SIGNATURE", event_ids(msgs)[0])
    ]


def test_a_bad_signature_over_no_pending_events_is_still_reported() -> None:
    em = SimEmitter(seal_every=1)
    msgs = em.event("wf-1")
    lone = em.make_seal(5, 5, [msgs[0].digest])
    out = run(make_pipeline(registry_for(em)), to_records([_tamper_signature(lone)])).outputs
    assert violation_types(out) == ["BAD_SIGNATURE"]
    assert out.violations[0].workflow_id == f"emitter:{em.emitter_id}"


def test_an_unknown_key_quarantines_as_unknown_key() -> None:
    em = SimEmitter(seal_every=2)
    stranger = SimEmitter("svc-b", seal_every=2)
    msgs = _events(em, 2)
    out = run(make_pipeline(registry_for(stranger)), to_records(msgs)).outputs
    assert out.entries == []
    assert reasons(out) == ["UNKNOWN_KEY"] * 2
    assert violation_types(out) == ["UNKNOWN_KEY"] * 2
    assert f"{em.signer.key_id}" in out.quarantine[0].reason


def test_a_revoked_key_quarantines_as_unknown_key() -> None:
    em = SimEmitter(seal_every=2)
    registry = registry_for(em)
    registry.revoke(em.signer.key_id, at_us=1, reason="laptop stolen")
    out = run(make_pipeline(registry), to_records(_events(em, 2))).outputs
    assert out.entries == []
    assert reasons(out) == ["UNKNOWN_KEY"] * 2
    assert "revoked" in out.quarantine[0].reason


def test_a_key_of_another_subject_cannot_seal_for_this_emitter() -> None:
    em = SimEmitter("svc-a", seal_every=1)
    other_signer, other_record = Signer.generate_ephemeral("svc-b", Role.EMITTER)
    msgs = em.event("wf-1", seal=False)
    forged = em.make_seal(0, 0, [msgs[0].digest], signer=other_signer)
    out = run(
        make_pipeline(registry_for(em, extra=[other_record])), to_records([*msgs, forged])
    ).outputs
    assert out.entries == []
    assert reasons(out) == ["UNKNOWN_KEY"]


def test_event_bytes_changed_after_sealing_are_a_digest_mismatch() -> None:
    em = SimEmitter(seal_every=3)
    msgs = _events(em, 3)
    changed = msgs[1].value.replace(b"workflow.step", b"workflow.stop")
    assert changed != msgs[1].value
    msgs[1] = Message(msgs[1].key, changed, event=msgs[1].event)
    out = run(make_pipeline(registry_for(em)), to_records(msgs)).outputs
    assert out.entries == []
    # The seal is authentic but no longer matches: the whole batch is kept out of lineage.
    assert reasons(out) == ["DIGEST_MISMATCH"] * 3
    assert violation_types(out) == ["BAD_SIGNATURE"] * 3
    assert out.quarantine[1].raw_value == changed


def test_a_duplicate_event_before_its_seal_is_dropped_and_counted() -> None:
    em = SimEmitter(seal_every=2)
    msgs = _events(em, 2)
    records = to_records([msgs[0], msgs[0], *msgs[1:]])
    pl = make_pipeline(registry_for(em))
    out = run(pl, records).outputs
    assert chained_ids(out.entries) == event_ids(msgs)
    assert out.quarantine == [] and out.violations == []
    assert pl.counters["duplicates"] == 1


def test_a_duplicate_event_after_its_seal_is_dropped_and_counted() -> None:
    em = SimEmitter(seal_every=1)
    msgs = _events(em, 2)
    pl = make_pipeline(registry_for(em))
    out = run(pl, to_records([*msgs, msgs[0], msgs[1]])).outputs
    assert chained_ids(out.entries) == event_ids(msgs)
    assert out.quarantine == [] and out.violations == []
    assert pl.counters["duplicates"] == 2


def test_a_duplicate_seal_is_dropped_and_counted() -> None:
    em = SimEmitter(seal_every=2)
    msgs = _events(em, 4)
    pl = make_pipeline(registry_for(em))
    # the latest seal again, then the first seal again (an older one)
    out = run(pl, to_records([*msgs, msgs[-1], msgs[2]])).outputs
    assert chained_ids(out.entries) == event_ids(msgs)
    assert out.violations == []
    assert pl.counters["duplicates"] == 2


def test_equivocation_same_seq_different_bytes_before_the_seal() -> None:
    em = SimEmitter(seal_every=1)
    first = em.build("wf-1")
    twin = em.build("wf-1", action="workflow.other")  # same emitter seq 0, other bytes
    msgs = em.emit_bytes(first)
    twin_msg = Message(b"wf-1", encode_event(twin), event=twin)
    records = to_records([msgs[0], twin_msg, msgs[1]])
    out = run(make_pipeline(registry_for(em)), records).outputs
    assert chained_ids(out.entries) == [first.event_id]
    assert reasons(out) == ["DUPLICATE_CONFLICT"]
    assert out.quarantine[0].raw_value == twin_msg.value
    assert out.quarantine[0].source_offset == 1
    # the conflict is critical: it contains the workflow before the first copy is chained
    assert violation_types(out) == ["DUPLICATE_CONFLICT", "CONTAINED_WORKFLOW"]
    assert [(c.workflow_id, c.violation_type, c.source_offset) for c in out.containments] == [
        ("wf-1", "DUPLICATE_CONFLICT", 1)
    ]
    assert out.entries[0].flags == ("CONTAINED",)


def test_equivocation_same_seq_different_bytes_after_the_seal() -> None:
    em = SimEmitter(seal_every=1)
    first = em.build("wf-1")
    twin = em.build("wf-1", action="workflow.other")
    msgs = em.emit_bytes(first)
    out = run(
        make_pipeline(registry_for(em)),
        to_records([*msgs, Message(b"wf-1", encode_event(twin), event=twin)]),
    ).outputs
    assert chained_ids(out.entries) == [first.event_id]
    assert reasons(out) == ["DUPLICATE_CONFLICT"]
    assert out.quarantine[0].source_offset == 2


def test_a_second_validly_signed_seal_over_other_events_is_equivocation() -> None:
    em = SimEmitter(seal_every=1)
    msgs = em.event("wf-1")
    other = em.make_seal(0, 0, [b"\x00" * 32], prev_seal_hash=msgs[1].seal.prev_seal_hash)  # type: ignore[union-attr]
    pl = make_pipeline(registry_for(em))
    out = run(pl, to_records([*msgs, other])).outputs
    assert chained_ids(out.entries) == event_ids(msgs)
    assert violation_types(out) == ["DUPLICATE_CONFLICT"]
    assert out.violations[0].rule == "equivocation"


def test_a_forged_second_seal_is_a_bad_signature_not_equivocation() -> None:
    em = SimEmitter(seal_every=1)
    msgs = em.event("wf-1")
    forged = _tamper_signature(em.make_seal(0, 0, [b"\x00" * 32], prev_seal_hash=bytes(32)))
    out = run(make_pipeline(registry_for(em)), to_records([*msgs, forged])).outputs
    assert chained_ids(out.entries) == event_ids(msgs)
    assert violation_types(out) == ["BAD_SIGNATURE"]


def test_a_seal_starting_after_a_gap() -> None:
    em = SimEmitter(seal_every=2)
    lost_batch = _events(em, 2)  # seqs 0, 1 and their seal
    kept = _events(em, 2)  # seqs 2, 3 and their seal, linked to the lost seal
    records = to_records([*lost_batch[:2], *kept])  # the first seal never arrives
    out = run(make_pipeline(registry_for(em)), records).outputs
    assert chained_ids(out.entries) == event_ids(kept)
    assert reasons(out) == ["UNSEALED_EVENT", "UNSEALED_EVENT"]
    assert [q.raw_value for q in out.quarantine] == [m.value for m in lost_batch[:2]]
    gaps = [v for v in out.violations if v.violation_type is ViolationType.SEQUENCE_GAP]
    assert [v.rule for v in gaps] == ["emitter-sequence"]
    assert "expected the next seal to start at seq 0, found 2" in gaps[0].explanation
    assert violation_types(out).count("UNSEALED_EVENT") == 2


def test_a_gap_after_an_earlier_seal_breaks_the_seal_chain_too() -> None:
    em = SimEmitter(seal_every=1)
    a = em.event("wf-1")
    lost = em.event("wf-1")
    c = em.event("wf-1")
    out = run(make_pipeline(registry_for(em)), to_records([*a, lost[0], *c])).outputs
    assert chained_ids(out.entries) == event_ids(a) + event_ids(c)
    assert reasons(out) == ["UNSEALED_EVENT"]
    gaps = [v for v in out.violations if v.violation_type is ViolationType.SEQUENCE_GAP]
    assert sorted(v.rule for v in gaps) == ["emitter-sequence", "seal-chain"]
    # distinct findings must keep distinct ids, or the sink would collapse them into one
    assert len({v.violation_id for v in out.violations}) == len(out.violations)


def test_a_seal_over_events_that_never_arrived() -> None:
    em = SimEmitter(seal_every=3)
    msgs = _events(em, 3)
    out = run(make_pipeline(registry_for(em)), to_records([msgs[0], msgs[2], msgs[3]])).outputs
    assert out.entries == []
    assert reasons(out) == ["SEAL_INCOMPLETE", "SEAL_INCOMPLETE"]
    (gap,) = [v for v in out.violations if v.event_id is None]
    assert gap.violation_type is ViolationType.SEQUENCE_GAP
    assert "1 never arrived (first 1)" in gap.explanation


@pytest.mark.timeout(20)
@pytest.mark.parametrize("forge", [False, True], ids=["signed", "forged"])
def test_a_seal_over_a_huge_range_costs_no_more_than_a_small_one(forge: bool) -> None:
    em = SimEmitter(seal_every=100)
    msgs = em.event("wf-1")
    huge = em.make_seal(0, 2**62, [msgs[0].digest])
    if forge:
        huge = _tamper_signature(huge)
    t0 = time.perf_counter()
    out = run(make_pipeline(registry_for(em)), to_records([*msgs, huge])).outputs
    assert time.perf_counter() - t0 < 2.0
    assert out.entries == []
    assert reasons(out) == (["BAD_SIGNATURE"] if forge else ["SEAL_INCOMPLETE"])


def test_events_never_sealed_expire_as_unsealed_after_the_window() -> None:
    lazy = SimEmitter("svc-lazy", seal_every=100)
    busy = SimEmitter("svc-busy", seal_every=1)
    never_sealed = lazy.event("wf-lazy")
    filler: list[Message] = []
    while len(never_sealed) + len(filler) < 65:
        filler += busy.event("wf-busy")
    records = to_records([*never_sealed, *filler])
    config = PipelineConfig(window_offsets=16)
    pl = make_pipeline(registry_for(lazy, busy), config=config)
    out = run(pl, records[:64]).outputs
    assert reasons(out) == []  # the window is checked every 64 offsets
    out = run(pl, records[64:65]).outputs
    assert reasons(out) == ["UNSEALED_EVENT"]
    assert out.quarantine[0].raw_value == never_sealed[0].value
    assert violation_types(out) == ["UNSEALED_EVENT"]
    assert "within the window" in out.quarantine[0].reason
    assert pl.meta.pending_emitters == []
    # the late seal finds its event gone: a gap, not a second chance
    late = lazy.event("wf-lazy", seal=False) + lazy.seal()
    out = run(pl, to_records(late, start=65)).outputs
    assert out.entries == []
    assert reasons(out) == ["SEAL_INCOMPLETE"]


def test_authenticator_state_round_trips_between_events_and_seal() -> None:
    em = SimEmitter(seal_every=2)
    msgs = _events(em, 2)
    states: dict[str, EmitterState] = {}
    auth = Authenticator(
        TOPIC, 0, registry_for(em), "sha256:00", lambda e: states.setdefault(e, EmitterState())
    )
    decoder = Decoder(Limits())
    records = to_records(msgs)
    for r in records[:2]:
        p = decoder.decode(r)
        assert isinstance(p, PendingEvent)
        assert auth.on_event(p).released == []
    restored = EmitterState.from_bytes(states[em.emitter_id].to_bytes(), _decode_event)
    states[em.emitter_id] = restored
    seal = decoder.decode(records[2])
    assert isinstance(seal, DecodedSeal)
    res = auth.on_seal(seal)
    assert [p.event.event_id for p in res.released] == event_ids(msgs)
    assert (restored.expected_seq, restored.pending) == (2, {})


def test_seal_model_rejects_inverted_ranges() -> None:
    with pytest.raises(Exception, match="seal range"):
        Seal("e#1", "k", TOPIC, 0, 5, 4, bytes(32), bytes(32), bytes(64))


def test_a_seal_record_moved_to_another_partition_is_quarantined() -> None:
    em = SimEmitter(partition=1, seal_every=1)
    msgs = em.event("wf-1")
    moved = replace_value(to_records(msgs)[1], partition=0)
    out = run(make_pipeline(registry_for(em)), [replace_value(moved, offset=0)]).outputs
    assert reasons(out) == ["WRONG_TOPIC"]


def test_a_processor_key_cannot_seal_events() -> None:
    em = SimEmitter("svc-a", seal_every=1)
    proc_signer, proc_record = Signer.generate_ephemeral("svc-a", Role.PROCESSOR)
    msgs = em.event("wf-1", seal=False)
    forged = em.make_seal(0, 0, [msgs[0].digest], signer=proc_signer)
    out = run(make_pipeline(registry_for(extra=[proc_record])), to_records([*msgs, forged])).outputs
    assert out.entries == []
    assert reasons(out) == ["UNKNOWN_KEY"]
    assert "role" in out.quarantine[0].reason


def test_an_authorizer_key_marks_its_events_as_authenticated_decisions() -> None:
    signer, record = Signer.generate_ephemeral("gate", Role.AUTHORIZER)
    gate = SimEmitter("gate", seal_every=1, keypair=(signer, record))
    emitter = SimEmitter("svc-a", seal_every=1)
    states: dict[str, EmitterState] = {}
    auth = Authenticator(
        TOPIC,
        0,
        registry_for(gate, emitter),
        "sha256:00",
        lambda e: states.setdefault(e, EmitterState()),
    )
    decoder = Decoder(Limits())
    released: list[PendingEvent] = []
    for raw in to_records([*gate.event("wf-1"), *emitter.event("wf-2")]):
        item = decoder.decode(raw)
        if isinstance(item, DecodedSeal):
            released += auth.on_seal(item).released
        else:
            auth.on_event(item)
    assert [(p.event.emitter_id, p.authorizer) for p in released] == [
        ("gate#1", True),
        ("svc-a#1", False),
    ]
