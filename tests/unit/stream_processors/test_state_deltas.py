"""State is written as deltas: a batch writes the emitter head and the new seal's digests only;
a completed workflow shrinks to its chain head."""

from __future__ import annotations

import base64
import json

import pytest

from stream_processors.authenticate import RECENT_DIGESTS
from stream_processors.state import DictStore, EmitterState, StateCorrupt
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
