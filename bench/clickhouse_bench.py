"""ClickHouse sink insert rate and workflow-summary query time on chDB (``python -m bench.clickhouse_bench``).

Two measurements on one in-process chDB engine (clickhouse-connect, ``chdb:///<tmpdir>``) with the
project's schema (``sinks.schema.migrate``):

1. **Sink inserts.** Realistic chain entries (scenario-shaped events encoded by the codec, real
   event digests, entry hashes, signed seals and seal inclusion paths) are turned into rows by
   ``sinks.rows.entry_row`` and inserted into ``lineage_entries`` in batches, as the sink does.
   Row building alone, inserting alone, both together, and the engine alone (the same rows sent
   as Native blocks) are timed; every insert run goes to a fresh database, so block deduplication
   never skips a batch. Best of ``--repeat``.
2. **Workflow summaries.** ``--summary-rows`` synthetic entries (every column filled) and a few
   violations are generated inside the engine with ``INSERT … SELECT … FROM numbers(N)``; then the
   ``workflow_summary`` view for one workflow, a count and totals over all of it and the query
   pack's ``workflow_summaries`` are timed, best of ``--repeat`` each.

Rates are per wall-clock second; CPU seconds are this process's, chDB's engine threads included.
Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clickhouse_connect
from rich.console import Console
from rich.table import Table

from lineage import codec, hashing, merkle
from lineage.ids import uuid7
from lineage.keys import Role, Signer
from lineage.model import (
    Authorization,
    ChainEntry,
    Decision,
    EventKind,
    ExecutionEvent,
    Runtime,
)
from lineage.querypack import load_pack
from producers.partitioner import partition_for
from sinks import rows, schema
from tests.support.lineage_builder import make_seal

REPO = Path(__file__).resolve().parents[1]
QUERY_PACK = REPO / "docs" / "queries.sql"
POLICY_FILE = REPO / "policies" / "default.toml"
TOPIC = "lineage.events"
PARTITIONS = 4
SEAL_EVERY = 100
T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
SPAN_DAYS = 45  # synthetic event times cover January and half of February: two month partitions
SUMMARY_DB = "bench_summary"

SYSTEMS = (
    "crm:accounts",
    "crm:contacts",
    "search:web",
    "docs:handbook",
    "docs:contracts",
    "db:orders",
    "db:invoices",
    "s3:reports",
    "mail:outbound",
    "calendar:team",
    "git:monorepo",
    "ci:pipelines",
    "tickets:support",
    "wiki:engineering",
    "hr:directory",
    "pay:payouts",
    "warehouse:events",
    "vector:kb",
    "slack:channels",
    "drive:shared",
    "erp:ledger",
    "billing:plans",
    "k8s:prod",
    "vault:secrets",
)
AGENTS = ("planner", "researcher", "coder", "reviewer", "support", "ops")
MODELS = ("gpt-5", "claude-opus-4", "gemini-2.5-pro")
VIOLATION_TYPES = (
    "UNAUTHORIZED_EXECUTION",
    "EXPIRED_AUTHORIZATION",
    "SCOPE_MISMATCH",
    "MISSING_ATTESTATION",
    "FORBIDDEN_RESOURCE",
    "ATTESTATION_CHANGED",
)

_EVENTS = codec.load("execution_event")


# -- 1. realistic chain entries ----------------------------------------------------------


def _workflow_events(
    w: int, start_us: int, steps: int, policy_hex: str, runtime_id: str, gate_id: str
) -> list[ExecutionEvent]:
    """One scenario-shaped workflow: start, ``steps`` × (decide, start, access, complete), end.

    ``emitter_seq`` and ``partition`` are placeholders; the caller numbers them per emitter.
    """
    workflow_id = f"wf-{uuid7(start_us // 1000)}"
    clock = start_us
    events: list[ExecutionEvent] = []
    common: dict[str, Any] = {
        "principal": f"user:u{w % 500}",
        "agent_id": f"agent:{AGENTS[w % len(AGENTS)]}-{w % 40}",
        "model_id": MODELS[w % len(MODELS)],
        "model_version": "2026-01",
        "trace_id": f"{w * 0x9E3779B97F4A7C15 & (1 << 128) - 1:032x}",
    }
    runtime = Runtime(
        host=f"host-{w % 16}",
        image_digest="sha256:" + f"{w % 8:02x}" * 32,
        attestation_type="tpm2",
        measurement="sha256:" + f"{w % 8 + 16:02x}" * 32,
    )

    def add(kind: EventKind, emitter: str, action: str, parent: str | None, **extra: Any) -> str:
        nonlocal clock
        clock += 1_500_000 + len(events) * 37
        event = ExecutionEvent(
            event_id=uuid7(clock // 1000),
            workflow_id=workflow_id,
            kind=kind,
            event_time=clock,
            action=action,
            emitter_id=emitter,
            emitter_seq=0,
            topic=TOPIC,
            partition=0,
            parent_event_id=parent,
            span_id=f"{(w << 20) + len(events):016x}",
            **common,
            **extra,
        )
        events.append(event)
        return event.event_id

    root = add(EventKind.WORKFLOW_STARTED, runtime_id, "workflow.start", None)
    for step in range(steps):
        resource = SYSTEMS[(w + step) % len(SYSTEMS)]
        action = "tool.call:" + resource.replace(":", ".")
        auth = add(
            EventKind.AUTHORIZATION_DECISION,
            gate_id,
            action,
            root,
            resource=resource,
            authorization=Authorization(
                decision=Decision.ALLOW,
                policy_id="lineage-demo",
                policy_digest="sha256:" + policy_hex,
                determining_policies=("allow-tools",),
                input_digest="sha256:" + f"{w:016x}{step:016x}" * 2,
                expires_at=clock + 60_000_000,
                authorized_action=action,
                authorized_resource=resource,
            ),
        )
        run = add(
            EventKind.EXECUTION_STARTED,
            runtime_id,
            action,
            auth,
            resource=resource,
            authorization_id=auth,
            runtime=runtime,
            input_digest="sha256:" + f"{w:032x}{step:032x}",
        )
        add(
            EventKind.RESOURCE_ACCESS,
            runtime_id,
            action,
            run,
            resource=resource,
            authorization_id=auth,
            runtime=runtime,
            attributes={"rows": str(10 + step), "bytes": str(4096 * (step + 1))},
        )
        add(
            EventKind.EXECUTION_COMPLETED,
            runtime_id,
            action,
            run,
            resource=resource,
            authorization_id=auth,
            runtime=runtime,
            output_digest="sha256:" + f"{step:032x}{w:032x}",
        )
    add(EventKind.WORKFLOW_COMPLETED, runtime_id, "workflow.complete", root)
    return events


def _subtree(leaves: list[bytes], lo: int, hi: int) -> tuple[bytes, list[list[bytes]]]:
    """RFC 6962 root of ``leaves[lo:hi]`` (leaf hashes) and the inclusion path of every leaf."""
    if hi - lo == 1:
        return leaves[lo], [[]]
    k = 1
    while k * 2 < hi - lo:
        k *= 2
    left, left_paths = _subtree(leaves, lo, lo + k)
    right, right_paths = _subtree(leaves, lo + k, hi)
    paths = [[*p, right] for p in left_paths] + [[*p, left] for p in right_paths]
    return merkle.node_hash(left, right), paths


@dataclass
class _Stream:
    """One emitter's open seal batch in one partition."""

    next_seq: int = 0
    first_seq: int = 0
    pending: list[tuple[ExecutionEvent, bytes, bytes]] = field(default_factory=list)
    prev_seal_hash: bytes = hashing.ZERO_HASH


def build_entries(count: int, steps: int = 5, concurrent: int = 256) -> list[ChainEntry]:
    """About ``count`` chain entries as the processor emits them, workflows interleaved.

    Events go through the codec (exact single-object bytes); entries carry real event digests,
    entry hashes, Ed25519-signed seals every SEAL_EVERY events per emitter and partition, and
    RFC 6962 inclusion paths, so every column has its real size and shape.
    """
    runtime, _ = Signer.generate_ephemeral("agent-runtime", Role.EMITTER)
    gate, _ = Signer.generate_ephemeral("policy-gate", Role.AUTHORIZER)
    signers = {"agent-runtime#i1": runtime, "policy-gate#g1": gate}
    policy_digest = hashing.policy_digest_of(POLICY_FILE.read_bytes())
    per_workflow = 2 + 4 * steps
    workflows = -(-count // per_workflow)

    streams: dict[tuple[str, int], _Stream] = {}
    heads: dict[str, tuple[int, bytes]] = {}
    log_index = [0] * PARTITIONS
    offsets = [0] * PARTITIONS
    entries: list[ChainEntry] = []

    def seal(emitter_id: str, p: int, st: _Stream) -> None:
        digests = [d for _, _, d in st.pending]
        data = make_seal(
            signers[emitter_id], emitter_id, p, st.first_seq, digests, st.prev_seal_hash
        )
        _, paths = _subtree([merkle.leaf_hash(d) for d in digests], 0, len(digests))
        for index, ((event, event_bytes, digest), path) in enumerate(
            zip(st.pending, paths, strict=True)
        ):
            seq, prev = heads.get(event.workflow_id, (0, hashing.genesis_hash(event.workflow_id)))
            entry_hash = hashing.entry_hash(prev, digest, seq, policy_digest)
            heads[event.workflow_id] = (seq + 1, entry_hash)
            entries.append(
                ChainEntry(
                    workflow_id=event.workflow_id,
                    chain_seq=seq,
                    event_id=event.event_id,
                    event_digest=digest,
                    prev_hash=prev,
                    entry_hash=entry_hash,
                    policy_digest=policy_digest,
                    event_bytes=event_bytes,
                    source_partition=p,
                    source_offset=offsets[p],
                    log_index=log_index[p],
                    seal_bytes=data,
                    seal_index=index,
                    seal_path=tuple(path),
                )
            )
            offsets[p] += 1
            log_index[p] += 1
        offsets[p] += 1  # the seal record itself
        st.prev_seal_hash = hashing.seal_hash(data)
        st.first_seq = st.next_seq
        st.pending = []

    def interleaved() -> Iterator[ExecutionEvent]:
        for first in range(0, workflows, concurrent):
            group = [
                _workflow_events(
                    w,
                    T0_US + w * 20_000_000,
                    steps,
                    policy_digest.hex(),
                    "agent-runtime#i1",
                    "policy-gate#g1",
                )
                for w in range(first, min(first + concurrent, workflows))
            ]
            for i in range(per_workflow):
                for events in group:
                    yield events[i]

    for template in interleaved():
        if len(entries) + sum(len(s.pending) for s in streams.values()) >= count:
            break
        p = partition_for(template.workflow_id.encode(), PARTITIONS)
        st = streams.setdefault((template.emitter_id, p), _Stream())
        record = template.to_record()
        record.update(emitter_seq=st.next_seq, partition=p)
        data = _EVENTS.encode(record)
        st.pending.append((template, data, hashing.event_digest(data)))
        st.next_seq += 1
        if len(st.pending) >= SEAL_EVERY:
            seal(template.emitter_id, p, st)
    for (emitter_id, p), st in sorted(streams.items()):
        if st.pending:
            seal(emitter_id, p, st)
    return entries


# -- timing helpers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall and process-CPU seconds of the best run."""

    wall_s: float
    cpu_s: float


def best_of(repeat: int, run: Callable[[], Any], setup: Callable[[], Any] | None = None) -> Timing:
    """Best wall time of ``repeat`` calls of ``run`` (``setup`` runs untimed before each)."""
    best: Timing | None = None
    for _ in range(repeat):
        if setup is not None:
            setup()
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        timing = Timing(time.perf_counter() - wall, time.process_time() - cpu)
        if best is None or timing.wall_s < best.wall_s:
            best = timing
    assert best is not None
    return best


# -- 1. sink inserts --------------------------------------------------------------------------


def measure_sink(client: Any, entries: list[ChainEntry], batch: int, repeat: int) -> dict[str, Any]:
    """Rows/s of ``entry_row`` alone, of the insert alone and of both, batch by batch."""
    columns = list(rows.ENTRY_COLUMNS)
    batches = [entries[i : i + batch] for i in range(0, len(entries), batch)]
    built: list[list[rows.Row]] = []
    native: list[bytes] = []
    runs = [0]

    def fresh_database() -> None:
        runs[0] += 1
        schema.migrate(client, f"bench_sink_{runs[0]}")

    def build() -> None:
        built[:] = [[rows.entry_row(e) for e in b] for b in batches]

    def insert() -> None:
        db = f"bench_sink_{runs[0]}"
        for chunk in built:
            client.insert("lineage_entries", chunk, column_names=columns, database=db)

    def both() -> None:
        db = f"bench_sink_{runs[0]}"
        for b in batches:
            chunk = [rows.entry_row(e) for e in b]
            client.insert("lineage_entries", chunk, column_names=columns, database=db)

    def engine_only() -> None:
        db = f"bench_sink_{runs[0]}"
        for block in native:
            client.raw_insert(f"{db}.lineage_entries", columns, block, fmt="Native")

    n = len(entries)
    out: dict[str, Any] = {
        "rows": n,
        "batch": batch,
        "avg_event_bytes": sum(len(e.event_bytes) for e in entries) / n,
        "avg_seal_bytes": sum(len(e.seal_bytes) for e in entries) / n,
    }
    timings = {
        "build": best_of(repeat, build),
        "insert": best_of(repeat, insert, fresh_database),
        "both": best_of(repeat, both, fresh_database),
    }
    # The same rows as the engine receives them: Native blocks read back from the last run, in
    # emission order, so this times ClickHouse alone (parse, sort, index, compress, rollup view).
    source = f"bench_sink_{runs[0]}"
    native[:] = [
        client.raw_query(
            f"SELECT {', '.join(columns)} FROM {source}.lineage_entries "
            f"ORDER BY event_time, event_id LIMIT {batch} OFFSET {first}",
            fmt="Native",
        )
        for first in range(0, len(entries), batch)
    ]
    timings["engine"] = best_of(repeat, engine_only, fresh_database)
    for name, timing in timings.items():
        out[name] = {
            "wall_s": round(timing.wall_s, 4),
            "cpu_s": round(timing.cpu_s, 4),
            "rows_per_s": round(n / timing.wall_s),
            "us_per_row": round(timing.wall_s / n * 1e6, 2),
        }
    for db in (source, f"bench_sink_{runs[0]}"):
        stored = client.query(f"SELECT count() FROM {db}.lineage_entries").result_rows[0][0]
        if stored != n:
            raise SystemExit(f"sink: expected {n} rows in {db}, found {stored}")
    return out


# -- 2. synthetic entries and summaries ------------------------------------------------------


def _hex(expr: str, width: int) -> str:
    return f"leftPad(lower(hex(toUInt64({expr}))), {width}, '0')"


def _uuid7(ms_expr: str, n_expr: str) -> str:
    """A UUIDv7-shaped string: 48-bit millisecond time, then ``n`` (unique) in the rest."""
    t, r = _hex(ms_expr, 12), _hex(n_expr, 18)
    return (
        f"concat(substring({t}, 1, 8), '-', substring({t}, 9, 4), '-7', substring({r}, 1, 3), "
        f"'-8', substring({r}, 4, 3), '-', substring({r}, 7, 12))"
    )


@dataclass(frozen=True, slots=True)
class Layout:
    """Where synthetic row ``n`` sits: workflow ``n % workflows``, chain position ``n // workflows``."""

    rows: int
    workflows: int

    @property
    def stride_us(self) -> int:
        """Gap between consecutive workflows' starts, so all of them span SPAN_DAYS."""
        return SPAN_DAYS * 86_400_000_000 // self.workflows

    def time_us(self, n: str) -> str:
        w = self.workflows
        return (
            f"({T0_US} + ({n}) % {w} * {self.stride_us} + intDiv({n}, {w}) * 1500000 + ({n}) % 997)"
        )

    def event_id(self, n: str) -> str:
        return _uuid7(f"intDiv({self.time_us(n)}, 1000)", n)

    def workflow_id(self, w: str) -> str:
        start_ms = f"intDiv({T0_US} + ({w}) * {self.stride_us}, 1000)"
        return f"concat('wf-', {_uuid7(start_ms, f'({w}) + 1099511627776')})"


def _array(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def entries_sql(db: str, layout: Layout, policy_hex: str) -> str:
    """``INSERT … SELECT`` of ``layout.rows`` plausible ``lineage_entries`` rows.

    Every workflow runs start, (decide, execute, access, complete)*, end; one in 1,000 is
    contained from its 10th entry on. ``event_bytes`` and ``seal_bytes`` are of realistic size and
    content (ids, names, digests) but are not decodable records.
    """
    w, n = layout.workflows, layout.rows
    ev_header = _EVENTS.header.hex()
    seal_header = codec.load("seal").header.hex()
    kinds = _array(
        (
            "WORKFLOW_STARTED",
            "AUTHORIZATION_DECISION",
            "EXECUTION_STARTED",
            "RESOURCE_ACCESS",
            "EXECUTION_COMPLETED",
            "WORKFLOW_COMPLETED",
        )
    )
    return f"""
INSERT INTO {db}.lineage_entries ({", ".join(rows.ENTRY_COLUMNS)})
SELECT
    wf, seq, eid,
    SHA256(concat('entry:', toString(n))),
    if(seq = 0, SHA256(concat('genesis:', wf)), SHA256(concat('entry:', toString(n - {w})))),
    SHA256(concat('event:', toString(n))),
    toFixedString(unhex('{policy_hex}'), 32),
    concat(unhex('{ev_header}'), eid, wf, kind, principal, agent, model, '2026-01', action,
           resource, emitter, '{TOPIC}', 'sha256:', lower(hex(SHA256(concat('in:', toString(n))))),
           trace_id, span_id, auth_id, parent, if(k IN (2, 3, 4), concat(host, image, measure), '')),
    kind, fromUnixTimestamp64Micro(toInt64(t_us), 'UTC'), principal, agent, model, '2026-01',
    action, resource, auth_id,
    if(k = 1, if(wi % 97 = 3 AND step = 1, 'DENY', 'ALLOW'), ''),
    if(k = 1, 'lineage-demo', ''),
    if(k = 1, 'sha256:{policy_hex}', ''),
    if(k = 1, ['allow-tools'], CAST([], 'Array(String)')),
    if(k = 1, fromUnixTimestamp64Micro(toInt64(t_us + 60000000), 'UTC'), NULL),
    if(k IN (2, 3, 4), 'tpm2', ''),
    if(k IN (2, 3, 4), measure, ''),
    if(k IN (2, 3, 4), host, ''),
    if(k IN (2, 3, 4), image, ''),
    parent,
    if(wi % 20 = 11, {layout.workflow_id("wi - 1")}, ''),
    trace_id, span_id, emitter,
    intDiv(n, {PARTITIONS * 2}),
    toUInt16(wi % {PARTITIONS}),
    intDiv(n, {PARTITIONS}) + intDiv(n, {PARTITIONS * SEAL_EVERY}),
    intDiv(n, {PARTITIONS}),
    concat(unhex('{seal_header}'), emitter, 'ed25519:', lower(hex(cityHash64(emitter))),
           '{TOPIC}', SHA256(concat('seal:', toString(seal_no))),
           SHA256(concat('seal:', toString(seal_no - 1))),
           SHA256(concat('sig1:', toString(seal_no))), SHA256(concat('sig2:', toString(seal_no)))),
    toUInt32(n % {SEAL_EVERY}),
    arrayMap(i -> SHA256(concat(toString(seal_no), ':', toString(i), ':',
                                toString(bitXor(bitShiftRight(n % {SEAL_EVERY}, i), 1)))),
             range(7)),
    if(contained, ['CONTAINED'], CAST([], 'Array(String)')),
    if(contained, 'CONTAINED', 'VERIFIED'),
    if(k = 3, map('rows', toString(10 + step), 'bytes', toString(4096 * (step + 1))),
       CAST(map(), 'Map(String, String)'))
FROM
(
    SELECT
        n, wi, seq, k, step, t_us, wf, eid, contained,
        {kinds}[k + 1] AS kind,
        concat('user:u', toString(wi % 500)) AS principal,
        concat('agent:', {_array(AGENTS)}[wi % {len(AGENTS)} + 1], '-', toString(wi % 40)) AS agent,
        {_array(MODELS)}[wi % {len(MODELS)} + 1] AS model,
        if(k IN (0, 5), '', {_array(SYSTEMS)}[(wi + step) % {len(SYSTEMS)} + 1]) AS resource,
        multiIf(k = 0, 'workflow.start', k = 5, 'workflow.complete',
                concat('tool.call:', replaceOne(resource, ':', '.'))) AS action,
        if(k = 1, 'policy-gate#g1', concat('agent-runtime#i', toString(wi % 4))) AS emitter,
        multiIf(k IN (0, 1, 5), '', k = 2, {layout.event_id(f"n - {w}")},
                k = 3, {layout.event_id(f"n - {2 * w}")}, {layout.event_id(f"n - {3 * w}")}) AS auth_id,
        multiIf(k = 0, '', k IN (1, 5), {layout.event_id("wi")},
                k = 2, auth_id, k = 3, {layout.event_id(f"n - {w}")},
                {layout.event_id(f"n - {2 * w}")}) AS parent,
        concat({_hex("cityHash64(wi)", 16)}, {_hex("wi", 16)}) AS trace_id,
        {_hex("cityHash64(n)", 16)} AS span_id,
        intDiv(n, {SEAL_EVERY}) AS seal_no,
        concat('host-', toString(wi % 16)) AS host,
        concat('sha256:', repeat(leftPad(lower(hex(wi % 8)), 2, '0'), 32)) AS image,
        concat('sha256:', lower(hex(SHA256(toString(wi % 8))))) AS measure
    FROM
    (
        SELECT
            number AS n,
            number % {w} AS wi,
            intDiv(number, {w}) AS seq,
            intDiv({n - 1} - wi, {w}) AS last_seq,
            toUInt8(multiIf(seq = 0, 0, seq = last_seq, 5, (seq - 1) % 4 + 1)) AS k,
            intDiv(toInt64(seq) - 1, 4) AS step,
            {layout.time_us("number")} AS t_us,
            {layout.workflow_id("wi")} AS wf,
            {layout.event_id("number")} AS eid,
            wi % 1000 = 7 AND seq >= 10 AS contained
        FROM numbers({n})
    )
)
"""


def violations_sql(db: str, layout: Layout, policy_hex: str) -> str:
    """Two violations for every 100th workflow (CRITICAL for the contained ones)."""
    w = layout.workflows
    count = 2 * (w // 100)
    return f"""
INSERT INTO {db}.violations ({", ".join(rows.VIOLATION_COLUMNS)})
SELECT
    lower(hex(SHA256(concat('violation:', toString(j))))),
    if(wi % 1000 = 7 AND j % 2 = 1, 'CONTAINED_WORKFLOW', {_array(VIOLATION_TYPES)}[j % {len(VIOLATION_TYPES)} + 1]),
    concat('rule-', toString(j % 17)),
    if(wi % 1000 = 7, 'CRITICAL', ['LOW', 'MEDIUM', 'HIGH'][j % 3 + 1]),
    {layout.workflow_id("wi")},
    {layout.event_id("ev")},
    CAST([], 'Array(String)'),
    '{policy_hex}',
    concat('execution ', {layout.event_id("ev")}, ' of workflow ', {layout.workflow_id("wi")},
           ' broke rule-', toString(j % 17)),
    toUInt16(wi % {PARTITIONS}),
    intDiv(ev, {PARTITIONS}),
    fromUnixTimestamp64Micro(toInt64({layout.time_us("ev")} + 1000), 'UTC')
FROM
(
    SELECT number AS j, intDiv(number, 2) * 100 + 7 AS wi, wi + (2 + 4 * (j % 2)) * {w} AS ev
    FROM numbers({count})
)
"""


def generate_summary_data(
    client: Any, db: str, layout: Layout, merge_wait_s: float
) -> dict[str, Any]:
    """Fill ``db`` with synthetic entries and violations; wait for background merges to settle."""
    policy_hex = hashing.policy_digest_of(POLICY_FILE.read_bytes()).hex()
    out: dict[str, Any] = {"rows": layout.rows, "workflows": layout.workflows}
    t = time.perf_counter()
    client.command(entries_sql(db, layout, policy_hex))
    out["entries_insert_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    client.command(violations_sql(db, layout, policy_hex))
    out["violations_insert_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    while time.perf_counter() - t < merge_wait_s:
        merging = client.query(
            "SELECT count() FROM system.merges WHERE database = {db:String}",
            parameters={"db": db},
        ).result_rows[0][0]
        if not merging:
            break
        time.sleep(0.5)
    out["merge_wait_s"] = round(time.perf_counter() - t, 2)
    count, violations = client.query(
        f"SELECT (SELECT count() FROM {db}.lineage_entries), (SELECT count() FROM {db}.violations)"
    ).result_rows[0]
    parts, on_disk, raw = client.query(
        "SELECT count(), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
        "WHERE database = {db:String} AND table = 'lineage_entries' AND active",
        parameters={"db": db},
    ).result_rows[0]
    if count != layout.rows:
        raise SystemExit(f"summary: expected {layout.rows} entries, found {count}")
    out.update(
        stored_entries=count,
        stored_violations=violations,
        entry_parts=parts,
        entries_mb_on_disk=round(on_disk / 1e6, 1),
        entries_mb_uncompressed=round(raw / 1e6, 1),
    )
    return out


def _timed_query(client: Any, sql: str, params: dict[str, Any], repeat: int) -> tuple[Timing, Any]:
    """Best-of-``repeat`` timing of one query, and its last result."""
    results: list[Any] = []

    def run() -> None:
        results.append(client.query(sql, params))

    return best_of(repeat, run), results[-1]


def measure_queries(client: Any, db: str, layout: Layout, repeat: int) -> list[dict[str, Any]]:
    """Best-of-``repeat`` wall time of the summary queries (the client's database is ``db``)."""
    workflow = client.query(f"SELECT {layout.workflow_id(str(layout.workflows // 2 + 7))}")
    workflow_id = workflow.result_rows[0][0]
    pack_sql, pack_params = load_pack(QUERY_PACK)["workflow_summaries"].render({})
    cases: list[tuple[str, str, dict[str, Any]]] = [
        (
            "workflow_summary, one workflow",
            "SELECT * FROM workflow_summary WHERE workflow_id = {workflow:String}",
            {"workflow": workflow_id},
        ),
        ("count() over workflow_summary", "SELECT count() FROM workflow_summary", {}),
        (
            "totals over workflow_summary",
            "SELECT count(), sum(events), sum(violations), countIf(verified) FROM workflow_summary",
            {},
        ),
        ("pack: workflow_summaries (newest 50)", pack_sql, pack_params),
    ]
    out: list[dict[str, Any]] = []
    for name, sql, params in cases:
        timing, last = _timed_query(client, sql, params, repeat)
        # clickhouse-connect's summary on chDB counts result rows; the planner's estimate is
        # what shows whether the workflow filter reached the tables' primary keys.
        estimate = client.query(f"EXPLAIN ESTIMATE {sql}", params)
        est = {str(r[1]): int(r[3]) for r in estimate.result_rows}
        out.append(
            {
                "name": name,
                "wall_s": round(timing.wall_s, 4),
                "cpu_s": round(timing.cpu_s, 4),
                "result_rows": len(last.result_rows),
                "est_rows_read": est,
                "first_row": [str(v) for v in last.result_rows[0]] if last.result_rows else [],
            }
        )
    return out


# -- report --------------------------------------------------------------------------------


def print_report(doc: dict[str, Any], console: Console) -> None:
    """The figures as rich tables."""
    sink = doc["sink"]
    table = Table(
        title=f"sink inserts: {sink['rows']:,} realistic entries, batches of {sink['batch']:,} "
        f"(event {sink['avg_event_bytes']:.0f} B, seal {sink['avg_seal_bytes']:.0f} B per row)"
    )
    for column in ("step", "wall s", "CPU s", "µs / row", "rows/s"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for key, label in (
        ("build", "row building (sinks.rows.entry_row)"),
        ("insert", "insert alone (client.insert)"),
        ("both", "build + insert (what the sink does)"),
        ("engine", "chDB alone (same rows as Native blocks)"),
    ):
        r = sink[key]
        table.add_row(
            label,
            f"{r['wall_s']:.3f}",
            f"{r['cpu_s']:.3f}",
            f"{r['us_per_row']:.2f}",
            f"{r['rows_per_s']:,}",
        )
    console.print(table)
    gen = doc.get("summary_data")
    if gen is None:
        return
    console.print(
        f"summary data: {gen['rows']:,} entries over {gen['workflows']:,} workflows inserted in "
        f"{gen['entries_insert_s']} s, {gen['stored_violations']:,} violations in "
        f"{gen['violations_insert_s']} s; merges settled after {gen['merge_wait_s']} s; "
        f"{gen['entry_parts']} active parts, {gen['entries_mb_on_disk']:,} MB on disk "
        f"({gen['entries_mb_uncompressed']:,} MB uncompressed)"
    )
    table = Table(title=f"summary queries over {gen['rows']:,} entries (best of {doc['repeat']})")
    for column in ("query", "wall s", "CPU s", "rows to read (entries, violations)", "rows out"):
        table.add_column(column, justify="left" if column == "query" else "right")
    for q in doc["queries"]:
        table.add_row(
            q["name"],
            f"{q['wall_s']:.3f}",
            f"{q['cpu_s']:.3f}",
            f"{q['est_rows_read'].get('lineage_entries', 0):,}, "
            f"{q['est_rows_read'].get('violations', 0):,}",
            f"{q['result_rows']:,}",
        )
    console.print(table)
    for target in doc["targets"]:
        console.print(f"target {target['target']}: {'met' if target['met'] else 'missed'}")


def main(argv: list[str] | None = None) -> None:
    """Measure, print the tables, and with --json one JSON object on stdout."""
    ap = argparse.ArgumentParser(prog="python -m bench.clickhouse_bench", description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000, help="entries for the sink insert runs")
    ap.add_argument("--batch", type=int, default=5_000, help="rows per insert (the sink's batch)")
    ap.add_argument(
        "--summary-rows",
        type=int,
        default=10_000_000,
        help="synthetic entries for the summary queries (0 = skip)",
    )
    ap.add_argument(
        "--workflows",
        type=int,
        default=0,
        help="workflows in the synthetic data (default: summary rows / 20)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    ap.add_argument(
        "--merge-wait", type=float, default=120.0, help="at most this many s for merges to settle"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object (tables to stderr)")
    args = ap.parse_args(argv)
    console = Console(stderr=args.json)
    if not console.is_terminal:
        console.width = 120
    doc: dict[str, Any] = {"repeat": args.repeat, "targets": []}
    path = tempfile.mkdtemp(prefix="lineage-ch-bench-")
    try:
        client: Any = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        doc["engine_version"] = client.query("SELECT version()").result_rows[0][0]
        console.print(f"[bold]building {args.rows:,} realistic chain entries…[/]")
        t = time.perf_counter()
        entries = build_entries(args.rows)
        doc["entries_build_s"] = round(time.perf_counter() - t, 2)
        console.print(f"[bold]sink inserts (best of {args.repeat})…[/]")
        doc["sink"] = measure_sink(client, entries, args.batch, args.repeat)
        del entries
        both = doc["sink"]["both"]["rows_per_s"]
        doc["targets"].append(
            {"target": "sink insert ≥ 100,000 rows/s into chDB", "met": both >= 100_000}
        )
        if args.summary_rows:
            layout = Layout(args.summary_rows, args.workflows or max(1, args.summary_rows // 20))
            console.print(f"[bold]generating {layout.rows:,} synthetic entries in chDB…[/]")
            schema.migrate(client, SUMMARY_DB)
            doc["summary_data"] = generate_summary_data(client, SUMMARY_DB, layout, args.merge_wait)
            client.database = SUMMARY_DB
            console.print(f"[bold]summary queries (best of {args.repeat})…[/]")
            doc["queries"] = measure_queries(client, SUMMARY_DB, layout, args.repeat)
            one = doc["queries"][0]["wall_s"]
            doc["targets"].append(
                {
                    "target": f"one workflow's summary over {layout.rows:,} entries < 1 s",
                    "met": one < 1.0,
                }
            )
        client.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    doc["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print_report(doc, console)
    if args.json:
        print(json.dumps(doc))


if __name__ == "__main__":
    main()
