"""Verification of the ClickHouse tables on chDB: clean tables verify; edits, deletes, inserts fail."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest

from lineage import codec, hashing
from lineage.keys import Role, Signer
from lineage.model import ChainEntry
from lineage.verify import FailureKind, Report, verify_bundle
from lineage_cli.evidence import DERIVED_COLUMNS, expected_columns, export_bundle, verify_clickhouse
from sinks import rows, schema
from tests.support.lineage_builder import Dataset, build_dataset, decode_event, make_seal

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset()


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


def _verify(client: Any, db: str, data: Dataset, workflow_id: str | None = None) -> Report:
    return verify_clickhouse(client, db, registry=data.registry, workflow_id=workflow_id)


def _mutate(client: Any, sql: str) -> None:
    client.command(f"{sql} SETTINGS mutations_sync = 1")


def _where(e: ChainEntry) -> dict[str, Any]:
    return {
        "partition": e.source_partition,
        "log_index": e.log_index,
        "workflow_id": e.workflow_id,
        "chain_seq": e.chain_seq,
        "event_id": e.event_id,
    }


def _pick(data: Dataset) -> ChainEntry:
    """A runtime event in the middle of a workflow and of its partition log."""
    wf = data.workflows[1]
    return data.workflow_entries(wf)[3]


def test_clean_tables_verify(chdb_client: Any, db: str, data: Dataset) -> None:
    report = _verify(chdb_client, db, data)
    assert report.failure is None and report.exit_code == 0
    p = report.proven
    assert p.events == p.log_entries == len(data.entries)
    assert p.workflows == p.completed_workflows == set(data.workflows)
    assert len(p.checkpoints) == len(data.checkpoints)
    assert p.unanchored == 0
    assert report.entries_per_s > 0


def test_one_workflow_verifies_with_its_partition_log(
    chdb_client: Any, db: str, data: Dataset
) -> None:
    wf = data.workflows[2]
    chain = data.workflow_entries(wf)
    report = _verify(chdb_client, db, data, wf)
    assert report.ok, report.failure
    assert report.proven.events == len(chain)
    assert report.proven.workflows == {wf}
    assert report.proven.log_entries == len(data.partition_entries(chain[0].source_partition))


def test_export_from_clickhouse_is_the_same_bundle(
    chdb_client: Any, db: str, data: Dataset
) -> None:
    wf = data.workflows[3]
    bundle = export_bundle(chdb_client, db, wf, data.registry, policy_sets=[data.policy_files])
    assert bundle == data.bundle(wf)
    assert verify_bundle(bundle, registry=data.registry).ok


def test_column_mapping_matches_the_sink(data: Dataset) -> None:
    index = {c: i for i, c in enumerate(rows.ENTRY_COLUMNS)}
    for e in data.entries:
        row = rows.entry_row(e)
        record = codec.load("execution_event").decode_body(e.event_bytes)
        assert expected_columns(record) == tuple(row[index[c]] for c in DERIVED_COLUMNS)


def test_event_bytes_updated(chdb_client: Any, db: str, data: Dataset) -> None:
    e = _pick(data)
    tampered = e.event_bytes.replace(b"user:", b"user_", 1)
    _mutate(
        chdb_client,
        f"ALTER TABLE {db}.lineage_entries UPDATE event_bytes = "
        f"replaceOne(event_bytes, 'user:', 'user_') WHERE workflow_id = '{e.workflow_id}' "
        f"AND chain_seq = {e.chain_seq}",
    )
    f = _verify(chdb_client, db, data).failure
    assert f is not None
    assert f.kind is FailureKind.EVENT_DIGEST_MISMATCH
    assert f.where == _where(e)
    assert f.expected == e.event_digest.hex()
    assert f.found == hashlib.sha256(b"\x10" + tampered).hexdigest()


@pytest.mark.parametrize(
    ("column", "value", "found"),
    [
        ("resource", "'prod-db:payroll/salaries'", "prod-db:payroll/salaries"),
        ("principal", "'user:mallory'", "user:mallory"),
        ("emitter_seq", "999", "999"),
        ("attributes", "map('approved', 'yes')", "{'approved': 'yes'}"),
    ],
)
def test_derived_column_updated(
    chdb_client: Any, db: str, data: Dataset, column: str, value: str, found: str
) -> None:
    e = _pick(data)
    _mutate(
        chdb_client,
        f"ALTER TABLE {db}.lineage_entries UPDATE {column} = {value} "
        f"WHERE workflow_id = '{e.workflow_id}' AND chain_seq = {e.chain_seq}",
    )
    f = _verify(chdb_client, db, data).failure
    assert f is not None
    assert f.kind is FailureKind.COLUMN_MISMATCH
    assert f.where == {**_where(e), "column": column}
    event = decode_event(e.event_bytes)
    expected = {
        "resource": event.resource,
        "principal": event.principal,
        "emitter_seq": str(event.emitter_seq),
        "attributes": str(event.attributes),
    }[column]
    assert (f.expected, f.found) == (expected, found)


def test_entry_hash_updated(chdb_client: Any, db: str, data: Dataset) -> None:
    e = _pick(data)
    _mutate(
        chdb_client,
        f"ALTER TABLE {db}.lineage_entries UPDATE entry_hash = "
        f"unhex('{'00' * 32}') WHERE workflow_id = '{e.workflow_id}' "
        f"AND chain_seq = {e.chain_seq}",
    )
    f = _verify(chdb_client, db, data).failure
    assert f is not None
    assert f.kind is FailureKind.ENTRY_HASH_MISMATCH
    assert f.where == _where(e)
    assert (f.expected, f.found) == (e.entry_hash.hex(), "00" * 32)


def test_deleted_row(chdb_client: Any, db: str, data: Dataset) -> None:
    e = _pick(data)
    _mutate(
        chdb_client,
        f"ALTER TABLE {db}.lineage_entries DELETE "
        f"WHERE workflow_id = '{e.workflow_id}' AND chain_seq = {e.chain_seq}",
    )
    f = _verify(chdb_client, db, data).failure
    assert f is not None
    assert f.kind is FailureKind.LOG_INDEX
    after = data.partition_entries(e.source_partition)[e.log_index + 1]
    assert f.where == _where(after)
    p = e.source_partition
    assert (f.expected, f.found) == (
        f"partition {p} log index {e.log_index}",
        f"partition {p} log index {after.log_index}",
    )


def test_deleted_last_row_of_a_partition(chdb_client: Any, db: str, data: Dataset) -> None:
    last = data.partition_entries(0)[-1]
    _mutate(
        chdb_client,
        f"ALTER TABLE {db}.lineage_entries DELETE "
        f"WHERE workflow_id = '{last.workflow_id}' AND chain_seq = {last.chain_seq}",
    )
    f = _verify(chdb_client, db, data, last.workflow_id).failure
    assert f is not None
    assert f.kind is FailureKind.LOG_TRUNCATED
    newest = data.partition_checkpoints(0)[-1]
    assert f.where == {"partition": 0, "origin": newest.origin, "tree_size": newest.tree_size}
    assert (f.expected, f.found) == (
        f"at least {newest.tree_size} entries",
        f"{newest.tree_size - 1} entries",
    )


def test_deleted_workflow_is_not_silently_absent(chdb_client: Any, db: str, data: Dataset) -> None:
    wf = data.workflows[0]
    _mutate(chdb_client, f"ALTER TABLE {db}.lineage_entries DELETE WHERE workflow_id = '{wf}'")
    report = _verify(chdb_client, db, data, wf)
    assert report.failure is not None
    assert report.failure.kind in (FailureKind.LOG_INDEX, FailureKind.LOG_TRUNCATED)
    assert report.exit_code == 1


def _forged_row(data: Dataset, after: ChainEntry, log_index: int) -> ChainEntry:
    """An event appended to ``after``'s chain, correctly linked, sealed by an unregistered key."""
    event = decode_event(after.event_bytes)
    forger, _ = Signer.generate_ephemeral(event.emitter_id.split("#")[0], Role.EMITTER)
    forged = replace(
        event,
        event_id="01959999-0000-7000-8000-0000000000ff",
        emitter_seq=event.emitter_seq + 1000,
        principal="user:mallory",
    )
    data_bytes = codec.load("execution_event").encode(forged.to_record())
    digest = hashing.event_digest(data_bytes)
    seal = make_seal(
        forger, event.emitter_id, event.partition, forged.emitter_seq, [digest], hashing.ZERO_HASH
    )
    seq = after.chain_seq + 1
    return replace(
        after,
        chain_seq=seq,
        event_id=forged.event_id,
        event_digest=digest,
        prev_hash=after.entry_hash,
        entry_hash=hashing.entry_hash(after.entry_hash, digest, seq, after.policy_digest),
        event_bytes=data_bytes,
        log_index=log_index,
        seal_bytes=seal,
        seal_index=0,
        seal_path=(),
    )


def test_inserted_row_after_the_log(chdb_client: Any, db: str, data: Dataset) -> None:
    last = data.workflow_entries(data.workflows[0])[-1]
    size = len(data.partition_entries(last.source_partition))
    forged = _forged_row(data, last, size)
    chdb_client.insert(
        "lineage_entries",
        [rows.entry_row(forged)],
        column_names=list(rows.ENTRY_COLUMNS),
        database=db,
    )
    f = _verify(chdb_client, db, data).failure
    assert f is not None
    assert f.kind is FailureKind.UNKNOWN_KEY
    assert f.where == _where(forged)
    assert f.expected == "a key in the registry"


def test_inserted_row_inside_the_log(chdb_client: Any, db: str, data: Dataset) -> None:
    last = data.workflow_entries(data.workflows[0])[-1]
    forged = _forged_row(data, last, 1)
    chdb_client.insert(
        "lineage_entries",
        [rows.entry_row(forged)],
        column_names=list(rows.ENTRY_COLUMNS),
        database=db,
    )
    f = _verify(chdb_client, db, data).failure
    assert f is not None
    assert f.kind is FailureKind.LOG_INDEX
    assert f.where == {"partition": last.source_partition, "log_index": 1}
    assert (f.expected, f.found) == ("one entry at log index 1", "two or more")


def test_checkpoint_row_updated(chdb_client: Any, db: str, data: Dataset) -> None:
    cp = data.partition_checkpoints(1)[1]
    _mutate(
        chdb_client,
        f"ALTER TABLE {db}.checkpoints UPDATE root_hash = unhex('{'ab' * 32}') "
        f"WHERE partition = 1 AND tree_size = {cp.tree_size}",
    )
    f = _verify(chdb_client, db, data).failure
    assert f is not None
    assert f.kind is FailureKind.CHECKPOINT_ROW_MISMATCH
    assert f.where == {"partition": 1, "origin": cp.origin, "tree_size": cp.tree_size}
    assert f.expected.endswith(f"root {cp.root_hash.hex()}")
    assert f.found.endswith(f"root {'ab' * 32}")


def test_unknown_workflow_is_unusable_input(chdb_client: Any, db: str, data: Dataset) -> None:
    report = _verify(chdb_client, db, data, "no-such-workflow")
    assert report.failure is not None
    assert report.failure.kind is FailureKind.UNUSABLE_INPUT
    assert report.exit_code == 2


def test_operator_registry_is_not_independent(chdb_client: Any, db: str, data: Dataset) -> None:
    """Class 1: the store's own registry gives CONSISTENT_BUT_UNTRUSTED, never VERIFIED."""
    report = verify_clickhouse(
        chdb_client,
        db,
        registry=data.registry,
        registry_source="operator's own registry (not independent) keys/registry.json",
        independent=False,
    )
    assert report.consistent and not report.ok
    assert (report.verdict.value, report.exit_code) == ("CONSISTENT_BUT_UNTRUSTED", 3)
    assert report.trust.seal_keys.startswith("operator's own registry (not independent)")
    assert any("operator controls" in g for g in report.not_proven)


def test_cli_clickhouse_says_where_its_keys_came_from(
    chdb_client: Any, db: str, data: Dataset, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from lineage_cli import evidence
    from lineage_cli.main import app

    data.registry.save(tmp_path / "keys" / "registry.json")
    auditor = tmp_path / "auditor.json"
    data.registry.save(auditor)
    for name in ("LINEAGE_TRUST_FILE", "LINEAGE_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LINEAGE_CLICKHOUSE_DATABASE", db)
    monkeypatch.setattr(evidence, "_client", lambda settings: chdb_client)
    base = ["verify", "--clickhouse", "--data-dir", str(tmp_path), "--json"]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 3, result.output
    out = json.loads(result.output)
    assert out["trust"]["seal_keys"] == (
        f"operator's own registry (not independent) {tmp_path / 'keys' / 'registry.json'}"
    )
    # what holds under the operator's registry is consistent, never proven
    assert out["claims"] == []
    assert out["consistent_claims"][0].startswith(
        f"{len(data.entries)} stored entries rebuild every signed checkpoint root"
    )
    human = CliRunner(env={"COLUMNS": "200"}).invoke(app, base[:-1])
    assert human.exit_code == 3, human.output
    lines = human.output.splitlines()
    heading = lines.index("consistent under the operator's own registry (not trusted):")
    assert lines[heading + 1] == f"  {out['consistent_claims'][0]}"
    assert not [line for line in lines if line.startswith("proven:")], human.output
    result = CliRunner().invoke(app, [*base, "--registry", str(auditor)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["trust"]["seal_keys"] == f"auditor registry {auditor}"
    assert out["claims"][0].startswith(f"{len(data.entries)} stored entries rebuild")
    assert out["consistent_claims"] == []
    monkeypatch.setenv("LINEAGE_TRUST_FILE", str(auditor))
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 0, result.output


def test_stored_decision_by_a_non_authorizer_is_listed_not_proven(
    chdb_client: Any, db: str, data: Dataset
) -> None:
    """Class 7 in the store: the log stays intact, the decisions are named as not authorizations."""
    from lineage.keys import KeyRegistry

    registry_doc = data.registry.to_json()
    gate = data.signers["policy-gate#g1"].key_id
    for key in registry_doc["keys"]:
        if key["key_id"] == gate:
            key["role"] = "emitter"
    report = verify_clickhouse(chdb_client, db, registry=KeyRegistry.from_json(registry_doc))
    assert report.failure is None
    listed = [g for g in report.not_proven if "not an authorizer" in g]
    assert len(listed) == len(data.workflows) * 2
