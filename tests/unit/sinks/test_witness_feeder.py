"""The witness feeder on chDB: proofs from the witness's size, cosignatures stored and exported."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage import merkle
from lineage import witness as w
from lineage.verify import verify_bundle
from lineage.witnessed import WitnessPolicy, check_bundle
from lineage_cli.evidence import export_bundle
from sinks import rows, schema
from sinks.witness_feeder import Answer, LogTree, WitnessFeeder, load_cosignatures
from tests.support.lineage_builder import Dataset, build_dataset

pytestmark = pytest.mark.timeout(120)
NOW = 1_767_300_000


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.data())
def test_log_tree_proofs_match_merkle(n: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    tree = LogTree()
    for h in leaves:
        tree.append(h)
    new = data.draw(st.integers(1, n))
    old = data.draw(st.integers(0, new))
    assert tree.root(new) == merkle.root_from_hashes(leaves[:new])
    proof = tree.consistency(old, new)
    assert proof == merkle.consistency_proof_from_hashes(old, leaves[:new])
    if old:
        assert merkle.verify_consistency(old, new, tree.root(old), tree.root(new), proof)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset()


def _witness(tmp_path: Path, data: Dataset) -> w.Witness:
    store = w.WitnessStore(tmp_path / "witness")
    store.init("witness.test/w1", [w.LogSpec("lineage.local/", (data.checkpoint_vkey,), True)])
    return w.Witness(store, clock=lambda: NOW)


def _insert(client: Any, db: str, entries: list[Any], checkpoints: list[Any]) -> None:
    if entries:
        client.insert(
            "lineage_entries",
            [rows.entry_row(e) for e in entries],
            column_names=list(rows.ENTRY_COLUMNS),
            database=db,
        )
    if checkpoints:
        client.insert(
            "checkpoints",
            [rows.checkpoint_row(c) for c in checkpoints],
            column_names=list(rows.CHECKPOINT_COLUMNS),
            database=db,
        )


def _feeder(client: Any, db: str, wit: w.Witness, calls: list[bytes]) -> WitnessFeeder:
    def post(url: str, body: bytes) -> Answer:
        calls.append(body)
        r = wit.add_checkpoint(body)
        return Answer(r.status, r.body, r.content_type)

    return WitnessFeeder(
        client, threading.Lock(), db, "http://witness.invalid", wit.vkey, post=post
    )


def test_feeder_cosigns_growing_logs_and_export_carries_the_cosignatures(
    tmp_path: Path, chdb_client: Any, ch_database: str, data: Dataset
) -> None:
    schema.migrate(chdb_client, ch_database)
    wit = _witness(tmp_path, data)
    calls: list[bytes] = []
    feeder = _feeder(chdb_client, ch_database, wit, calls)
    # First half of each partition: entries and the checkpoints they reach.
    half = {
        p: data.partition_checkpoints(p)[len(data.partition_checkpoints(p)) // 2]
        for p in range(data.partitions)
    }
    early = [e for e in data.entries if e.log_index < half[e.source_partition].tree_size]
    _insert(
        chdb_client,
        ch_database,
        early,
        [c for c in data.checkpoints if c.tree_size <= half[c.partition].tree_size],
    )
    assert feeder.step() == data.partitions
    # Checkpoints arrive before their entries: nothing is submitted until the rows are there.
    late = [e for e in data.entries if e.log_index >= half[e.source_partition].tree_size]
    _insert(
        chdb_client,
        ch_database,
        [],
        [c for c in data.checkpoints if c.tree_size > half[c.partition].tree_size],
    )
    submitted = feeder.stats.submitted
    assert feeder.step() == 0 and feeder.stats.submitted == submitted
    _insert(chdb_client, ch_database, late, [])
    assert feeder.step() == data.partitions
    assert feeder.step() == 0  # nothing new
    # The second round proved consistency from the first cosigned size.
    for p in range(data.partitions):
        state = wit.store.state(data.partition_checkpoints(p)[0].origin)
        assert state is not None and state.size == data.partition_checkpoints(p)[-1].tree_size
    assert any(b.startswith(f"old {half[0].tree_size}\n".encode()) for b in calls)
    assert feeder.stats.refused == 0 and wit.store.refusals() == []
    stored = load_cosignatures(chdb_client, ch_database, list(range(data.partitions)))
    assert len(stored) == 2 * data.partitions
    wf = data.workflows[1]
    bundle = export_bundle(
        chdb_client, ch_database, wf, data.registry, policy_sets=[data.policy_files]
    )
    report = verify_bundle(bundle, registry=data.registry)
    findings = check_bundle(
        bundle, report, WitnessPolicy.from_vkeys([wit.vkey], 1, NOW + 5), data.registry
    )
    assert report.ok, report.failure
    assert findings.newest is not None and findings.age_s == 5


def test_feeder_refuses_to_prove_a_store_behind_the_witness(
    tmp_path: Path, chdb_client: Any, ch_database: str, data: Dataset
) -> None:
    schema.migrate(chdb_client, ch_database)
    wit = _witness(tmp_path, data)
    _insert(chdb_client, ch_database, data.entries, data.checkpoints)
    assert _feeder(chdb_client, ch_database, wit, []).step() == data.partitions
    # Roll partition 0 back: its newest checkpoints and the rows they covered are deleted.
    keep = data.partition_checkpoints(0)[1].tree_size
    for sql in (
        f"DELETE FROM {ch_database}.lineage_entries WHERE source_partition = 0 AND log_index >= {keep}",
        f"DELETE FROM {ch_database}.checkpoints WHERE partition = 0 AND tree_size > {keep}",
    ):
        chdb_client.command(f"{sql} SETTINGS mutations_sync = 1")
    fresh = _feeder(chdb_client, ch_database, wit, [])  # e.g. after a restart
    assert fresh.step() == data.partitions - 1  # the intact partition is cosigned again
    assert "behind the witness" in fresh.stats.last_error
    assert fresh.stats.conflicts == data.partitions  # each learns the size from a 409
    newest = data.partition_checkpoints(0)[-1]
    assert wit.store.state(newest.origin).size == newest.tree_size  # type: ignore[union-attr]
