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
from tests.support.events import SimEmitter, make_pipeline, registry_for, to_records

pytestmark = pytest.mark.timeout(30)


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


def test_restore_from_every_prefix_of_a_half_written_batch() -> None:
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
