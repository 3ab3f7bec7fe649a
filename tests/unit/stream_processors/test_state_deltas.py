"""State is written as deltas: a batch writes the emitter head and the new seal's digests only;
a completed workflow shrinks to its chain head."""

from __future__ import annotations

import base64
import json

import pytest

from bench._offline import OfflineWorld
from stream_processors.authenticate import RECENT_DIGESTS
from stream_processors.pipeline import PartitionPipeline, PipelineConfig
from stream_processors.policy_stage import WorkflowPolicyState
from stream_processors.state import (
    MAX_JOURNAL_CHUNKS,
    DictStore,
    EmitterState,
    StateCorrupt,
    WorkflowState,
    journal_key,
)
from tests.support.events import SimEmitter, batched, make_pipeline, registry_for, run, to_records


def _digest(i: int) -> bytes:
    return i.to_bytes(32, "big")


def test_the_window_is_exactly_the_last_digests_whatever_the_write_timing() -> None:
    st = EmitterState()
    chunks: dict[int, bytes] = {}

    def write() -> None:
        records, gone = st.records("k")
        for key, value in records:
            if key != "k":
                chunks[int(key.rsplit("|", 1)[1])] = value
        for key in gone:
            del chunks[int(key.rsplit("|", 1)[1])]

    for q in range(1000):
        st.remember(q, _digest(q), 256)
        if q % 37 == 0:  # writes at arbitrary moments
            write()
    write()
    assert list(st.recent) == list(range(1000 - 256, 1000))
    assert len(chunks) <= 256 // 37 + 3, "chunks that left the window are deleted"
    back = EmitterState.from_bytes(st.head_bytes(), lambda data: None, chunks.get)
    assert back.recent == st.recent and list(back.recent) == list(st.recent)


def test_a_batch_writes_the_head_and_one_chunk_and_deletes_what_left_the_window() -> None:
    em = SimEmitter(seal_every=100)
    store = DictStore()
    pl = make_pipeline(registry_for(em), store)
    msgs = [m for i in range(400) for m in em.event(f"wf-{i % 7}")]
    records = to_records(batched(msgs))
    writes: list[list[str]] = []
    for r in records:
        run(pl, [r], persist=False)
        writes.append([k for k, _ in pl.dirty_state()])
    key = f"0|e|{em.emitter_id}"
    assert [w for w in writes[3] if w.startswith(key)] == [f"{key}|r|3", key]
    assert f"{key}|r|0" not in store.data, "the oldest chunk left the window: deleted"
    assert {k for k in store.data if k.startswith(key + "|r|")} == {
        f"{key}|r|{c}" for c in (1, 2, 3)
    }
    head = store.data[key]
    assert len(head) < 300, f"expected a head of a few hundred bytes at most, found {len(head)}"
    restored = make_pipeline(registry_for(em), store)._emitter(em.emitter_id)
    assert list(restored.recent.items()) == list(pl.emitters[em.emitter_id].recent.items())
    assert restored.chunks == pl.emitters[em.emitter_id].chunks
    assert len(restored.recent) == RECENT_DIGESTS


def test_a_head_listing_a_chunk_the_table_lacks_is_refused() -> None:
    st = EmitterState()
    for q in range(10):
        st.remember(q, _digest(q), 256)
    records, _ = st.records("k")
    chunks = {int(k.rsplit("|", 1)[1]): v for k, v in records if k != "k"}
    with pytest.raises(StateCorrupt, match="emitter state chunk 0: expected 400 bytes, found None"):
        EmitterState.from_bytes(st.head_bytes(), lambda data: None, lambda cid: None)
    with pytest.raises(StateCorrupt, match="chunk 0: expected 400 bytes, found 399"):
        EmitterState.from_bytes(st.head_bytes(), lambda data: None, lambda cid: chunks[0][:-1])


def test_the_whole_window_format_still_loads_and_is_rewritten_as_a_chunk() -> None:
    recent = b"".join(q.to_bytes(8, "big") + _digest(q) for q in range(10, 10 + RECENT_DIGESTS))
    old = json.dumps(
        {
            "x": 266,
            "h": base64.b64encode(bytes(32)).decode(),
            "p": {},
            "r": base64.b64encode(recent).decode(),
            "s": True,
        },
        separators=(",", ":"),
    ).encode()
    st = EmitterState.from_bytes(old, lambda data: None)
    assert st.recent == {q: _digest(q) for q in range(10, 10 + RECENT_DIGESTS)}
    assert st.to_bytes() == old, "the whole-record format round-trips byte for byte"
    records, gone = st.records("k")
    assert records[0] == ("k|r|0", recent) and gone == []
    assert st.chunks == [(0, RECENT_DIGESTS)]
    back = EmitterState.from_bytes(records[1][1], lambda data: None, {0: recent}.get)
    assert back.recent == st.recent and back.expected_seq == 266


def test_a_completed_workflow_shrinks_to_its_chain_head_after_the_grace_offsets() -> None:
    from lineage.model import EventKind
    from stream_processors.pipeline import PipelineConfig

    em = SimEmitter(seal_every=1)
    config = PipelineConfig(completed_grace_offsets=10)
    msgs = em.chain("wf-done", 3)
    last = msgs[-2].event
    assert last is not None
    msgs += em.event("wf-done", kind=EventKind.WORKFLOW_COMPLETED, parent_event_id=last.event_id)
    done_id = msgs[-2].event.event_id  # type: ignore[union-attr]
    for i in range(80):  # other traffic moves the offsets on
        msgs += em.event(f"wf-other-{i}")
    store = DictStore()
    pl = make_pipeline(registry_for(em), store, config=config)
    run(pl, to_records(msgs))
    assert "wf-done" not in pl.workflows, "a shrunk workflow leaves the cache once written"
    wf = pl._workflow("wf-done")
    assert wf.chained == {} and wf.next_seq == 4, "only the chain head and sequence remain"
    assert pl.counters["workflows_shrunk"] == 1
    head = wf.head
    late = em.event("wf-done", kind=EventKind.EXECUTION_STARTED, parent_event_id=done_id)
    out = run(pl, to_records(late, start=len(msgs))).outputs
    assert out.entries == [], "a late event finds no parent: it waits, then is orphaned"
    assert pl._workflow("wf-done").head == head
    restored = make_pipeline(registry_for(em), store, config=config)
    assert restored._workflow("wf-done").chained == {}
    assert restored.meta.completed == pl.meta.completed


# -- workflows: a head and journal chunks ------------------------------------


def _workflow_view(wf: WorkflowState) -> tuple[object, ...]:
    """Everything a restore must bring back, in order (eviction depends on insertion order)."""
    ps = wf.policy_state or WorkflowPolicyState()
    return (
        wf.head,
        wf.next_seq,
        list(wf.chained.items()),
        [p.event.event_id for p in wf.waiting],
        list(ps.authorizations.items()),
        list(ps.depths.items()),
        list(ps.fanout.items()),
        list(ps.measurements.items()),
        (ps.contained, ps.contained_by, ps.contained_at),
    )


class _CountingStore(DictStore):
    def __init__(self) -> None:
        super().__init__()
        self.deleted_chunks = 0

    def delete(self, key: str) -> None:
        self.deleted_chunks += "|j|" in key
        super().delete(key)


def _world_pipeline(world: OfflineWorld, store: DictStore) -> PartitionPipeline:
    pl = PartitionPipeline(
        topic=world.log.topic,
        partition=0,
        store=store,
        registry=world.registry,
        policy=world.policy,
        checkpoint_signer=world.signers["lineage-processor"],
        config=PipelineConfig(completed_grace_offsets=40),
    )
    pl.policy_stage.max_tracked = 5  # small: the rules' maps evict while workflows run
    return pl


def test_a_restore_after_any_write_rebuilds_every_workflow_and_the_same_chains() -> None:
    world = OfflineWorld(seal_every=5, partitions=1, topic="t.events")
    records = world.workflows(3000, misbehaviour=None)
    batches = [records[i : i + 3] for i in range(0, len(records), 3)]

    def run_all(restore_every: int) -> tuple[list[bytes], list[str], _CountingStore]:
        store = _CountingStore()
        pl = _world_pipeline(world, store)
        hashes: list[bytes] = []
        violations: list[str] = []
        for i, batch in enumerate(batches):
            out, seek = pl.process(batch)
            assert seek is None
            hashes += [e.entry_hash for e in out.entries]
            violations += [v.violation_id for v in out.violations]
            pl.dirty_state()
            if restore_every and i % restore_every == 0:
                back = _world_pipeline(world, store)
                for wid, wf in pl.workflows.items():
                    assert _workflow_view(back._workflow(wid)) == _workflow_view(wf), wid
                pl = back
        return hashes, violations, store

    plain, plain_violations, _ = run_all(0)
    restored, restored_violations, store = run_all(7)
    assert len(plain) >= 3000
    assert restored == plain and restored_violations == plain_violations
    assert store.deleted_chunks > 0, "snapshots (and shrinks) deleted the chunks they replaced"
    heads = {k for k in store.data if "|w|" in k and "|j|" not in k}
    chunks = [k for k in store.data if "|j|" in k]
    listed = {journal_key(k, cid) for k in heads for cid in json.loads(store.data[k])["k"]}
    assert set(chunks) == listed, "every chunk left in the table is one a head lists"


def test_a_write_carries_only_what_changed_since_the_previous_one() -> None:
    em = SimEmitter(seal_every=1)
    store = DictStore()
    pl = make_pipeline(registry_for(em), store)
    msgs = em.chain("wf-long", 30)
    ids = [m.event.event_id for m in msgs if m.event is not None]
    written: list[list[tuple[str, bytes]]] = []
    records = to_records(batched(msgs))
    assert len(records) == 30
    for r in records:
        run(pl, [r], persist=False)
        written.append([(k, v) for k, v in pl.dirty_state() if k.startswith("0|w|wf-long")])
    sizes = [sum(len(v) for _, v in w) for w in written]
    deltas = [n for i, n in enumerate(sizes) if i % MAX_JOURNAL_CHUNKS or i == 0]
    assert max(deltas) < 200, f"expected every delta write under 200 bytes, found {sizes}"
    assert [k for k, _ in written[3]] == ["0|w|wf-long|j|3", "0|w|wf-long"]
    event_id = ids[3]
    ops = json.loads(written[3][0][1])
    assert ops[0] == ["c", event_id, pl.workflows["wf-long"].chained[event_id].hex()]
    assert all(op[1] == event_id for op in ops), f"only event 3's changes, found {ops}"
    assert [k for k, _ in written[MAX_JOURNAL_CHUNKS]] == [
        f"0|w|wf-long|j|{MAX_JOURNAL_CHUNKS}",
        "0|w|wf-long",
    ], "a head listing MAX_JOURNAL_CHUNKS chunks is followed by a snapshot chunk"
    snapshot = json.loads(written[MAX_JOURNAL_CHUNKS][0][1])
    assert [op[1] for op in snapshot if op[0] == "c"] == ids[: MAX_JOURNAL_CHUNKS + 1]
    assert json.loads(store.data["0|w|wf-long"])["k"] == list(range(24, 30))
    assert {k for k in store.data if k.startswith("0|w|wf-long|j|")} == {
        journal_key("0|w|wf-long", c) for c in range(24, 30)
    }, "the chunks a snapshot replaced are deleted"


def test_a_head_listing_a_journal_chunk_the_table_lacks_is_refused() -> None:
    em = SimEmitter(seal_every=1)
    store = DictStore()
    pl = make_pipeline(registry_for(em), store)
    run(pl, *[[r] for r in to_records(batched(em.chain("wf-a", 3)))])  # a write per event
    assert json.loads(store.data["0|w|wf-a"])["k"] == [0, 1, 2]
    store.delete("0|w|wf-a|j|1")
    with pytest.raises(StateCorrupt, match="workflow wf-a: its head lists journal chunk 1"):
        make_pipeline(registry_for(em), store)._workflow("wf-a")


def test_a_whole_workflow_record_still_loads_and_is_rewritten_as_a_snapshot() -> None:
    em = SimEmitter(seal_every=1)
    store = DictStore()
    pl = make_pipeline(registry_for(em), store)
    run(pl, to_records(em.chain("wf-old", 4)))
    wf = pl.workflows["wf-old"]
    ps = pl._policy_state(wf)
    ps.fanout["x"] = 2
    wf.policy = ps.to_bytes()
    old = wf.to_bytes()  # format 1, as written before the journal
    for key in [k for k in store.data if k.startswith("0|w|wf-old")]:
        store.delete(key)
    store.put("0|w|wf-old", old)
    back = make_pipeline(registry_for(em), store)
    loaded = back._workflow("wf-old")
    assert _workflow_view(loaded)[:4] == _workflow_view(wf)[:4]
    written = dict(back.dirty_state())  # the policy state was never asked for: still rewritten
    assert set(written) >= {"0|w|wf-old|j|0", "0|w|wf-old"}
    again = make_pipeline(registry_for(em), store)
    assert _workflow_view(again._workflow("wf-old"))[:4] == _workflow_view(wf)[:4]
    assert again._policy_state(again._workflow("wf-old")) == ps
