"""The analyst query pack: parsing, parameter binding and defaults, and every query on real data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lineage import codec, hashing
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
from lineage.querypack import NamedQuery, QueryPackError, load_pack, parse_pack
from sinks import rows, schema

PACK = Path(__file__).resolve().parents[3] / "docs" / "queries.sql"
T0 = 1_750_000_000_000_000  # 2025-06-15T15:06:40Z, in µs
MINUTE = 60_000_000
STREAM_POLICY = hashing.policy_digest_of(b"stream policy v1")
AUTH_POLICY = "sha256:" + "ab" * 32
ENCODER = codec.load("execution_event")


def _event(workflow_id: str, n: int, kind: EventKind, **fields: Any) -> ExecutionEvent:
    values: dict[str, Any] = {
        "event_id": f"{workflow_id}-e{n}",
        "workflow_id": workflow_id,
        "kind": kind,
        "event_time": T0 + n * MINUTE,
        "principal": "alice",
        "action": "workflow",
        "emitter_id": "emitter-1",
        "emitter_seq": n,
        "topic": "lineage.events",
        "partition": 0,
    }
    values.update(fields)
    return ExecutionEvent(**values)


def _chain(
    events: list[ExecutionEvent], flags: dict[int, tuple[str, ...]] | None = None
) -> list[ChainEntry]:
    entries: list[ChainEntry] = []
    prev = hashing.genesis_hash(events[0].workflow_id)
    for seq, event in enumerate(events):
        data = ENCODER.encode(event.to_record())
        digest = hashing.event_digest(data)
        entry = hashing.entry_hash(prev, digest, seq, STREAM_POLICY)
        entries.append(
            ChainEntry(
                workflow_id=event.workflow_id,
                chain_seq=seq,
                event_id=event.event_id,
                event_digest=digest,
                prev_hash=prev,
                entry_hash=entry,
                policy_digest=STREAM_POLICY,
                event_bytes=data,
                source_partition=event.partition,
                source_offset=100 + seq,
                log_index=seq,
                seal_bytes=b"seal",
                seal_index=seq,
                seal_path=(hashing.sha256(b"sibling"),),
                flags=(flags or {}).get(seq, ()),
            )
        )
        prev = entry
    return entries


def dataset() -> tuple[list[ChainEntry], list[Violation], list[Checkpoint], list[QuarantineRecord]]:
    """Two workflows: an authorized, attested one, and a callee that runs unauthorized and is contained."""
    h1 = Runtime(
        host="host-1", image_digest="sha256:img1", attestation_type="sev-snp", measurement="m1"
    )
    alpha = "wf-alpha"
    allow = Authorization(
        decision=Decision.ALLOW,
        policy_id="policy-v3",
        policy_digest=AUTH_POLICY,
        determining_policies=("permit-search",),
        input_digest="sha256:" + "01" * 32,
        expires_at=T0 + 60 * MINUTE,
        authorized_action="tool.call:search",
        authorized_resource="crm",
    )
    a_events = [
        _event(alpha, 0, EventKind.WORKFLOW_STARTED, agent_id="agent-research"),
        _event(
            alpha,
            1,
            EventKind.ATTESTATION,
            parent_event_id=f"{alpha}-e0",
            runtime=h1,
            action="attest",
            agent_id="agent-research",
        ),
        _event(
            alpha,
            2,
            EventKind.AUTHORIZATION_DECISION,
            parent_event_id=f"{alpha}-e0",
            authorization=allow,
            action="tool.call:search",
            resource="crm",
            agent_id="agent-research",
        ),
        _event(
            alpha,
            3,
            EventKind.EXECUTION_STARTED,
            parent_event_id=f"{alpha}-e2",
            authorization_id=f"{alpha}-e2",
            action="tool.call:search",
            resource="crm",
            runtime=h1,
            agent_id="agent-research",
            model_id="gpt-x",
            model_version="2025-05",
        ),
        _event(
            alpha,
            4,
            EventKind.RESOURCE_ACCESS,
            parent_event_id=f"{alpha}-e3",
            action="tool.call:search",
            resource="crm",
            runtime=h1,
            agent_id="agent-research",
        ),
        _event(
            alpha,
            5,
            EventKind.EXECUTION_COMPLETED,
            parent_event_id=f"{alpha}-e3",
            authorization_id=f"{alpha}-e2",
            action="tool.call:search",
            resource="crm",
            runtime=h1,
            agent_id="agent-research",
        ),
        _event(
            alpha,
            6,
            EventKind.WORKFLOW_COMPLETED,
            parent_event_id=f"{alpha}-e0",
            agent_id="agent-research",
        ),
    ]
    beta = "wf-beta"
    deny = Authorization(
        decision=Decision.DENY,
        policy_id="policy-v3",
        policy_digest=AUTH_POLICY,
        determining_policies=("forbid-drop",),
        input_digest="sha256:" + "02" * 32,
        expires_at=T0 + 60 * MINUTE,
        authorized_action="db.drop",
        authorized_resource="payments",
    )
    ops = {"principal": "svc-ops", "agent_id": "agent-ops", "emitter_id": "emitter-2"}
    b_events = [
        _event(beta, 10, EventKind.WORKFLOW_STARTED, parent_workflow_id=alpha, **ops),
        _event(
            beta,
            11,
            EventKind.EXECUTION_STARTED,
            parent_event_id=f"{beta}-e10",
            action="db.write",
            resource="payments",
            **ops,
        ),
        _event(
            beta,
            12,
            EventKind.AUTHORIZATION_DECISION,
            parent_event_id=f"{beta}-e10",
            authorization=deny,
            action="db.drop",
            resource="payments",
            **ops,
        ),
        _event(
            beta,
            13,
            EventKind.EXECUTION_STARTED,
            parent_event_id=f"{beta}-e12",
            authorization_id=f"{beta}-e12",
            action="db.drop",
            resource="payments",
            **ops,
        ),
        _event(
            beta,
            14,
            EventKind.EXECUTION_FAILED,
            parent_event_id=f"{beta}-e13",
            action="db.drop",
            resource="payments",
            **ops,
        ),
    ]
    entries = _chain(a_events) + _chain(b_events, flags={4: ("CONTAINED",)})

    def violation(n: int, vtype: ViolationType, event: str, severity: Severity) -> Violation:
        return Violation(
            violation_id=f"v-{n}",
            violation_type=vtype,
            rule=vtype.value.lower(),
            severity=severity,
            workflow_id=beta,
            policy_digest=STREAM_POLICY.hex(),
            explanation=f"{vtype.value} on {event}",
            source_partition=0,
            source_offset=200 + n,
            event_time=T0 + (10 + n) * MINUTE,
            event_id=event,
            related_event_ids=(f"{beta}-e10",),
        )

    violations = [
        violation(1, ViolationType.UNAUTHORIZED_EXECUTION, f"{beta}-e11", Severity.HIGH),
        violation(3, ViolationType.DENIED_EXECUTION, f"{beta}-e13", Severity.CRITICAL),
        violation(4, ViolationType.CONTAINED_WORKFLOW, f"{beta}-e14", Severity.CRITICAL),
    ]
    checkpoints = [
        Checkpoint(
            "lineage.example/log",
            p,
            size,
            hashing.sha256(b"%d/%d" % (p, size)),
            f"note {p}/{size}",
            "processor-1",
            size,
        )
        for p, size in ((0, 5), (0, 12), (1, 3))
    ]
    quarantine = [
        QuarantineRecord(
            "TRUNCATED_AVRO", "body ends early", b"\xc3\x01\x00", "lineage.events", 0, 7, b"wf-x"
        ),
        QuarantineRecord(
            "UNKNOWN_FINGERPRINT", "no schema", b"\xc3\x01" + bytes(8), "lineage.events", 1, 9, None
        ),
    ]
    return entries, violations, checkpoints, quarantine


def insert_dataset(client: Any) -> None:
    """Insert the synthetic dataset through the sink's row builders."""
    entries, violations, checkpoints, quarantine = dataset()
    client.insert(
        "lineage_entries", [rows.entry_row(e) for e in entries], column_names=rows.ENTRY_COLUMNS
    )
    client.insert(
        "violations",
        [rows.violation_row(v) for v in violations],
        column_names=rows.VIOLATION_COLUMNS,
    )
    client.insert(
        "checkpoints",
        [rows.checkpoint_row(c) for c in checkpoints],
        column_names=rows.CHECKPOINT_COLUMNS,
    )
    client.insert(
        "quarantine",
        [rows.quarantine_row(q) for q in quarantine],
        column_names=rows.QUARANTINE_COLUMNS,
    )


@pytest.fixture
def lineage_db(chdb_client: Any, ch_database: str) -> Iterator[Any]:
    """The session client switched to a migrated database holding the synthetic dataset."""
    schema.migrate(chdb_client, ch_database)
    previous = chdb_client.database
    chdb_client.database = ch_database
    insert_dataset(chdb_client)
    yield chdb_client
    chdb_client.database = previous or "default"


def run(
    client: Any, query: NamedQuery, params: dict[str, str] | None = None
) -> list[tuple[Any, ...]]:
    sql, bound = query.render(params or {})
    result: list[tuple[Any, ...]] = client.query(sql, parameters=bound).result_rows
    return result


PACK_QUERIES = load_pack(PACK)


def test_pack_has_the_documented_questions() -> None:
    expected = {
        "workflow_timeline",
        "execution_authorization",
        "unauthorized_executions",
        "agent_systems",
        "downstream_propagation",
        "workflows_by_policy",
        "runtime_attestations",
        "violation_trends_hourly",
        "workflow_violations",
        "top_agents",
        "quarantine_by_reason",
        "latest_checkpoints",
    }
    assert expected <= set(PACK_QUERIES)
    assert all(q.description for q in PACK_QUERIES.values())


@pytest.mark.parametrize("name", sorted(PACK_QUERIES))
def test_every_query_runs_with_defaults_and_returns_rows(lineage_db: Any, name: str) -> None:
    assert run(lineage_db, PACK_QUERIES[name]), f"{name} returned no rows"


SMALL_PACK = """
-- preamble comments are ignored
-- name: by_workflow
-- Rows of one workflow.
-- Second description line.
-- param: workflow = (SELECT workflow_id FROM lineage_entries ORDER BY event_time DESC LIMIT 1)
-- param: limit = (5)
SELECT chain_seq FROM lineage_entries FINAL
-- an inline comment stays in the SQL
WHERE workflow_id = {workflow:String}
ORDER BY chain_seq
LIMIT {limit:UInt32};

-- A section comment between queries belongs to neither.

-- name: chained_default
-- The default of `event` uses `workflow`.
-- param: workflow = ('wf-alpha')
-- param: event = (SELECT min(event_id) FROM lineage_entries WHERE workflow_id = {workflow:String})
SELECT event_id FROM lineage_entries FINAL WHERE event_id = {event:String}
"""


def test_parse_reads_names_descriptions_defaults_and_sql() -> None:
    pack = parse_pack(SMALL_PACK)
    q = pack["by_workflow"]
    assert q.description == "Rows of one workflow. Second description line."
    assert q.params == ("workflow", "limit")
    assert q.types == {"workflow": "String", "limit": "UInt32"}
    assert q.defaults["limit"] == "(5)"
    assert q.sql.startswith("SELECT chain_seq") and q.sql.endswith("LIMIT {limit:UInt32}")
    assert "-- an inline comment stays in the SQL" in q.sql


def test_render_binds_given_values_and_inlines_only_missing_defaults() -> None:
    q = parse_pack(SMALL_PACK)["by_workflow"]
    sql, bound = q.render({"workflow": "wf-alpha"})
    assert bound == {"workflow": "wf-alpha"}
    assert "{workflow:String}" in sql and "wf-alpha" not in sql
    assert "CAST(((5)) AS Nullable(UInt32))" in sql
    sql, bound = q.render({})
    assert bound == {}
    assert "{" not in sql
    assert (
        "CAST(((SELECT workflow_id FROM lineage_entries ORDER BY event_time DESC LIMIT 1)) AS Nullable(String))"
        in sql
    )


def test_render_resolves_a_default_that_uses_another_parameter() -> None:
    q = parse_pack(SMALL_PACK)["chained_default"]
    sql, bound = q.render({"workflow": "wf-beta"})
    assert bound == {"workflow": "wf-beta"}
    assert "WHERE workflow_id = {workflow:String}" in sql
    sql, bound = q.render({})
    assert bound == {} and "{" not in sql


def test_render_rejects_unknown_parameters() -> None:
    q = parse_pack(SMALL_PACK)["by_workflow"]
    with pytest.raises(
        QueryPackError, match=r"unknown parameter.*nope.*expected some of workflow, limit"
    ):
        q.render({"nope": "1"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: q\n-- no sql\n", "has no SQL"),
        ("-- name: q\nSELECT {a:String}\n", "expected a '-- param: key = <default>' line for a"),
        ("-- name: q\n-- param: b = (1)\nSELECT 1\n", "for b not used in the SQL"),
        (
            "-- name: q\n-- param: a = ('')\nSELECT {a:String}, {a:UInt8}\n",
            "used as String and as UInt8",
        ),
        ("-- name: q\nSELECT 1\n-- name: q\nSELECT 2\n", "defined twice"),
    ],
)
def test_parse_names_the_fault(text: str, message: str) -> None:
    with pytest.raises(QueryPackError, match=message):
        parse_pack(text, "pack.sql")


def test_render_detects_cyclic_defaults() -> None:
    text = "-- name: q\n-- param: a = ({b:String})\n-- param: b = ({a:String})\nSELECT {a:String}\n"
    with pytest.raises(QueryPackError, match="cycle"):
        parse_pack(text)["q"].render({})


@pytest.mark.parametrize("name", sorted(PACK_QUERIES))
def test_every_query_runs_on_an_empty_database(
    chdb_client: Any, ch_database: str, name: str
) -> None:
    schema.migrate(chdb_client, ch_database)
    previous = chdb_client.database
    chdb_client.database = ch_database
    try:
        assert run(chdb_client, PACK_QUERIES[name]) == []
    finally:
        chdb_client.database = previous or "default"


def test_a_given_parameter_overrides_the_default(lineage_db: Any) -> None:
    timeline = PACK_QUERIES["workflow_timeline"]
    default_rows = run(lineage_db, timeline)
    alpha_rows = run(lineage_db, timeline, {"workflow": "wf-alpha"})
    assert [r[0] for r in default_rows] == [0, 1, 2, 3, 4]  # wf-beta is the newest workflow
    assert [r[0] for r in alpha_rows] == [0, 1, 2, 3, 4, 5, 6]
    assert {r[12] for r in alpha_rows} == {f"wf-alpha-e{n}" for n in range(7)}


def test_agent_systems_for_a_given_agent(lineage_db: Any) -> None:
    default = run(lineage_db, PACK_QUERIES["agent_systems"])
    given = run(lineage_db, PACK_QUERIES["agent_systems"], {"agent": "agent-research"})
    assert [r[0] for r in default] == ["payments"]  # agent-ops has the most accesses
    assert [(r[0], r[2], r[3]) for r in given] == [("crm", 1, ["tool.call:search"])]


def test_execution_authorization_joins_the_decision(lineage_db: Any) -> None:
    (row,) = run(lineage_db, PACK_QUERIES["execution_authorization"], {"execution": "wf-alpha-e3"})
    assert row[0] == "wf-alpha-e3"
    assert row[7:10] == ("wf-alpha-e2", "alice", "emitter-1")
    assert row[11:15] == ("ALLOW", "policy-v3", AUTH_POLICY, ["permit-search"])
    assert row[16] == 1  # began before the decision expired


def test_unauthorized_executions_window_is_relative_to_the_data(lineage_db: Any) -> None:
    q = PACK_QUERIES["unauthorized_executions"]
    found = {(r[2], r[8]) for r in run(lineage_db, q)}
    assert found == {("wf-beta-e11", "NO_AUTHORIZATION"), ("wf-beta-e13", "DENIED")}
    assert run(lineage_db, q, {"until": "2025-06-15 15:18:00", "hours": "1"}) != []
    assert run(lineage_db, q, {"until": "2025-06-14 00:00:00"}) == []


def test_downstream_propagation_walks_the_causal_tree(lineage_db: Any) -> None:
    tree = run(lineage_db, PACK_QUERIES["downstream_propagation"], {"event": "wf-alpha-e2"})
    assert [(r[0], r[3]) for r in tree] == [
        (0, "wf-alpha-e2"),
        (1, "wf-alpha-e3"),
        (2, "wf-alpha-e4"),
        (2, "wf-alpha-e5"),
    ]
    shallow = run(
        lineage_db,
        PACK_QUERIES["downstream_propagation"],
        {"event": "wf-alpha-e0", "max_depth": "1"},
    )
    assert {r[0] for r in shallow} == {0, 1}


def test_workflows_by_stream_policy_digest(lineage_db: Any) -> None:
    q = PACK_QUERIES["workflows_by_policy"]
    by_stream = run(lineage_db, q, {"policy": "sha256:" + STREAM_POLICY.hex().upper()})
    assert [(r[0], r[6]) for r in by_stream] == [("wf-alpha", 7), ("wf-beta", 5)]
    assert run(lineage_db, q, {"policy": "sha256:" + "00" * 32}) == []


@pytest.mark.parametrize(
    "value",
    [
        "wf-alpha' OR '1'='1",
        "x'; DROP TABLE lineage_entries; --",
        "wf-alpha\\' OR 1=1 --",
        "{workflow:String}",
    ],
)
def test_a_malicious_value_is_bound_not_injected(lineage_db: Any, value: str) -> None:
    timeline = PACK_QUERIES["workflow_timeline"]
    sql, bound = timeline.render({"workflow": value})
    assert sql == timeline.sql and bound == {"workflow": value}
    assert run(lineage_db, timeline, {"workflow": value}) == []
    assert lineage_db.query("SELECT count() FROM lineage_entries FINAL").result_rows == [(12,)]
    echoed = lineage_db.query("SELECT {v:String}", parameters={"v": value}).result_rows
    assert echoed == [(value,)]
