"""Versioned, idempotent ClickHouse migrations for the lineage tables and views."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from lineage.errors import ConfigError


class Client(Protocol):
    """The part of a clickhouse-connect client the migrations use."""

    def command(self, cmd: str, parameters: Any = None, settings: Any = None) -> Any:
        """Run a statement that returns no rows."""

    def query(self, query: str, parameters: Any = None, settings: Any = None) -> Any:
        """Run a query; the result has ``result_rows``."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema step; ``{db}`` in a statement is the quoted database name."""

    version: int
    description: str
    statements: tuple[str, ...]


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Every statement is idempotent on its own (IF NOT EXISTS), so a migration interrupted halfway
# is simply applied again; the version row is written only after all its statements ran.
# Tables keep no version column: a redelivered row is byte-identical to the one it replaces.
_BASE_TABLES = Migration(
    1,
    "lineage_entries, violations, checkpoints, quarantine (ReplacingMergeTree)",
    (
        """
        CREATE TABLE IF NOT EXISTS {db}.lineage_entries
        (
            workflow_id String,
            chain_seq UInt64,
            event_id String,
            entry_hash FixedString(32),
            prev_hash FixedString(32),
            event_digest FixedString(32),
            policy_digest FixedString(32),
            event_bytes String CODEC(ZSTD(3)),
            kind LowCardinality(String),
            event_time DateTime64(6, 'UTC'),
            principal LowCardinality(String),
            agent_id LowCardinality(String),
            model_id LowCardinality(String),
            model_version LowCardinality(String),
            action LowCardinality(String),
            resource LowCardinality(String),
            authorization_id String,
            decision LowCardinality(String),
            auth_policy_id LowCardinality(String),
            auth_policy_digest LowCardinality(String),
            determining_policies Array(String),
            expires_at Nullable(DateTime64(6, 'UTC')),
            attestation_type LowCardinality(String),
            measurement String,
            host LowCardinality(String),
            image_digest String,
            parent_event_id String,
            parent_workflow_id String,
            trace_id String,
            span_id String,
            emitter_id LowCardinality(String),
            emitter_seq UInt64,
            source_partition UInt16,
            source_offset UInt64,
            log_index UInt64,
            seal_bytes String CODEC(ZSTD(3)),
            seal_index UInt32,
            seal_path Array(FixedString(32)),
            flags Array(LowCardinality(String)),
            verification LowCardinality(String),
            attributes Map(String, String),
            INDEX idx_event_id event_id TYPE bloom_filter(0.01) GRANULARITY 1,
            INDEX idx_parent_event_id parent_event_id TYPE bloom_filter(0.01) GRANULARITY 1,
            INDEX idx_authorization_id authorization_id TYPE bloom_filter(0.01) GRANULARITY 1,
            INDEX idx_agent_id agent_id TYPE bloom_filter(0.01) GRANULARITY 4,
            INDEX idx_event_time event_time TYPE minmax GRANULARITY 1
        )
        ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(event_time)
        ORDER BY (workflow_id, chain_seq)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        """
        CREATE TABLE IF NOT EXISTS {db}.violations
        (
            violation_id String,
            violation_type LowCardinality(String),
            rule LowCardinality(String),
            severity LowCardinality(String),
            workflow_id String,
            event_id String,
            related_event_ids Array(String),
            policy_digest LowCardinality(String),
            explanation String,
            source_partition UInt16,
            source_offset UInt64,
            event_time DateTime64(6, 'UTC'),
            INDEX idx_workflow_id workflow_id TYPE bloom_filter(0.01) GRANULARITY 1
        )
        ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(event_time)
        ORDER BY (violation_type, workflow_id, violation_id)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        """
        CREATE TABLE IF NOT EXISTS {db}.checkpoints
        (
            origin LowCardinality(String),
            partition UInt16,
            tree_size UInt64,
            root_hash FixedString(32),
            note String,
            key_name LowCardinality(String),
            source_offset UInt64
        )
        ENGINE = ReplacingMergeTree
        ORDER BY (origin, partition, tree_size)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        """
        CREATE TABLE IF NOT EXISTS {db}.quarantine
        (
            reason_code LowCardinality(String),
            reason String,
            raw_key Nullable(String),
            raw_value String CODEC(ZSTD(3)),
            source_topic LowCardinality(String),
            source_partition UInt16,
            source_offset UInt64
        )
        ENGINE = ReplacingMergeTree
        ORDER BY (source_topic, source_partition, source_offset)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
    ),
)

# Rollups are fed by materialized views but store uniqExact *sets* of row keys, not counters:
# a redelivered row adds a key already in the set, so re-inserts never double-count.
_VIEWS = Migration(
    2,
    "workflow_summary view; idempotent violations_hourly and agent_actions_daily rollups",
    (
        """
        CREATE TABLE IF NOT EXISTS {db}.violations_hourly_agg
        (
            violation_type LowCardinality(String),
            hour DateTime('UTC'),
            ids AggregateFunction(uniqExact, String)
        )
        ENGINE = AggregatingMergeTree
        PARTITION BY toYYYYMM(hour)
        ORDER BY (violation_type, hour)
        """,
        """
        CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.violations_hourly_mv
        TO {db}.violations_hourly_agg
        AS SELECT
            violation_type,
            toStartOfHour(event_time, 'UTC') AS hour,
            uniqExactState(violation_id) AS ids
        FROM {db}.violations
        GROUP BY violation_type, hour
        """,
        """
        CREATE VIEW IF NOT EXISTS {db}.violations_hourly
        AS SELECT violation_type, hour, uniqExactMerge(ids) AS count
        FROM {db}.violations_hourly_agg
        GROUP BY violation_type, hour
        """,
        """
        CREATE TABLE IF NOT EXISTS {db}.agent_actions_daily_agg
        (
            agent_id LowCardinality(String),
            day Date,
            action LowCardinality(String),
            executions AggregateFunction(uniqExact, String, UInt64),
            events AggregateFunction(uniqExact, String, UInt64)
        )
        ENGINE = AggregatingMergeTree
        PARTITION BY toYYYYMM(day)
        ORDER BY (day, agent_id, action)
        """,
        """
        CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.agent_actions_daily_mv
        TO {db}.agent_actions_daily_agg
        AS SELECT
            agent_id,
            toDate(event_time, 'UTC') AS day,
            action,
            uniqExactStateIf(workflow_id, chain_seq, kind = 'EXECUTION_STARTED') AS executions,
            uniqExactState(workflow_id, chain_seq) AS events
        FROM {db}.lineage_entries
        WHERE agent_id != ''
        GROUP BY agent_id, day, action
        """,
        """
        CREATE VIEW IF NOT EXISTS {db}.agent_actions_daily
        AS SELECT
            agent_id,
            day,
            action,
            uniqExactMerge(executions) AS count,
            uniqExactMerge(events) AS events
        FROM {db}.agent_actions_daily_agg
        GROUP BY agent_id, day, action
        """,
        """
        CREATE VIEW IF NOT EXISTS {db}.workflow_summary
        AS SELECT
            e.workflow_id AS workflow_id,
            e.started_at AS started_at,
            e.ended_at AS ended_at,
            e.events AS events,
            e.principals AS principals,
            e.agents AS agents,
            arrayDistinct(arrayConcat(e.principals, e.agents)) AS actors,
            e.systems AS systems,
            ifNull(v.violations, 0) AS violations,
            e.unverified = 0 AND ifNull(v.violations, 0) = 0 AS verified
        FROM
        (
            SELECT
                workflow_id,
                min(event_time) AS started_at,
                max(event_time) AS ended_at,
                count() AS events,
                arraySort(groupUniqArray(principal)) AS principals,
                arraySort(groupUniqArrayIf(agent_id, agent_id != '')) AS agents,
                arraySort(groupUniqArrayIf(resource, resource != '')) AS systems,
                countIf(verification != 'VERIFIED') AS unverified
            FROM {db}.lineage_entries FINAL
            GROUP BY workflow_id
        ) AS e
        LEFT JOIN
        (
            SELECT workflow_id, count() AS violations
            FROM {db}.violations FINAL
            GROUP BY workflow_id
        ) AS v ON e.workflow_id = v.workflow_id
        """,
    ),
)

# A sealed-batch record (schemas/sealed_batch.avsc) carries many events at one Kafka offset, so
# several events quarantined from one record share (topic, partition, offset): the row's own
# digest joins the key, and a replayed row (identical bytes) still collapses.
_QUARANTINE_PER_EVENT = Migration(
    3,
    "quarantine: raw_digest joins the key (several events of one sealed-batch record)",
    (
        """
        ALTER TABLE {db}.quarantine
            ADD COLUMN IF NOT EXISTS raw_digest UInt64,
            MODIFY ORDER BY (source_topic, source_partition, source_offset, raw_digest)
        """,
    ),
)

# Version 4: 3 is the per-event quarantine key above. Versions are applied by set membership, so
# a database that took 4 before 3 existed still gets 3.
# Cosignature lines a witness returned for a processor checkpoint (sinks/witness_feeder.py).
# Not trusted by any verifier: export copies them into the bundle, where they are checked.
_WITNESS = Migration(
    4,
    "witness_cosignatures: witness cosignature lines per checkpoint (docs/witness.md)",
    (
        """
        CREATE TABLE IF NOT EXISTS {db}.witness_cosignatures
        (
            origin LowCardinality(String),
            partition UInt16,
            tree_size UInt64,
            root_hash FixedString(32),
            witness LowCardinality(String),
            cosigned_at UInt64,
            line String
        )
        ENGINE = ReplacingMergeTree
        ORDER BY (partition, tree_size, witness, cosigned_at)
        """,
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_BASE_TABLES, _VIEWS, _QUARANTINE_PER_EVENT, _WITNESS)
LATEST_VERSION = MIGRATIONS[-1].version

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {db}.schema_version
(
    version UInt32,
    applied_at DateTime64(3, 'UTC'),
    description String
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


def quote_database(database: str) -> str:
    """``database`` as a quoted identifier; raise ConfigError unless it is a plain name."""
    if not _IDENT.fullmatch(database):
        raise ConfigError(
            f"database: expected a name matching [A-Za-z_][A-Za-z0-9_]*, found {database!r}"
        )
    return f"`{database}`"


def applied_versions(client: Client, database: str) -> set[int]:
    """Versions recorded in ``schema_version`` (empty if the table does not exist yet)."""
    db = quote_database(database)
    exists = client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'schema_version'",
        parameters={"db": database},
    ).result_rows[0][0]
    if not exists:
        return set()
    rows = client.query(f"SELECT DISTINCT version FROM {db}.schema_version").result_rows
    return {int(row[0]) for row in rows}


def current_version(client: Client, database: str) -> int:
    """The highest applied migration version, 0 for an empty database."""
    return max(applied_versions(client, database), default=0)


def migrate(client: Client, database: str) -> int:
    """Create ``database`` if absent and apply every pending migration in order.

    Returns how many migrations this call applied; a second call returns 0 and changes nothing.
    """
    db = quote_database(database)
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(_VERSION_TABLE.format(db=db))
    done = applied_versions(client, database)
    applied = 0
    for migration in sorted(MIGRATIONS, key=lambda m: m.version):
        if migration.version in done:
            continue
        for statement in migration.statements:
            client.command(statement.format(db=db))
        client.command(
            f"INSERT INTO {db}.schema_version (version, applied_at, description) "
            "VALUES ({version:UInt32}, now64(3, 'UTC'), {description:String})",
            parameters={"version": migration.version, "description": migration.description},
        )
        applied += 1
    return applied
