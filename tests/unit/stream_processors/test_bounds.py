"""Buffers that wait for seals are bounded: the oldest unsealed events are failed closed."""

from __future__ import annotations

from stream_processors.pipeline import PipelineConfig
from tests.support.events import SimEmitter, make_pipeline, reasons, registry_for, run, to_records


def test_unsealed_events_per_emitter_are_bounded() -> None:
    em = SimEmitter(seal_every=1000)
    msgs = [m for i in range(12) for m in em.event(f"wf-{i}", seal=False)]
    pipeline = make_pipeline(registry_for(em), config=PipelineConfig(max_unsealed_per_emitter=10))
    result = run(pipeline, to_records(msgs))
    assert reasons(result.outputs) == ["UNSEALED_EVENT", "UNSEALED_EVENT"]
    assert [q.source_offset for q in result.outputs.quarantine] == [0, 1], "the oldest go first"
    assert len(pipeline.emitters[em.emitter_id].pending) == 10


def test_seal_key_must_name_its_emitter() -> None:
    em = SimEmitter(seal_every=1)
    msgs = em.event("wf-1")
    records = to_records(msgs)
    bad = records[1].__class__(records[1].topic, 0, 1, b"seal:someone-else#1", records[1].value)
    result = run(make_pipeline(registry_for(em)), [records[0], bad])
    assert reasons(result.outputs)[0] == "KEY_MISMATCH"
