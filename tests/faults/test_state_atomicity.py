"""A worker killed while writing its state leaves a prefix of the writes in the changelog: cut it anywhere.

Deterministic and broker-less: the faust table is a dict, its changelog a list of writes. For every
cut point of the changelog, a new owner restores the table from that prefix, resumes the partition
where the restored state says, and together with what the first owner had already published it
must yield exactly the entries (hash, chain position, log index) of a run that never stopped.
"""

from __future__ import annotations

from typing import Any

import pytest

from lineage.model import EventKind
from stream_processors.records import Outputs
from stream_processors.state import TableStore
from tests.support.events import SimEmitter, batched, make_pipeline, registry_for, to_records

pytestmark = pytest.mark.timeout(120)  # pure Python, many restores per test; slow under load


class FakeTable:
    """What TableStore uses of a faust table: ``data`` and ``send_changelog``."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = dict(data or {})
        self.changelog: list[tuple[bytes, bytes]] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes) -> None:
        self.changelog.append((key, value))

    @classmethod
    def restored(cls, changelog: list[tuple[bytes, bytes]]) -> FakeTable:
        """A table as faust recovers it: the last value of each key in the changelog."""
        return cls(dict(changelog))


def workload() -> tuple[list[Any], list[SimEmitter]]:
    """Two emitters, 12 interleaved workflows; a workflow's events alternate between emitters."""
    a, b = SimEmitter("orchestrator", seal_every=5), SimEmitter("tool-runner", seal_every=3)
    msgs: list[Any] = []
    head: dict[str, str] = {}
    for step in range(8):
        for w in range(12):
            wid = f"wf-{w:02d}"
            em = a if (step + w) % 3 else b
            kind = EventKind.WORKFLOW_STARTED if step == 0 else EventKind.EXECUTION_COMPLETED
            m = em.event(wid, kind=kind, parent_event_id=head.get(wid))
            head[wid] = m[0].event.event_id  # type: ignore[union-attr]
            msgs += m
    return msgs + a.seal() + b.seal(), [a, b]


def keyset(out: Outputs) -> set[tuple[str, int, bytes, int]]:
    """(workflow, chain position, entry hash, log index) of each entry."""
    return {(e.workflow_id, e.chain_seq, e.entry_hash, e.log_index) for e in out.entries}


@pytest.mark.parametrize("part_bytes", [TableStore.PART_BYTES, 300])
def test_restore_from_every_prefix_of_a_half_written_batch(
    part_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 300-byte parts most workflow and emitter records are split: cut inside them too."""
    monkeypatch.setattr(TableStore, "PART_BYTES", part_bytes)
    msgs, emitters = workload()
    records = to_records(msgs)
    registry = registry_for(*emitters)
    ref, seek = make_pipeline(registry).process(records)
    assert seek is None
    expected = keyset(ref)
    assert len(expected) == 96, (
        f"expected all 96 events chained without faults, found {len(expected)}"
    )
    batch = 17
    cuts = 0
    for last in range(batch, len(records), batch):
        first = FakeTable()
        owner = make_pipeline(registry, TableStore(first, 0))
        published = Outputs()
        for i in range(0, last, batch):
            before = len(first.changelog)
            out, _ = owner.process(records[i : i + batch])
            published.extend(out)  # outputs are acknowledged before the state is written
            owner.dirty_state()
        for cut in range(before, len(first.changelog)):  # the last batch's writes, cut anywhere
            heir = make_pipeline(registry, TableStore(FakeTable.restored(first.changelog[:cut]), 0))
            out, seek = heir.process(records[heir.meta.next_offset :])
            assert seek is None
            got = keyset(published) | keyset(out)
            assert got == expected, (
                f"state of the batch ending at offset {last} cut after write {cut - before} of "
                f"{len(first.changelog) - before}: {len(expected - got)} entries missing or moved"
            )
            cuts += 1
    assert cuts > 50, f"expected many cut points, found {cuts}"


def _replay_after_a_partial_restore(
    records: list[Any], registry: Any, batch: int, heir_batch: int
) -> list[str]:
    """First owner writes state per batch; the heir restores from the changelog minus the tail of
    the last write (as faust did when the broker's end offset was the last batch's base + 1),
    works one batch of ``heir_batch`` records (fewer than the first owner's last batch: batch
    boundaries depend on timing); a third owner restores from the whole changelog. Returns what
    differed from a run without faults, per cut point."""
    ref, _ = make_pipeline(registry).process(records)
    expected = keyset(ref)
    failures: list[str] = []
    for last in range(batch, len(records) - batch, batch):
        first = FakeTable()
        owner = make_pipeline(registry, TableStore(first, 0))
        published = Outputs()
        for i in range(0, last, batch):
            before = len(first.changelog)
            out, _ = owner.process(records[i : i + batch])
            published.extend(out)
            owner.dirty_state()
        for cut in range(before + 1, len(first.changelog)):  # the heir misses records cut..end
            heir_table = FakeTable.restored(first.changelog[:cut])
            heir = make_pipeline(registry, TableStore(heir_table, 0))
            heard = Outputs()
            heard.extend(published)
            start = heir.meta.next_offset
            out, _ = heir.process(records[start : start + heir_batch])
            heard.extend(out)
            heir.dirty_state()
            third_table = FakeTable.restored(first.changelog + heir_table.changelog)
            third = make_pipeline(registry, TableStore(third_table, 0))
            out, _ = third.process(records[third.meta.next_offset :])
            got = keyset(heard) | keyset(out)
            if got != expected:
                failures.append(
                    f"last write ending at offset {last} seen up to record {cut - before}: "
                    f"{len(expected - got)} entries missing or moved"
                )
    return failures


@pytest.mark.xfail(
    strict=True,
    reason="root cause of the crash-suite failures with state written in several records: a "
    "restore that misses the changelog's tail leaves records whose batch number the heir "
    "reuses, so the next restore takes them as committed. ChangelogFence makes faust's "
    "recovery read to the real end and TableStore refuses a table without its fence "
    "(test_a_table_restored_without_its_fence_is_refused); TableStore alone cannot undo "
    "records it never saw.",
)
def test_a_restore_that_missed_the_changelog_tail_then_a_full_restore() -> None:
    msgs, emitters = workload()
    failures = _replay_after_a_partial_restore(to_records(msgs), registry_for(*emitters), 9, 2)
    assert not failures, f"{len(failures)} cut points diverged, e.g. {failures[:3]}"


def test_a_table_restored_without_its_fence_is_refused() -> None:
    from stream_processors.state import IncompleteRestore, fence_key

    msgs, emitters = workload()
    owner_table = FakeTable()
    owner = make_pipeline(registry_for(*emitters), TableStore(owner_table, 0))
    owner.process(to_records(msgs)[:10])
    owner.dirty_state()
    fence = b"\x01" * 16
    whole = FakeTable.restored([*owner_table.changelog, (fence_key(0), fence)])
    TableStore(whole, 0, fence)  # the whole changelog up to its fence: accepted
    for table, found in (
        (FakeTable.restored(owner_table.changelog), "None"),  # recovery stopped before the fence
        (FakeTable.restored([(fence_key(0), b"\x02" * 16)]), "02" * 16),  # an earlier fence
    ):
        with pytest.raises(IncompleteRestore) as exc:
            TableStore(table, 0, fence)
        assert f"expected the restored state table to end with fence {fence.hex()}" in str(
            exc.value
        )
        assert f"found {found}" in str(exc.value)


def test_a_value_over_the_message_limit_is_split_and_restored() -> None:
    from stream_processors.state import StateCorrupt

    table = FakeTable()
    store = TableStore(table, 0)
    big = bytes(range(256)) * 10_000  # 2.56 MB
    bigger = b"\x07" * 3_000_000
    store.put("0|w|wf-big", big)
    store.put("0|meta", b"{}")
    store.put("0|w|wf-big", bigger)  # the next batch, never committed: no meta follows
    sizes = [len(v) for _, v in table.changelog]
    assert max(sizes) < 1_000_000, f"expected every record under 1 MB, found {max(sizes)}"
    assert store.get("0|w|wf-big") == big, "reads see committed state only"
    restored = TableStore(FakeTable.restored(table.changelog), 0)
    assert restored.get("0|w|wf-big") == big, "the uncommitted split write is rolled back"
    store.put("0|meta", b"{}")
    assert TableStore(FakeTable.restored(table.changelog), 0).get("0|w|wf-big") == bigger
    part = b"0|x|3|w|wf-big"
    lost = FakeTable.restored([(k, v) for k, v in table.changelog if k != part])
    with pytest.raises(StateCorrupt, match="expected 8 parts of 3000000 bytes in all, found parts"):
        TableStore(lost, 0).get("0|w|wf-big")


def test_a_workflow_whose_state_outgrows_a_kafka_message_is_written_in_parts() -> None:
    """One open workflow of 26,000 events: its causal bookkeeping alone passes 1 MB."""
    em = SimEmitter("orchestrator", seal_every=500)
    records = to_records(batched(em.chain("wf-long", 26_000)))
    table = FakeTable()
    pl = make_pipeline(registry_for(em), TableStore(table, 0))
    for i in range(0, len(records), 10):
        pl.process(records[i : i + 10])
        pl.dirty_state()
    assert pl.workflows["wf-long"].next_seq == 26_000
    whole = len(pl.workflows["wf-long"].to_bytes())
    assert whole > 1_000_000, f"expected the workflow state over 1 MB, found {whole} bytes"
    largest = max(len(v) for _, v in table.changelog if v is not None)
    assert largest < 1_000_000, f"expected every changelog record under 1 MB, found {largest}"
    heir = make_pipeline(registry_for(em), TableStore(FakeTable.restored(table.changelog), 0))
    restored = heir._workflow("wf-long")
    assert restored.to_bytes() == pl.workflows["wf-long"].to_bytes()
