"""Migrations, row builders and redelivery behaviour of the ClickHouse tables, on chDB."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from lineage import codec, hashing
from lineage.errors import ConfigError, DecodeError, IntegrityError
from lineage.model import (
    Authorization,
    ChainEntry,
    Checkpoint,
    Decision,
    EventKind,
    ExecutionEvent,
    QuarantineRecord,
    Runtime,
    Severity,
    Violation,
    ViolationType,
)
from sinks import rows, schema

T0 = 1_750_000_000_123_456  # µs, with a fractional second to check precision
POLICY = hashing.policy_digest_of(b"policy")
ENCODER = codec.load("execution_event")


def _entries(workflow_id: str = "wf-1", count: int = 4) -> list[ChainEntry]:
    events = [
        ExecutionEvent(
            event_id=f"{workflow_id}-e{n}",
            workflow_id=workflow_id,
            kind=EventKind.AUTHORIZATION_DECISION if n == 1 else EventKind.EXECUTION_STARTED,
            event_time=T0 + n,
            principal="alice",
            action="tool.call:search",
            emitter_id="emitter-1",
            emitter_seq=n,
            topic="lineage.events",
            partition=2,
            parent_event_id=f"{workflow_id}-e{n - 1}" if n else None,
            agent_id="agent-7",
            resource="crm",
            authorization_id=f"{workflow_id}-e1" if n > 1 else None,
            authorization=(
                Authorization(
                    decision=Decision.ALLOW,
                    policy_id="p-1",
                    policy_digest="sha256:" + "cd" * 32,
                    determining_policies=("permit", "scope"),
                    input_digest="sha256:" + "00" * 32,
                    expires_at=T0 + 3_600_000_000,
                    authorized_action="tool.call:search",
                )
                if n == 1
                else None
            ),
            runtime=Runtime(host="host-1", attestation_type="tpm", measurement="m1"),
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            span_id="00f067aa0ba902b7",
            attributes={"tenant": "acme", "n": str(n)},
        )
        for n in range(count)
    ]
    entries = []
    prev = hashing.genesis_hash(workflow_id)
    for seq, event in enumerate(events):
        data = ENCODER.encode(event.to_record())
        digest = hashing.event_digest(data)
        entry_hash = hashing.entry_hash(prev, digest, seq, POLICY)
        entries.append(
            ChainEntry(
                workflow_id=workflow_id,
                chain_seq=seq,
                event_id=event.event_id,
                event_digest=digest,
                prev_hash=prev,
                entry_hash=entry_hash,
                policy_digest=POLICY,
                event_bytes=data,
                source_partition=2,
                source_offset=1000 + seq,
                log_index=500 + seq,
                seal_bytes=b"\x00seal\xff",
                seal_index=seq,
                seal_path=(hashing.sha256(b"a"), hashing.sha256(b"b")),
                flags=("CONTAINED",) if seq == count - 1 else (),
            )
        )
        prev = entry_hash
    return entries


def _violation(n: int) -> Violation:
    return Violation(
        violation_id=f"v-{n}",
        violation_type=ViolationType.UNAUTHORIZED_EXECUTION,
        rule="require-allow",
        severity=Severity.HIGH,
        workflow_id="wf-1",
        policy_digest=POLICY.hex(),
        explanation="no ALLOW",
        source_partition=2,
        source_offset=70 + n,
        event_time=T0 + n,
        event_id="wf-1-e0",
    )


@pytest.fixture
def db(chdb_client: Any, ch_database: str) -> Iterator[Any]:
    """The session client, switched to a freshly migrated database."""
    schema.migrate(chdb_client, ch_database)
    previous = chdb_client.database
    chdb_client.database = ch_database
    yield chdb_client
    chdb_client.database = previous or "default"


def _insert_entries(client: Any, entries: list[ChainEntry]) -> None:
    client.insert(
        "lineage_entries", [rows.entry_row(e) for e in entries], column_names=rows.ENTRY_COLUMNS
    )


def _count(client: Any, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def test_migrate_twice_is_a_no_op_and_records_versions(chdb_client: Any, ch_database: str) -> None:
    name = f"{ch_database}_m"  # migrate creates the database itself
    try:
        assert schema.migrate(chdb_client, name) == len(schema.MIGRATIONS)
        tables = chdb_client.query(
            "SELECT name, engine FROM system.tables WHERE database = {db:String}",
            parameters={"db": name},
        ).result_rows
        assert schema.migrate(chdb_client, name) == 0
        assert (
            chdb_client.query(
                "SELECT name, engine FROM system.tables WHERE database = {db:String}",
                parameters={"db": name},
            ).result_rows
            == tables
        )
        versions = chdb_client.query(
            f"SELECT version, description FROM {name}.schema_version ORDER BY version"
        ).result_rows
        assert versions == [(m.version, m.description) for m in schema.MIGRATIONS]
        assert schema.current_version(chdb_client, name) == schema.LATEST_VERSION
        engines = dict(tables)
        for table in ("lineage_entries", "violations", "checkpoints", "quarantine"):
            assert engines[table] == "ReplacingMergeTree"
        for view in ("workflow_summary", "violations_hourly", "agent_actions_daily"):
            assert engines[view] == "View"
    finally:
        chdb_client.command(f"DROP DATABASE IF EXISTS {name}")


def test_migration_versions_are_unique_and_ascending() -> None:
    versions = [m.version for m in schema.MIGRATIONS]
    assert versions == sorted(set(versions)), versions
    assert max(versions) == schema.LATEST_VERSION


def test_migrate_applies_only_pending_versions(chdb_client: Any, ch_database: str) -> None:
    schema.migrate(chdb_client, ch_database)
    chdb_client.command(f"DELETE FROM {ch_database}.schema_version WHERE version >= 2")
    assert schema.current_version(chdb_client, ch_database) == 1
    pending = len(schema.MIGRATIONS) - 1
    assert schema.migrate(chdb_client, ch_database) == pending  # statements are IF NOT EXISTS
    assert schema.current_version(chdb_client, ch_database) == schema.LATEST_VERSION


def test_lineage_entries_columns_match_the_row_builder(db: Any) -> None:
    described = [r[0] for r in db.query("DESCRIBE TABLE lineage_entries").result_rows]
    assert tuple(described) == rows.ENTRY_COLUMNS
    for table, columns in (
        ("violations", rows.VIOLATION_COLUMNS),
        ("checkpoints", rows.CHECKPOINT_COLUMNS),
        ("quarantine", rows.QUARANTINE_COLUMNS),
    ):
        assert tuple(r[0] for r in db.query(f"DESCRIBE TABLE {table}").result_rows) == columns


def test_migrate_rejects_a_database_name_that_is_not_an_identifier(chdb_client: Any) -> None:
    with pytest.raises(ConfigError, match="expected a name matching"):
        schema.migrate(chdb_client, "x; DROP DATABASE default")


def test_entry_row_round_trips_exact_bytes_and_decoded_columns(db: Any) -> None:
    entries = _entries()
    _insert_entries(db, entries)
    got = db.query(
        "SELECT event_bytes, entry_hash, seal_path, event_time, kind, decision, auth_policy_digest, "
        "determining_policies, toUnixTimestamp64Micro(expires_at), host, attestation_type, "
        "parent_event_id, verification, "
        "attributes, toUnixTimestamp64Micro(event_time), source_partition, log_index "
        "FROM lineage_entries FINAL ORDER BY chain_seq",
        column_formats={"event_bytes": "bytes"},
    ).result_rows
    assert [r[0] for r in got] == [e.event_bytes for e in entries]
    assert [r[1] for r in got] == [e.entry_hash for e in entries]
    assert got[0][2] == list(entries[0].seal_path)
    assert [r[14] for r in got] == [T0 + n for n in range(4)]
    assert got[1][4:9] == (
        "AUTHORIZATION_DECISION",
        "ALLOW",
        "sha256:" + "cd" * 32,
        ["permit", "scope"],
        T0 + 3_600_000_000,
    )
    assert (got[0][5], got[0][8]) == ("", None)
    assert (got[0][9], got[0][10], got[0][11]) == ("host-1", "tpm", "")
    assert got[1][11] == "wf-1-e0"
    assert [r[12] for r in got] == ["VERIFIED", "VERIFIED", "VERIFIED", "CONTAINED"]
    assert got[0][13] == {"tenant": "acme", "n": "0"}
    assert (got[0][15], got[0][16]) == (2, 500)


def test_entry_row_rejects_bytes_that_are_not_the_entry_event() -> None:
    entry = _entries(count=1)[0]
    with pytest.raises(
        IntegrityError, match="expected event wf-1-e0 of wf-1, found wf-2-e0 of wf-2"
    ):
        rows.entry_row(replace(entry, event_bytes=_entries("wf-2", 1)[0].event_bytes))
    seal_header = codec.load("seal").header
    with pytest.raises(DecodeError, match="expected an ExecutionEvent header"):
        rows.entry_row(replace(entry, event_bytes=seal_header + entry.event_bytes[10:]))
    with pytest.raises(DecodeError) as truncated:
        rows.entry_row(replace(entry, event_bytes=entry.event_bytes[:-3]))
    assert truncated.value.code == "TRUNCATED_AVRO"
    with pytest.raises(DecodeError) as trailing:
        rows.entry_row(replace(entry, event_bytes=entry.event_bytes + b"\x00"))
    assert trailing.value.code == "TRAILING_BYTES"


def test_the_same_batch_twice_counts_once(db: Any) -> None:
    batch = _entries()
    _insert_entries(db, batch)
    _insert_entries(db, batch)  # identical block: dropped by insert deduplication
    assert _count(db, "SELECT count() FROM lineage_entries") == len(batch)
    assert _count(db, "SELECT count() FROM lineage_entries FINAL") == len(batch)


def test_redelivery_in_different_batches_counts_once_with_final(db: Any) -> None:
    batch = _entries()
    _insert_entries(db, batch[:2])
    _insert_entries(db, batch[1:])  # a replay with other batch boundaries
    _insert_entries(db, list(reversed(batch)))
    assert _count(db, "SELECT count() FROM lineage_entries") == 2 + 3 + 4  # before merges
    assert _count(db, "SELECT count() FROM lineage_entries FINAL") == len(batch)
    assert _count(db, "SELECT sum(count) FROM agent_actions_daily") == 3  # EXECUTION_STARTED
    assert _count(db, "SELECT sum(events) FROM agent_actions_daily") == len(batch)
    summary = db.query(
        "SELECT events, actors, systems, violations, verified FROM workflow_summary"
    ).result_rows
    assert summary == [(4, ["alice", "agent-7"], ["crm"], 0, 0)]  # one entry CONTAINED
    db.command("OPTIMIZE TABLE lineage_entries FINAL")
    assert _count(db, "SELECT count() FROM lineage_entries") == len(batch)


def test_insert_deduplication_token_drops_a_retried_batch(db: Any) -> None:
    batch = _entries()
    token = {"insert_deduplication_token": "lineage.chain/2/1000-1003"}
    db.insert(
        "lineage_entries",
        [rows.entry_row(e) for e in batch],
        column_names=rows.ENTRY_COLUMNS,
        settings=token,
    )
    db.insert(
        "lineage_entries",
        [rows.entry_row(e) for e in reversed(batch)],  # other block bytes, same token
        column_names=rows.ENTRY_COLUMNS,
        settings=token,
    )
    assert _count(db, "SELECT count() FROM lineage_entries") == len(batch)


def test_redelivered_violations_count_once_in_rollups_and_summary(db: Any) -> None:
    _insert_entries(db, _entries())
    first = [rows.violation_row(_violation(n)) for n in (1, 2)]
    again = [rows.violation_row(_violation(n)) for n in (2, 1, 3)]
    db.insert("violations", first, column_names=rows.VIOLATION_COLUMNS)
    db.insert("violations", again, column_names=rows.VIOLATION_COLUMNS)
    assert _count(db, "SELECT count() FROM violations") == 5
    assert _count(db, "SELECT count() FROM violations FINAL") == 3
    hourly = db.query("SELECT violation_type, count FROM violations_hourly").result_rows
    assert hourly == [("UNAUTHORIZED_EXECUTION", 3)]
    assert db.query("SELECT violations, verified FROM workflow_summary").result_rows == [(3, 0)]


def test_checkpoint_and_quarantine_rows_insert_and_replace(db: Any) -> None:
    cp = Checkpoint("origin", 2, 10, hashing.sha256(b"root"), "note", "k1", 99)
    q = QuarantineRecord(
        "BAD_UTF8", "string is not UTF-8", b"\xc3\x01\xff", "lineage.events", 1, 5, None
    )
    for _ in range(2):
        db.insert("checkpoints", [rows.checkpoint_row(cp)], column_names=rows.CHECKPOINT_COLUMNS)
        db.insert("quarantine", [rows.quarantine_row(q)], column_names=rows.QUARANTINE_COLUMNS)
    assert db.query("SELECT tree_size, root_hash FROM checkpoints FINAL").result_rows == [
        (10, cp.root_hash)
    ]
    got = db.query(
        "SELECT raw_key, raw_value FROM quarantine FINAL", column_formats={"raw_value": "bytes"}
    ).result_rows
    assert got == [(None, q.raw_value)]


def test_events_quarantined_from_one_batch_record_keep_a_row_each(db: Any) -> None:
    """One sealed-batch record, one offset, two bad events: two rows; a replay adds none."""
    bad = [
        QuarantineRecord("TRUNCATED_AVRO", "cut", raw, "lineage.events", 0, 7, b"batch:svc#1")
        for raw in (b"\xc3\x01first", b"\xc3\x01second")
    ]
    for _ in range(2):
        db.insert(
            "quarantine",
            [rows.quarantine_row(q) for q in bad],
            column_names=rows.QUARANTINE_COLUMNS,
        )
    db.command("OPTIMIZE TABLE quarantine FINAL")
    got = db.query(
        "SELECT raw_value FROM quarantine ORDER BY raw_value", column_formats={"raw_value": "bytes"}
    ).result_rows
    assert got == [(b"\xc3\x01first",), (b"\xc3\x01second",)]
