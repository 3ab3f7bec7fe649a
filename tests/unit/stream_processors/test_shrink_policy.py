"""A completed workflow's policy memory shrinks with its chain: only containment stays."""

from __future__ import annotations

import json

from lineage.model import EventKind
from stream_processors.pipeline import PipelineConfig
from stream_processors.policy_stage import WorkflowPolicyState
from stream_processors.state import DictStore
from tests.support.events import SimEmitter, make_pipeline, registry_for, run, to_records


def _completed_then_traffic(em: SimEmitter, wid: str) -> list:  # type: ignore[type-arg]
    msgs = em.chain(wid, 6)
    last = msgs[-2].event
    assert last is not None
    msgs += em.event(wid, kind=EventKind.WORKFLOW_COMPLETED, parent_event_id=last.event_id)
    for i in range(80):  # other traffic moves the offsets on past the grace
        msgs += em.event(f"wf-other-{i}")
    return msgs


def test_policy_state_of_a_shrunk_workflow_keeps_only_its_containment() -> None:
    em = SimEmitter(seal_every=1)
    store = DictStore()
    pl = make_pipeline(registry_for(em), store, config=PipelineConfig(completed_grace_offsets=10))
    # Mark the workflow contained before it completes: containment must survive the shrink.
    pl._policy_state(pl._workflow("wf-done")).contained = True
    pl._policy_state(pl._workflow("wf-done")).contained_by = "violation-1"
    run(pl, to_records(_completed_then_traffic(em, "wf-done")))
    assert pl.counters["workflows_shrunk"] == 1
    ps = pl._policy_state(pl._workflow("wf-done"))
    assert (ps.authorizations, ps.depths, ps.fanout, ps.measurements) == ({}, {}, {}, {})
    assert ps.contained and ps.contained_by == "violation-1"
    pl.dirty_state()
    stored = store.get("0|w|wf-done")
    assert stored is not None
    restored = make_pipeline(registry_for(em), store)._policy_state(
        make_pipeline(registry_for(em), store)._workflow("wf-done")
    )
    assert restored == WorkflowPolicyState(contained=True, contained_by="violation-1")


def test_a_shrunk_workflow_record_is_its_head_and_sequence() -> None:
    em = SimEmitter(seal_every=1)
    store = DictStore()
    pl = make_pipeline(registry_for(em), store, config=PipelineConfig(completed_grace_offsets=10))
    run(pl, to_records(_completed_then_traffic(em, "wf-done")))
    pl.dirty_state()
    stored = store.get("0|w|wf-done")
    assert stored is not None
    record = json.loads(stored)
    assert (record["k"], record["q"], record["n"]) == ([], [], 7), record
    assert "s" not in record, "no containment to keep"
    assert not [k for k in store.data if k.startswith("0|w|wf-done|")], "its journal is deleted"
    assert len(stored) < 100, f"expected under 100 bytes for a shrunk workflow, found {len(stored)}"
