"""State is written as deltas: a batch writes the emitter head and the new seal's digests only."""

from __future__ import annotations

import base64
import json

from stream_processors.authenticate import RECENT_DIGESTS
from stream_processors.state import DictStore, EmitterState
from tests.support.events import SimEmitter, batched, make_pipeline, registry_for, run, to_records


def _digest(i: int) -> bytes:
    return i.to_bytes(32, "big")


def test_remember_keeps_whole_seals_and_at_least_the_window() -> None:
    st = EmitterState()
    for first in range(0, 1000, 100):
        st.remember(first, [_digest(q) for q in range(first, first + 100)], 256)
    assert st.chunks == [(700, 799), (800, 899), (900, 999)]
    assert sorted(st.recent) == list(range(700, 1000))
    assert st.dropped_chunks == []  # never written, so nothing to delete
    assert st.new_chunks == [700, 800, 900]


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
    assert [w for w in writes[3] if w.startswith(key)] == [f"{key}|r|300", key]
    assert f"{key}|r|0" not in store.data, "the oldest seal left the window: its record is deleted"
    assert {k for k in store.data if k.startswith(key + "|r|")} == {
        f"{key}|r|{f}" for f in (100, 200, 300)
    }
    head = store.data[key]
    assert len(head) < 300, f"the head stays small, found {len(head)} bytes"
    restored = make_pipeline(registry_for(em), store)._emitter(em.emitter_id)
    assert restored.recent == pl.emitters[em.emitter_id].recent
    assert restored.chunks == pl.emitters[em.emitter_id].chunks


def test_the_earlier_whole_window_format_still_loads_and_is_rewritten_as_chunks() -> None:
    recent = b"".join(q.to_bytes(8, "big") + _digest(q) for q in range(10, 10 + RECENT_DIGESTS))
    old = json.dumps(
        {
            "x": 266,
            "h": base64.b64encode(bytes(32)).decode(),
            "p": {},
            "r": base64.b64encode(recent).decode(),
            "s": True,
        }
    ).encode()
    st = EmitterState.from_bytes(old, lambda data: None)
    assert st.recent == {q: _digest(q) for q in range(10, 10 + RECENT_DIGESTS)}
    assert st.chunks == [(10, 9 + RECENT_DIGESTS)] and st.new_chunks == [10]
    assert st.chunk_bytes(10) == b"".join(_digest(q) for q in range(10, 10 + RECENT_DIGESTS))


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
