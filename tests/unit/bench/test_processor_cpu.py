"""bench.processor_cpu drives the worker's code path like the faust agent does, and counts it."""

from __future__ import annotations

from bench.processor_cpu import build, run


def test_every_event_is_chained_and_the_state_goes_to_the_changelog() -> None:
    w, recs = build(300, seal_every=5, partitions=2)
    sealed = len(recs)
    r = run(w, recs, partitions=2, records_per_batch=4)
    assert r.records == sealed
    assert r.events >= 300, "every generated event is chained (no misbehaviour in the mix)"
    assert r.faust_batches == -(-sealed // 4)
    assert r.changelog_records > 0 and r.changelog_bytes > 0
    assert r.output_records >= 2, "at least one row container per partition"
    d = r.as_dict()
    assert d["events_per_record"] <= 5.0 + 0.5
    assert d["us_per_event"] > 0
