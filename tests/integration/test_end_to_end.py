"""N events in → exactly N chained entries in ClickHouse, in causal order, with links that recompute."""

from __future__ import annotations

from confluent_kafka import Producer

from lineage import hashing
from lineage.model import EventKind
from tests.integration.conftest import Pipeline, wait_for


def emit_workflows(p: Pipeline, workflows: int, steps: int) -> dict[str, list[str]]:
    """Each workflow: a start event and a chain of child events from two emitters."""
    order: dict[str, list[str]] = {}
    with p.emitter("orchestrator", seal_every=10) as a, p.emitter("tool-runner", seal_every=7) as b:
        for w in range(workflows):
            wid = f"wf-{w:04d}"
            ev = a.emit(
                workflow_id=wid,
                kind=EventKind.WORKFLOW_STARTED,
                principal="agent:o",
                action="start",
            )
            order[wid] = [ev.event_id]
            for s in range(steps):
                em = a if s % 2 else b
                ev = em.emit(
                    workflow_id=wid,
                    kind=EventKind.RESOURCE_ACCESS,
                    principal="agent:o",
                    action="tool.call:search",
                    resource="web:search",
                    parent_event_id=ev.event_id,
                )
                order[wid].append(ev.event_id)
        for em in (a, b):
            report = em.flush(30)
            assert report.ok, f"expected every record delivered, found {report}"
    return order


def test_every_event_chained_once_in_order(pipeline: Pipeline) -> None:
    pipeline.start_worker()
    pipeline.start_sink()
    order = emit_workflows(pipeline, workflows=40, steps=9)
    total = sum(len(v) for v in order.values())
    wait_for(
        lambda: pipeline.count("lineage_entries") >= total,
        120,
        f"{total} chained entries (worker log: {pipeline.worker_log()})",
    )
    rows = pipeline.rows(
        "SELECT workflow_id, chain_seq, event_id, prev_hash, entry_hash, event_digest, "
        "policy_digest, event_bytes FROM {db}.lineage_entries FINAL ORDER BY workflow_id, chain_seq"
    )
    assert len(rows) == total, f"expected exactly {total} entries, found {len(rows)}"
    by_wf: dict[str, list[tuple[object, ...]]] = {}
    for r in rows:
        by_wf.setdefault(r[0].decode(), []).append(r)
    assert set(by_wf) == set(order)
    for wid, entries in by_wf.items():
        assert [e[2].decode() for e in entries] == order[wid], (
            f"{wid}: chain order differs from causal order"
        )
        prev = hashing.genesis_hash(wid)
        for seq, (_, chain_seq, _, prev_hash, entry_hash, digest, policy, data) in enumerate(
            entries
        ):
            assert chain_seq == seq
            assert prev_hash == prev, f"{wid}#{seq}: prev_hash does not link"
            assert digest == hashing.event_digest(data), f"{wid}#{seq}: digest does not match bytes"
            assert entry_hash == hashing.entry_hash(prev, digest, seq, policy)
            prev = entry_hash
    # Every RESOURCE_ACCESS here runs without an authorization: the stream check must flag each one.
    # Violations travel on their own topic: wait for them as well as for the entries.
    wait_for(lambda: pipeline.count("violations") >= 40 * 9, 60, "360 violations in ClickHouse")
    kinds = pipeline.rows(
        "SELECT violation_type, count() FROM {db}.violations FINAL GROUP BY violation_type"
    )
    assert [(k.decode(), n) for k, n in kinds] == [("UNAUTHORIZED_EXECUTION", 40 * 9)]


def test_malformed_record_quarantined_and_stream_continues(pipeline: Pipeline) -> None:
    pipeline.start_worker()
    pipeline.start_sink()
    raw = Producer({"bootstrap.servers": pipeline.bootstrap})
    raw.produce(
        pipeline.settings.topics.events,
        key=b"wf-bad",
        value=b"\xc3\x01garbage-not-avro",
        partition=0,
    )
    raw.produce(
        pipeline.settings.topics.events, key=b"wf-bad", value=b"not even single-object", partition=0
    )
    assert raw.flush(10) == 0
    order = emit_workflows(pipeline, workflows=8, steps=3)
    total = sum(len(v) for v in order.values())
    wait_for(
        lambda: pipeline.count("lineage_entries") >= total and pipeline.count("quarantine") >= 2,
        120,
        "entries after the bad records, and 2 quarantine rows",
    )
    reasons = [
        r[0].decode()
        for r in pipeline.rows(
            "SELECT reason_code FROM {db}.quarantine FINAL WHERE source_partition = 0 ORDER BY source_offset"
        )
    ]
    assert reasons[:2] == ["UNKNOWN_FINGERPRINT", "NOT_SINGLE_OBJECT"], f"found {reasons}"
    raw_values = {r[0] for r in pipeline.rows("SELECT raw_value FROM {db}.quarantine FINAL")}
    assert b"not even single-object" in raw_values, "quarantine must keep the raw bytes"
    assert pipeline.count("lineage_entries") == total
