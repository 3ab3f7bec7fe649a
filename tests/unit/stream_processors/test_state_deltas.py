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
