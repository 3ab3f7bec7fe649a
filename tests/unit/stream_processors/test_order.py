"""Order stage: a child waits for its parent in the same workflow, within bounded buffers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lineage import hashing
from lineage.model import EventKind
from stream_processors import order
from stream_processors.order import OrderLimits
from stream_processors.pipeline import PipelineConfig
from stream_processors.records import PendingEvent
from stream_processors.state import WorkflowState
from tests.support.events import (
    Message,
    SimEmitter,
    chained_ids,
    encode_event,
    event_ids,
    make_pipeline,
    reasons,
    registry_for,
    run,
    to_records,
    violation_types,
)


def _pending(em: SimEmitter, offset: int, **fields: object) -> PendingEvent:
    event = em.build("wf-1", **fields)
    em.next_seq += 1
    data = encode_event(event)
    return PendingEvent(offset, data, hashing.event_digest(data), event)


# -- the pure stage ---------------------------------------------------------


def test_offer_releases_a_waiting_child_after_its_parent() -> None:
    em = SimEmitter()
    wf = WorkflowState("wf-1")
    parent_id = "svc-a#1/1"
    child = _pending(em, 0, parent_event_id=parent_id)
    parent = _pending(em, 1)
    assert parent.event.event_id == parent_id
    adm = order.offer(wf, child)
    assert (adm.ready, adm.duplicates, adm.conflicts) == ([], [], [])
    assert wf.waiting == [child]
    adm = order.offer(wf, parent)
    assert [p.event.event_id for p in adm.ready] == [parent_id, child.event.event_id]
    assert wf.waiting == []
    assert wf.chained == {parent_id: parent.digest[:8], child.event.event_id: child.digest[:8]}


def test_offer_releases_a_whole_subtree_depth_first_in_offset_order() -> None:
    em = SimEmitter()
    wf = WorkflowState("wf-1")
    root = "svc-a#1/4"
    # arrival: grandchild, child b, child a, root (ids by sequence: 0,1,2 then root 3... see below)
    grandchild = _pending(em, 0, parent_event_id="svc-a#1/2")
    child_b = _pending(em, 1, parent_event_id=root)
    child_a = _pending(em, 2, parent_event_id=root)
    other = _pending(em, 3, parent_event_id="svc-a#1/99")
    root_ev = _pending(em, 4)
    for p in (grandchild, child_b, child_a, other):
        assert order.offer(wf, p).ready == []
    adm = order.offer(wf, root_ev)
    assert [p.offset for p in adm.ready] == [4, 1, 2, 0]
    assert wf.waiting == [other]


def test_offer_does_not_wait_for_a_parent_in_another_workflow() -> None:
    em = SimEmitter()
    wf = WorkflowState("wf-1")
    p = _pending(em, 0, parent_event_id="elsewhere", parent_workflow_id="wf-caller")
    assert order.offer(wf, p).ready == [p]
    same = _pending(em, 1, parent_event_id="missing", parent_workflow_id="wf-1")
    assert order.offer(wf, same).ready == []
    assert wf.waiting == [same]


def test_offer_drops_a_duplicate_with_the_same_bytes() -> None:
    em = SimEmitter()
    wf = WorkflowState("wf-1")
    p = _pending(em, 0)
    again = PendingEvent(5, p.data, p.digest, p.event)
    assert order.offer(wf, p).ready == [p]
    adm = order.offer(wf, again)
    assert (adm.ready, adm.duplicates, adm.conflicts) == ([], [again], [])


def test_offer_drops_a_duplicate_of_a_waiting_event() -> None:
    em = SimEmitter()
    wf = WorkflowState("wf-1")
    p = _pending(em, 0, parent_event_id="later")
    again = PendingEvent(5, p.data, p.digest, p.event)
    order.offer(wf, p)
    adm = order.offer(wf, again)
    assert adm.duplicates == [again] and wf.waiting == [p]


def test_offer_reports_the_same_id_with_other_bytes_as_a_conflict() -> None:
    em = SimEmitter()
    wf = WorkflowState("wf-1")
    p = _pending(em, 0)
    other = _pending(em, 1, event_id=p.event.event_id, action="something.else")
    order.offer(wf, p)
    adm = order.offer(wf, other)
    assert adm.ready == [] and adm.duplicates == []
    ((bad, reason),) = adm.conflicts
    assert bad is other
    assert f"event id {p.event.event_id} already seen with digest {p.digest[:8].hex()}" in reason


@st.composite
def _forest(draw: st.DrawFn) -> tuple[list[int | None], list[int]]:
    """Parents (index of an earlier event, or None) and an arrival permutation."""
    n = draw(st.integers(1, 12))
    parents: list[int | None] = [None]
    for i in range(1, n):
        parents.append(draw(st.none() | st.integers(0, i - 1)))
    perm = draw(st.permutations(list(range(n))))
    return parents, perm


@settings(max_examples=100, deadline=None)
@given(_forest())
def test_any_arrival_order_yields_a_causal_order(case: tuple[list[int | None], list[int]]) -> None:
    parents, arrival = case
    em = SimEmitter()
    ids = [f"e{i}" for i in range(len(parents))]
    events = [
        _pending(em, i, event_id=ids[i], parent_event_id=None if par is None else ids[par])
        for i, par in enumerate(parents)
    ]
    wf = WorkflowState("wf-1")
    released: list[str] = []
    for i in arrival:
        released += [p.event.event_id for p in order.offer(wf, events[i]).ready]
    assert sorted(released) == sorted(ids) and wf.waiting == []
    position = {eid: k for k, eid in enumerate(released)}
    for i, par in enumerate(parents):
        if par is not None:
            assert position[ids[par]] < position[ids[i]]


# -- through the pipeline ---------------------------------------------------


def test_a_child_sealed_before_its_parent_waits_and_is_chained_after() -> None:
    parent_svc = SimEmitter("svc-parent", seal_every=1)
    child_svc = SimEmitter("svc-child", seal_every=1)
    parent = parent_svc.build("wf-1")
    child_msgs = child_svc.event(
        "wf-1", kind=EventKind.EXECUTION_COMPLETED, parent_event_id=parent.event_id
    )
    parent_msgs = parent_svc.emit_bytes(parent)
    pl = make_pipeline(registry_for(parent_svc, child_svc))
    out = run(pl, to_records(child_msgs)).outputs
    assert out.entries == [] and out.quarantine == []
    assert [p.event.event_id for p in pl.workflows["wf-1"].waiting] == event_ids(child_msgs)
    assert pl.counters["waiting"] == 1 and pl.meta.waiting_workflows == ["wf-1"]
    out = run(pl, to_records(parent_msgs, start=2)).outputs
    assert chained_ids(out.entries) == [parent.event_id, *event_ids(child_msgs)]
    assert [e.chain_seq for e in out.entries] == [0, 1]
    assert out.entries[1].prev_hash == out.entries[0].entry_hash
    assert out.entries[0].prev_hash == hashing.genesis_hash("wf-1")
    assert [e.source_offset for e in out.entries] == [2, 0]
    assert pl.counters["waiting"] == 0 and pl.meta.waiting_workflows == []
    assert pl.counters["waiting_bytes"] == 0
    assert out.violations == []


def _filler(n: int, start_seq_svc: SimEmitter | None = None) -> list[Message]:
    svc = start_seq_svc or SimEmitter("svc-filler", seal_every=1)
    out: list[Message] = []
    while len(out) < n:
        out += svc.event("wf-filler")
    return out[:n]


def test_a_parent_that_never_arrives_makes_an_orphan_after_the_window() -> None:
    svc = SimEmitter("svc-child", seal_every=1)
    filler_svc = SimEmitter("svc-filler", seal_every=1)
    child = svc.event("wf-1", kind=EventKind.EXECUTION_COMPLETED, parent_event_id="never")
    filler = _filler(64 - len(child) + 1, filler_svc)
    records = to_records([*child, *filler])
    assert records[-1].offset == 64
    pl = make_pipeline(registry_for(svc, filler_svc), config=PipelineConfig(window_offsets=32))
    out = run(pl, records[:-1]).outputs
    assert reasons(out) == []
    out = run(pl, records[-1:]).outputs
    assert reasons(out) == ["ORPHAN_EVENT"]
    assert violation_types(out) == ["ORPHAN_EVENT"]
    assert out.quarantine[0].raw_value == child[0].value
    assert (
        "parent never was not chained: it did not arrive within 32 offsets"
        in out.quarantine[0].reason
    )
    assert pl.counters["waiting"] == 0 and pl.meta.waiting_workflows == []
    assert pl.counters["waiting_bytes"] == 0


def test_the_per_workflow_bound_orphans_the_oldest_waiting_events() -> None:
    svc = SimEmitter("svc-a", seal_every=1)
    children: list[Message] = []
    for _ in range(5):
        children += svc.event("wf-1", kind=EventKind.EXECUTION_COMPLETED, parent_event_id="root")
    root = svc.event("wf-1", event_id="root")
    config = PipelineConfig(order_limits=OrderLimits(max_events_per_workflow=3))
    pl = make_pipeline(registry_for(svc), config=config)
    out = run(pl, to_records(children)).outputs
    assert reasons(out) == ["ORPHAN_EVENT", "ORPHAN_EVENT"]
    assert [q.source_offset for q in out.quarantine] == [0, 2]
    assert "the workflow's reorder buffer is full" in out.quarantine[0].reason
    assert len(pl.workflows["wf-1"].waiting) == 3 and pl.counters["waiting"] == 3
    out = run(pl, to_records(root, start=len(children))).outputs
    assert chained_ids(out.entries) == ["root", *event_ids(children)[2:]]


def test_the_per_partition_bound_orphans_the_oldest_across_workflows() -> None:
    svc = SimEmitter("svc-a", seal_every=1)
    msgs: list[Message] = []
    for i in range(6):
        msgs += svc.event(
            f"wf-{i % 3}", kind=EventKind.EXECUTION_COMPLETED, parent_event_id=f"root-{i % 3}"
        )
    config = PipelineConfig(order_limits=OrderLimits(max_events_per_partition=4))
    pl = make_pipeline(registry_for(svc), config=config)
    out = run(pl, to_records(msgs)).outputs
    assert reasons(out) == ["ORPHAN_EVENT", "ORPHAN_EVENT"]
    assert [(q.source_offset, q.raw_key) for q in out.quarantine] == [(0, b"wf-0"), (2, b"wf-1")]
    assert "the partition's reorder buffer is full" in out.quarantine[0].reason
    assert pl.counters["waiting"] == 4
    assert sum(len(w.waiting) for w in pl.workflows.values()) == 4


def test_the_per_partition_byte_bound_orphans_the_oldest() -> None:
    svc = SimEmitter("svc-a", seal_every=1)
    msgs: list[Message] = []
    for i in range(4):
        msgs += svc.event(
            f"wf-{i}",
            kind=EventKind.EXECUTION_COMPLETED,
            parent_event_id="missing",
            attributes={"pad": "x" * 1000},
        )
    # a waiting event holds its bytes and its seal's bytes (seal_every=1: no inclusion path)
    sizes = [
        len(ev.value) + len(seal.value) for ev, seal in zip(msgs[::2], msgs[1::2], strict=True)
    ]
    limit = sum(sizes[1:])
    config = PipelineConfig(order_limits=OrderLimits(max_bytes_per_partition=limit))
    pl = make_pipeline(registry_for(svc), config=config)
    out = run(pl, to_records(msgs[:6])).outputs
    assert reasons(out) == []
    assert pl.counters["waiting_bytes"] == sum(sizes[:3])
    out = run(pl, to_records(msgs[6:], start=6)).outputs
    assert reasons(out) == ["ORPHAN_EVENT"]
    assert out.quarantine[0].source_offset == 0
    assert "the partition's reorder buffer is full" in out.quarantine[0].reason
    assert pl.counters["waiting"] == 3
    held = [p for w in pl.workflows.values() for p in w.waiting]
    assert pl.counters["waiting_bytes"] == sum(p.size for p in held) == limit


def test_a_parent_in_another_workflow_is_not_waited_for() -> None:
    svc = SimEmitter("svc-a", seal_every=1)
    msgs = svc.event(
        "wf-callee",
        kind=EventKind.WORKFLOW_STARTED,
        parent_event_id="caller-step",
        parent_workflow_id="wf-caller",
    )
    out = run(make_pipeline(registry_for(svc)), to_records(msgs)).outputs
    assert chained_ids(out.entries) == event_ids(msgs)


def test_the_same_event_id_with_other_bytes_from_another_emitter_is_a_conflict() -> None:
    a = SimEmitter("svc-a", seal_every=1)
    b = SimEmitter("svc-b", seal_every=1)
    first = a.event("wf-1", event_id="shared")
    second = b.event("wf-1", event_id="shared")
    out = run(make_pipeline(registry_for(a, b)), to_records([*first, *second])).outputs
    assert chained_ids(out.entries) == ["shared"]
    assert out.entries[0].event_bytes == first[0].value
    assert reasons(out) == ["DUPLICATE_CONFLICT"]
    assert out.quarantine[0].raw_value == second[0].value
    assert violation_types(out) == ["DUPLICATE_CONFLICT"]


def test_a_conflict_with_a_waiting_event_keeps_the_first() -> None:
    a = SimEmitter("svc-a", seal_every=1)
    b = SimEmitter("svc-b", seal_every=1)
    first = a.event("wf-1", event_id="shared", parent_event_id="root")
    second = b.event("wf-1", event_id="shared", parent_event_id="root")
    root = a.event("wf-1", event_id="root")
    out = run(make_pipeline(registry_for(a, b)), to_records([*first, *second, *root])).outputs
    assert reasons(out) == ["DUPLICATE_CONFLICT"]
    assert out.quarantine[0].source_offset == 2
    assert chained_ids(out.entries) == ["root", "shared"]
    assert out.entries[1].event_bytes == first[0].value


def test_waiting_events_survive_a_restart() -> None:
    parent_svc = SimEmitter("svc-parent", seal_every=1)
    child_svc = SimEmitter("svc-child", seal_every=1)
    parent = parent_svc.build("wf-1")
    child_msgs = child_svc.event("wf-1", parent_event_id=parent.event_id)
    parent_msgs = parent_svc.emit_bytes(parent)
    registry = registry_for(parent_svc, child_svc)
    store_pl = make_pipeline(registry)
    run(store_pl, to_records(child_msgs))
    resumed = make_pipeline(registry, store_pl.store)
    out = run(resumed, to_records(parent_msgs, start=2)).outputs
    assert chained_ids(out.entries) == [parent.event_id, *event_ids(child_msgs)]
    assert out.entries[1].seal_bytes == child_msgs[1].value
