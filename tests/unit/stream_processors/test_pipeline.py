"""Whole-partition determinism: interleavings, replays, crashes and offset gaps yield the same chain."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage import codec, hashing, merkle
from lineage.model import ChainEntry, EventKind
from producers import emitter as emitter_module
from stream_processors.pipeline import PipelineConfig
from stream_processors.records import Outputs, RawRecord
from stream_processors.state import DictStore
from tests.support.events import (
    T0,
    TOPIC,
    Message,
    SimEmitter,
    WorkflowPlan,
    batched,
    chain_keys,
    emit_plans,
    entry_bytes,
    interleave,
    make_pipeline,
    registry_for,
    run,
    to_records,
)


@dataclass
class Scenario:
    emitters: list[SimEmitter]
    plans: list[WorkflowPlan]
    streams: list[list[Message]]

    @property
    def events(self) -> int:
        return sum(len(p.parents) for p in self.plans)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Several emitters writing several workflows into one partition.

    A workflow is either written by one emitter as a tree, or written by several emitters as a
    causal line (each event the child of the one before); in both shapes the causal order within
    the workflow is the only order, so every interleaving must chain it the same way.
    """
    n_emitters = draw(st.integers(2, 3))
    emitters = [
        SimEmitter(f"svc-{e}", "1", seal_every=draw(st.sampled_from([1, 2, 3, 5])))
        for e in range(n_emitters)
    ]
    plans: list[WorkflowPlan] = []
    for w in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 6))
        caller = (
            (plans[0].workflow_id, plans[0].event_id(0)) if plans and draw(st.booleans()) else None
        )
        if draw(st.booleans()):
            owner = draw(st.integers(0, n_emitters - 1))
            parents: list[int | None] = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
            plans.append(WorkflowPlan(f"wf-{w}", [owner] * n, parents, caller))
        else:
            owners = [draw(st.integers(0, n_emitters - 1)) for _ in range(n)]
            plans.append(WorkflowPlan(f"wf-{w}", owners, [None, *range(n - 1)], caller))
    schedule = draw(st.lists(st.integers(0, len(plans) - 1), max_size=30))
    return Scenario(emitters, plans, emit_plans(emitters, plans, schedule))


def _process(scenario: Scenario, messages: list[Message]) -> Outputs:
    pl = make_pipeline(registry_for(*scenario.emitters))
    return run(pl, to_records(messages)).outputs


def _integrity_clean(out: Outputs) -> None:
    assert out.quarantine == []
    assert [v for v in out.violations if v.rule in ("seal", "seal-chain", "equivocation")] == []


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.lists(st.integers(0, 2), max_size=80))
def test_every_interleaving_of_emitters_yields_the_same_chains(
    scenario: Scenario, picks: list[int]
) -> None:
    baseline = _process(scenario, [m for s in scenario.streams for m in s])
    shuffled = _process(scenario, interleave(scenario.streams, picks))
    _integrity_clean(baseline)
    _integrity_clean(shuffled)
    assert len(baseline.entries) == scenario.events
    assert chain_keys(shuffled.entries) == chain_keys(baseline.entries)
    assert {(v.violation_type, v.event_id) for v in shuffled.violations} == {
        (v.violation_type, v.event_id) for v in baseline.violations
    }
    _check_chains(baseline.entries)


def _check_chains(entries: list[ChainEntry]) -> None:
    """Each workflow's entries link from its genesis hash, position by position."""
    by_wf: dict[str, list[ChainEntry]] = {}
    for e in entries:
        by_wf.setdefault(e.workflow_id, []).append(e)
    for wf, chain in by_wf.items():
        chain.sort(key=lambda e: e.chain_seq)
        assert [e.chain_seq for e in chain] == list(range(len(chain)))
        prev = hashing.genesis_hash(wf)
        for e in chain:
            assert e.prev_hash == prev
            assert e.event_digest == hashing.event_digest(e.event_bytes)
            assert e.entry_hash == hashing.entry_hash(
                prev, e.event_digest, e.chain_seq, e.policy_digest
            )
            prev = e.entry_hash
    assert [e.log_index for e in entries] == list(range(len(entries)))


def _fixed_scenario() -> tuple[list[SimEmitter], list[RawRecord]]:
    emitters = [SimEmitter("svc-a", seal_every=3), SimEmitter("svc-b", seal_every=2)]
    plans = [
        WorkflowPlan("wf-line", [0, 1, 0, 1, 1, 0], [None, 0, 1, 2, 3, 4]),
        WorkflowPlan("wf-tree", [1, 1, 1, 1, 1], [None, 0, 0, 1, 2]),
        WorkflowPlan("wf-call", [0, 0], [None, 0], caller=("wf-line", "wf-line/0")),
    ]
    streams = emit_plans(emitters, plans, [0, 1, 2, 0, 1, 0, 2, 1, 0])
    return emitters, to_records(interleave(streams, [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1]))


def test_replaying_a_partition_on_a_fresh_processor_is_byte_identical() -> None:
    emitters, records = _fixed_scenario()
    registry = registry_for(*emitters)
    first = make_pipeline(registry)
    a = run(first, records).outputs
    second = make_pipeline(registry)
    b = run(second, records).outputs
    assert len(a.entries) == 13
    assert entry_bytes(a.entries) == entry_bytes(b.entries)
    violation = codec.load("violation")
    assert [violation.encode(v.to_record()) for v in a.violations] == [
        violation.encode(v.to_record()) for v in b.violations
    ]
    cp_a, cp_b = first.maybe_checkpoint(force=True), second.maybe_checkpoint(force=True)
    assert cp_a is not None and cp_a == cp_b
    assert cp_a.tree_size == 13
    assert cp_a.root_hash == merkle.root([e.entry_hash for e in a.entries])
    assert first.store.data == second.store.data  # type: ignore[attr-defined]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=4), st.data())
def test_crash_and_resume_anywhere_yields_the_uninterrupted_entries(
    cuts: list[int], data: st.DataObject
) -> None:
    emitters, records = _fixed_scenario()
    registry = registry_for(*emitters)
    expected = run(make_pipeline(registry), records).outputs
    store = DictStore()
    got = Outputs()
    done = 0
    replayed = 0
    for cut in [*sorted({min(c, len(records)) for c in cuts}), len(records)]:
        # the consumer may redeliver from any offset it had not committed yet
        start = data.draw(st.integers(0, done), label="redeliver from")
        pl = make_pipeline(registry, store)
        got.extend(run(pl, records[start:cut]).outputs)
        replayed += done - start if cut > done else cut - start
        assert pl.counters.get("replayed", 0) == replayed
        done = max(done, cut)
    assert entry_bytes(got.entries) == entry_bytes(expected.entries)
    assert got.violations == expected.violations
    assert got.quarantine == expected.quarantine
    assert got.containments == expected.containments


def test_a_crash_before_state_is_saved_re_emits_identical_entries() -> None:
    emitters, records = _fixed_scenario()
    registry = registry_for(*emitters)
    store = DictStore()
    pl = make_pipeline(registry, store)
    run(pl, records[:10])
    lost = pl.process(records[10:])[0]  # published, then the worker died before dirty_state()
    assert lost.entries
    resumed = make_pipeline(registry, store)
    again = run(resumed, records[10:]).outputs
    assert entry_bytes(again.entries) == entry_bytes(lost.entries)
    assert again.violations == lost.violations
    assert resumed.counters.get("replayed", 0) == 0


def test_a_replay_after_state_is_saved_is_skipped_and_counted_not_chained_twice() -> None:
    emitters, records = _fixed_scenario()
    registry = registry_for(*emitters)
    store = DictStore()
    run(make_pipeline(registry, store), records)
    again = make_pipeline(registry, store)
    out = run(again, records).outputs
    assert out.entries == [] and out.violations == [] and out.quarantine == []
    assert again.counters["replayed"] == len(records)
    assert again.counters["chained"] == 13


def test_an_offset_gap_returns_a_seek_and_processes_nothing_past_it() -> None:
    emitters, records = _fixed_scenario()
    registry = registry_for(*emitters)
    expected = run(make_pipeline(registry), records).outputs
    pl = make_pipeline(registry)
    gap_at = 9
    with_gap = records[:gap_at] + records[gap_at + 1 :]
    out, seek = pl.process(with_gap)
    assert seek == gap_at
    assert pl.meta.next_offset == gap_at
    assert pl.counters["offset_gaps"] == 1
    assert pl.counters["records"] == gap_at
    assert all(e.source_offset < gap_at for e in out.entries)
    pl.dirty_state()
    rest, seek = pl.process(records[gap_at:])
    assert seek is None
    assert entry_bytes(out.entries + rest.entries) == entry_bytes(expected.entries)


def test_a_fresh_processor_seeks_to_offset_zero() -> None:
    emitters, records = _fixed_scenario()
    pl = make_pipeline(registry_for(*emitters))
    out, seek = pl.process(records[3:])
    assert (out.entries, seek, pl.meta.next_offset) == ([], 0, 0)


def test_a_tiny_workflow_cache_changes_nothing() -> None:
    emitters, records = _fixed_scenario()
    registry = registry_for(*emitters)
    expected = run(make_pipeline(registry), records).outputs
    store = DictStore()
    got = Outputs()
    for start in range(0, len(records), 4):
        pl = make_pipeline(registry, store, config=PipelineConfig(cache_workflows=1))
        got.extend(run(pl, records[start : start + 2], records[start + 2 : start + 4]).outputs)
        assert len(pl.workflows) <= 1
    assert entry_bytes(got.entries) == entry_bytes(expected.entries)
    assert got.violations == expected.violations


def test_expiry_after_a_restart_is_the_same_as_without_one() -> None:
    # svc-z starts waiting before svc-a: in memory the pending list is in arrival order, but a
    # restart reads it back sorted; expiry must not depend on which of the two it sees.
    late = SimEmitter("svc-z", seal_every=100)
    early = SimEmitter("svc-a", seal_every=100)
    busy = SimEmitter("svc-busy", seal_every=1)
    msgs = [*late.event("wf-1"), *early.event("wf-1"), *late.event("wf-2"), *early.event("wf-2")]
    while len(msgs) < 65:
        msgs += busy.event("wf-busy")
    records = to_records(msgs[:65])
    registry = registry_for(late, early, busy)
    config = PipelineConfig(window_offsets=8)
    expected = run(make_pipeline(registry, config=config), records).outputs
    assert [q.reason_code for q in expected.quarantine] == ["UNSEALED_EVENT"] * 4
    store = DictStore()
    got = Outputs()
    got.extend(run(make_pipeline(registry, store, config=config), records[:10]).outputs)
    got.extend(run(make_pipeline(registry, store, config=config), records[10:]).outputs)
    assert got.quarantine == expected.quarantine
    assert got.violations == expected.violations
    assert got.containments == expected.containments


class _FakeProducer:
    """Stands in for confluent_kafka.Producer: one topic of one partition, records kept in order."""

    def __init__(self, conf: dict[str, object]) -> None:
        self.sent: list[tuple[bytes, bytes, int]] = []

    def list_topics(self, topic: str, timeout: float) -> object:
        part = SimpleNamespace(partitions={0: object()}, error=None)
        return SimpleNamespace(topics={topic: part})

    def produce(
        self, topic: str, *, value: bytes, key: bytes, partition: int, on_delivery: object
    ) -> None:
        self.sent.append((key, value, partition))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0

    def close(self) -> bool:
        return True


@pytest.mark.parametrize("batch_records", [True, False])
def test_the_simulated_emitter_writes_exactly_what_the_sdk_writes(
    monkeypatch: pytest.MonkeyPatch, batch_records: bool
) -> None:
    monkeypatch.setattr(emitter_module, "Producer", _FakeProducer)
    sim = SimEmitter("svc-a", "i1", seal_every=3)
    sdk = emitter_module.Emitter(
        bootstrap="unused:9092",
        topic=TOPIC,
        signer=sim.signer,
        instance="i1",
        seal_every=3,
        seal_ms=10**9,
        batch_records=batch_records,
    )
    expected: list[Message] = []
    for i in range(7):
        fields = {
            "event_id": f"e{i}",
            "event_time": T0 + i,
            "parent_event_id": f"e{i - 1}" if i else None,
        }
        expected += sim.event("wf-1", kind=EventKind.EXECUTION_COMPLETED, **fields)
        sdk.emit(
            workflow_id="wf-1",
            kind=EventKind.EXECUTION_COMPLETED,
            principal="user:alice",
            action="workflow.step",
            **fields,
        )
    expected += sim.seal()
    sdk.close(timeout=1)
    if batch_records:
        expected = batched(expected)
    assert sdk._producer.sent == [(m.key, m.value, 0) for m in expected]
