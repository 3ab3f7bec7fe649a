"""Witness checks: cosigned bundles, rollback of the store against trusted checkpoints, key windows."""

from __future__ import annotations

import base64
import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lineage import merkle, note
from lineage import witness as w
from lineage.keys import KeyRegistry, Role
from lineage.model import Checkpoint
from lineage.verify import FailureKind, Report, verify_bundle
from lineage.witnessed import (
    StoredCosignature,
    WitnessPolicy,
    attach_cosignatures,
    check_bundle,
    check_store,
)
from lineage_cli.evidence import verify_clickhouse
from sinks import rows, schema
from sinks.witness_feeder import stored_logs, stored_root
from tests.support.lineage_builder import Dataset, build_dataset, sign_checkpoint

pytestmark = pytest.mark.timeout(120)

NOW = 1_767_300_000  # seconds; after every key's not_before in the dataset (T0 = 2026-01-01)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset()


def _witness(tmp_path: Path, data: Dataset, name: str = "witness.test/w1") -> w.Witness:
    store = w.WitnessStore(tmp_path / name.replace("/", "_"))
    store.init(name, [w.LogSpec("lineage.local/", (data.checkpoint_vkey,), prefix=True)])
    return w.Witness(store, clock=lambda: NOW)


def _leaf_hashes(data: Dataset, p: int) -> list[bytes]:
    return [merkle.leaf_hash(e.entry_hash) for e in data.partition_entries(p)]


def feed(wit: w.Witness, data: Dataset, upto: int | None = None) -> list[StoredCosignature]:
    """Submit every partition's checkpoints in order (the first ``upto`` of each when given)."""
    out = []
    for p in range(data.partitions):
        hashes = _leaf_hashes(data, p)
        old = 0
        for cp in data.partition_checkpoints(p)[:upto]:
            proof = merkle.consistency_proof_from_hashes(old, hashes[: cp.tree_size])
            r = wit.add_checkpoint(w.format_add_checkpoint(old, proof, cp.note))
            assert r.status == 200, r.body
            out.append(StoredCosignature(p, cp.tree_size, cp.root_hash, r.body.decode()))
            old = cp.tree_size
    return out


def _bundle(data: Dataset, cosigs: list[StoredCosignature], wf: str) -> dict[str, Any]:
    from lineage.bundle import build_bundle

    entries = data.workflow_entries(wf)
    need = {e.source_partition: e.log_index for e in entries}
    cps = attach_cosignatures(data.checkpoints, cosigs, need)
    return build_bundle(
        wf,
        entries,
        data.partition_leaves(),
        cps,
        data.registry,
        data.checkpoint_vkey,
        policy_sets=[data.policy_files],
        violations=data.violation_records,
    )


def _policy(*wits: w.Witness, required: int | None = None, now: int = NOW) -> WitnessPolicy:
    return WitnessPolicy.from_vkeys([x.vkey for x in wits], required, now)


def _check(doc: dict[str, Any], policy: WitnessPolicy, registry: KeyRegistry) -> tuple[Report, Any]:
    report = verify_bundle(doc, registry=registry)
    findings = check_bundle(doc, report, policy, registry)
    return report, findings


def test_cosigned_bundle_verifies_with_the_witness_key_and_reports_freshness(
    tmp_path: Path, data: Dataset
) -> None:
    wit = _witness(tmp_path, data)
    doc = _bundle(data, feed(wit, data), data.workflows[1])
    report, findings = _check(doc, _policy(wit, now=NOW + 90), data.registry)
    assert report.failure is None, report.failure
    assert findings.newest["cosigned_at"] == NOW and findings.age_s == 90
    assert [c["witness"] for log in findings.logs for c in log["cosignatures"]] == [
        w.parse_cosigner_vkey(wit.vkey)[0] + "+" + wit.vkey.split("+")[1]
    ] * len(doc["logs"])
    assert any("newest cosigned checkpoint" in line and "90 s" in line for line in findings.lines())
    # Cosignature lines are extra signatures: a verifier without witness keys ignores them.
    assert verify_bundle(doc, registry=data.registry).ok


def test_bundle_without_enough_cosignatures_fails(tmp_path: Path, data: Dataset) -> None:
    wit = _witness(tmp_path, data)
    second = _witness(tmp_path, data, "witness.test/w2")
    plain = data.bundle(data.workflows[1])  # exported before any witness: no cosignature
    report, _ = _check(plain, _policy(wit), data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.WITNESS_COSIGNATURES
    assert report.failure.found == "0: none" and report.exit_code == 1
    doc = _bundle(data, feed(wit, data), data.workflows[1])
    report, _ = _check(doc, _policy(wit, second, required=2), data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.WITNESS_COSIGNATURES
    assert report.failure.found.startswith("1: witness.test/w1+")
    report, _ = _check(doc, _policy(wit, second, required=1), data.registry)
    assert report.ok


def test_tampered_cosignature_fails(tmp_path: Path, data: Dataset) -> None:
    wit = _witness(tmp_path, data)
    doc = _bundle(data, feed(wit, data), data.workflows[1])
    bad = copy.deepcopy(doc)
    signed = bad["logs"][0]["checkpoints"][-1]["note"]
    line = signed.rsplit("\n", 2)[-2]
    name, sig = line[2:].split(" ")
    raw = bytearray(base64.b64decode(sig))
    raw[20] ^= 1  # a byte of the Ed25519 signature
    forged = line[:2] + name + " " + base64.b64encode(bytes(raw)).decode()
    bad["logs"][0]["checkpoints"][-1]["note"] = signed.replace(line, forged)
    report, _ = _check(bad, _policy(wit), data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.WITNESS_COSIGNATURES
    assert "invalid cosignature" in report.failure.message
    assert report.failure.where["partition"] == bad["logs"][0]["partition"]


def test_processor_key_past_not_after_cannot_vouch_for_new_checkpoints(
    tmp_path: Path, data: Dataset
) -> None:
    wit = _witness(tmp_path, data)
    doc = _bundle(data, feed(wit, data), data.workflows[1])
    processor = next(r for r in data.registry.records() if r.role is Role.PROCESSOR)
    # The key expired one second before the witness first saw (and cosigned) the checkpoints.
    expired = replace(processor, not_after_us=(NOW - 1) * 1_000_000)
    registry = KeyRegistry([r if r is not processor else expired for r in data.registry.records()])
    report, _ = _check(doc, _policy(wit), registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.KEY_EXPIRED
    assert "outside its validity window" in report.failure.message
    # Retired after the cosignature: the checkpoints it vouched for while valid still count.
    retired = replace(processor, not_after_us=(NOW + 1) * 1_000_000)
    registry = KeyRegistry([r if r is not processor else retired for r in data.registry.records()])
    report, _ = _check(doc, _policy(wit, now=NOW + 86400 * 365), registry)
    assert report.ok, report.failure


def test_witness_policy_input_errors() -> None:
    with pytest.raises(w.WitnessError, match=r"expected 1\.\.0"):
        WitnessPolicy.from_vkeys([], None, NOW)
    with pytest.raises(w.WitnessError, match="type 0x04"):
        WitnessPolicy.from_vkeys([note.verifier_key("lineage-processor", bytes(32))], None, NOW)


# -- the store against trusted checkpoints ----------------------------------------------------


@pytest.fixture
def db(chdb_client: Any, ch_database: str, data: Dataset) -> str:
    schema.migrate(chdb_client, ch_database)
    chdb_client.insert(
        "lineage_entries",
        [rows.entry_row(e) for e in data.entries],
        column_names=list(rows.ENTRY_COLUMNS),
        database=ch_database,
    )
    chdb_client.insert(
        "checkpoints",
        [rows.checkpoint_row(c) for c in data.checkpoints],
        column_names=list(rows.CHECKPOINT_COLUMNS),
        database=ch_database,
    )
    return ch_database


def _store_check(
    client: Any, db: str, data: Dataset, notes: list[str], policy: WitnessPolicy | None
) -> Report:
    report = verify_clickhouse(client, db, registry=data.registry)
    assert report.ok, report.failure  # the store is self-consistent: only the anchor can tell
    check_store(
        report,
        notes,
        [note.parse_verifier_key(data.checkpoint_vkey)],
        stored_logs(client, db),
        lambda p, n: stored_root(client, db, p, n),
        policy=policy,
        registry=data.registry,
        now=NOW,
    )
    return report


def _trusted(tmp_path: Path, data: Dataset) -> tuple[w.Witness, list[str]]:
    wit = _witness(tmp_path, data)
    feed(wit, data)
    return wit, parse(wit)


def parse(wit: w.Witness) -> list[str]:
    return w.parse_trusted_document(wit.trusted_checkpoints(), "witness")


def test_clean_store_matches_the_witness(
    tmp_path: Path, chdb_client: Any, db: str, data: Dataset
) -> None:
    wit, notes = _trusted(tmp_path, data)
    assert len(notes) == data.partitions
    report = _store_check(chdb_client, db, data, notes, _policy(wit))
    assert report.ok, report.failure


def _delete(client: Any, sql: str) -> None:
    client.command(f"{sql} SETTINGS mutations_sync = 1")


def test_deleting_newest_checkpoints_with_their_rows_is_a_rollback(
    tmp_path: Path, chdb_client: Any, db: str, data: Dataset
) -> None:
    wit, notes = _trusted(tmp_path, data)
    cps = data.partition_checkpoints(0)
    keep = cps[-3].tree_size  # roll partition 0 back to an older checkpoint
    _delete(
        chdb_client,
        f"DELETE FROM {db}.lineage_entries WHERE source_partition = 0 AND log_index >= {keep}",
    )
    _delete(chdb_client, f"DELETE FROM {db}.checkpoints WHERE partition = 0 AND tree_size > {keep}")
    report = _store_check(chdb_client, db, data, notes, _policy(wit))
    f = report.failure
    assert f is not None and f.kind is FailureKind.LOG_ROLLED_BACK and report.exit_code == 1
    assert f.where == {"partition": 0, "origin": cps[-1].origin, "tree_size": cps[-1].tree_size}
    assert (f.expected, f.found) == (f"at least {cps[-1].tree_size} entries", f"{keep} entries")


def test_deleting_a_whole_partition_is_detected(
    tmp_path: Path, chdb_client: Any, db: str, data: Dataset
) -> None:
    wit, notes = _trusted(tmp_path, data)
    _delete(chdb_client, f"DELETE FROM {db}.lineage_entries WHERE source_partition = 1")
    _delete(chdb_client, f"DELETE FROM {db}.checkpoints WHERE partition = 1")
    report = _store_check(chdb_client, db, data, notes, _policy(wit))
    f = report.failure
    assert f is not None and f.kind is FailureKind.LOG_MISSING
    assert f.where["partition"] == 1 and f.found == "no entries"


def test_deleting_everything_is_detected(
    tmp_path: Path, chdb_client: Any, db: str, data: Dataset
) -> None:
    wit, notes = _trusted(tmp_path, data)
    _delete(chdb_client, f"DELETE FROM {db}.lineage_entries WHERE 1")
    _delete(chdb_client, f"DELETE FROM {db}.checkpoints WHERE 1")
    report = _store_check(chdb_client, db, data, notes, _policy(wit))
    f = report.failure
    assert f is not None and f.kind is FailureKind.LOG_MISSING
    assert f.where == {"logs": data.partitions}
    assert "none of the logs" in f.message


def test_store_inconsistent_with_a_trusted_checkpoint(
    tmp_path: Path, chdb_client: Any, db: str, data: Dataset
) -> None:
    """The auditor holds a checkpoint of another history at a size the store has: a fork."""
    cp = data.partition_checkpoints(0)[-1]
    forked = sign_checkpoint(data.processor, cp.origin, cp.tree_size, bytes(32))
    report = _store_check(chdb_client, db, data, [forked], None)
    f = report.failure
    assert f is not None and f.kind is FailureKind.TRUSTED_CHECKPOINT_MISMATCH
    assert (f.expected, f.found) == (bytes(32).hex(), cp.root_hash.hex())


def test_trusted_checkpoint_must_be_signed_and_cosigned(
    tmp_path: Path, chdb_client: Any, db: str, data: Dataset
) -> None:
    _, notes = _trusted(tmp_path, data)
    other = _witness(tmp_path, data, "witness.test/other")
    report = _store_check(chdb_client, db, data, notes, _policy(other))
    assert report.failure is not None
    assert report.failure.kind is FailureKind.WITNESS_COSIGNATURES
    stranger = build_dataset(workflows=1, partitions=1)
    foreign = stranger.checkpoints[-1].note
    report = _store_check(chdb_client, db, data, [foreign], None)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.CHECKPOINT_SIGNATURE


def test_attach_prefers_the_newest_witnessed_checkpoint(data: Dataset) -> None:
    cps = data.partition_checkpoints(0)
    witnessed = cps[-2]
    line = "— witness.test/w1 AAAA\n"
    cosigs = [StoredCosignature(0, witnessed.tree_size, witnessed.root_hash, line)]
    out = attach_cosignatures(cps, cosigs, {0: witnessed.tree_size - 1})
    assert [c.tree_size for c in out] == [c.tree_size for c in cps[:-1]]
    assert out[-1].note == witnessed.note + line
    # The workflow's last entry is past the witnessed size: keep the newer checkpoint.
    out = attach_cosignatures(cps, cosigs, {0: witnessed.tree_size})
    assert [c.tree_size for c in out] == [c.tree_size for c in cps]
    assert all(isinstance(c, Checkpoint) for c in out)


def test_key_windows_for_retired_revoked_and_compromised_keys(data: Dataset) -> None:
    from lineage.witnessed import key_window

    processor = next(r for r in data.registry.records() if r.role is Role.PROCESSOR)
    assert key_window(processor) == (processor.not_before_us, None)
    retired = replace(processor, not_after_us=5_000_000)
    assert key_window(retired) == (processor.not_before_us, 5_000_000)
    revoked = replace(processor, revoked_at_us=9_000_000, revocation_reason="lost")
    assert key_window(revoked) is None  # revoked without a compromise time: vouches for nothing
    compromised = replace(revoked, compromised_at_us=7_000_000)
    assert key_window(compromised) == (processor.not_before_us, 6_999_999)
