"""The OTel-instrumented example agent through the bridge on the embedded stack.

Checks the causal DAG in ClickHouse, that its exported bundle passes ``lineage verify``, and that
a misbehaving run yields the same violations as the same misbehaviour through the SDK.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from openlineage.client import OpenLineageClient
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from examples.otel_agent import POLICY_FILE, TRACER_NAME, run_agent
from infra.embedded import Broker, create_topics, start_broker
from lineage.bundle import BundleError, write_bundle
from lineage.keys import KeyRegistry, Role, Signer
from lineage.model import EventKind, Runtime
from lineage.policy import PolicySet
from lineage.verify import checkpoint_vkeys
from lineage_cli.evidence import export_bundle
from lineage_cli.openlineage_export import FACET_KEY, ExportState, export, transport_config
from producers.emitter import Emitter
from producers.errors import BackpressureTimeout
from producers.gate import AuthorizationDenied, Gate
from producers.otel import LineageSpanProcessor
from tests.integration.conftest import Pipeline, make_pipeline, wait_for

MEASUREMENT = "sha256:" + "ab" * 32
RESOURCE = Resource.create(
    {
        "service.name": "support-agent",
        "host.name": "node-1",
        "container.image.id": "sha256:" + "cd" * 32,
        "lineage.attestation.type": "tpm2-quote",
        "lineage.attestation.measurement": MEASUREMENT,
    }
)


def entries(p: Pipeline, workflow: str) -> dict[str, dict[str, Any]]:
    rows = p.rows(
        "SELECT event_id, parent_event_id, kind, action, resource, chain_seq, trace_id, span_id, "
        "verification, attributes['error.type'] FROM {db}.lineage_entries FINAL "
        f"WHERE workflow_id = '{workflow}'"
    )
    cols = ("id", "parent", "kind", "action", "resource", "seq", "trace", "span", "ver", "error")
    return {
        r[0].decode(): dict(
            zip(cols, [v.decode() if isinstance(v, bytes) else v for v in r], strict=True)
        )
        for r in rows
    }


def violations(p: Pipeline, workflow: str) -> Counter[tuple[str, str, str]]:
    rows = p.rows(
        "SELECT v.violation_type, e.kind, e.action FROM {db}.violations AS v FINAL "
        "JOIN (SELECT event_id, kind, action FROM {db}.lineage_entries FINAL) AS e "
        f"ON v.event_id = e.event_id WHERE v.workflow_id = '{workflow}'"
    )
    return Counter(tuple(x.decode() if isinstance(x, bytes) else x for x in r) for r in rows)  # type: ignore[misc]


def sdk_misbehaviour(gate: Gate, tools: Emitter, workflow: str) -> None:
    """The same two misbehaviours through the SDK: a tool run with no grant, and one after a DENY."""
    agent = "agent:orchestrator"
    rt = Runtime(host="node-1", attestation_type="tpm2-quote", measurement=MEASUREMENT)
    start = gate.emitter.emit(
        workflow_id=workflow,
        kind=EventKind.WORKFLOW_STARTED,
        principal=agent,
        agent_id=agent,
        action="workflow.start",
    )
    rogue = tools.emit(
        workflow_id=workflow,
        kind=EventKind.EXECUTION_STARTED,
        principal=agent,
        agent_id=agent,
        action="tool.call:search",
        resource="search.example.com",
        parent_event_id=start.event_id,
        runtime=rt,
    )
    tools.emit(
        workflow_id=workflow,
        kind=EventKind.RESOURCE_ACCESS,
        principal=agent,
        agent_id=agent,
        action="tool.call:search",
        resource="search.example.com",
        parent_event_id=rogue.event_id,
    )
    try:
        gate.authorize(
            workflow_id=workflow,
            principal=agent,
            action="tool.call:delete_records",
            resource="postgresql:crm",
            parent_event_id=start.event_id,
        )
    except AuthorizationDenied as denied:
        tools.emit(
            workflow_id=workflow,
            kind=EventKind.EXECUTION_STARTED,
            principal=agent,
            agent_id=agent,
            action="tool.call:delete_records",
            resource="postgresql:crm",
            parent_event_id=denied.event.event_id,
            authorization_id=denied.event.event_id,
            runtime=rt,
        )


def test_otel_agent_dag_verifies_and_misbehaviour_matches_sdk(
    broker: Broker,
    chdb_client: Any,
    ch_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINEAGE_POLICY_FILE", str(POLICY_FILE))  # the worker inherits it
    p = make_pipeline(broker, chdb_client, ch_database, tmp_path)
    assert p.settings.resolved_policy_file == POLICY_FILE
    emitter = p.emitter("orchestrator", seal_ms=50)
    tools = p.emitter("tool-runner", seal_ms=50)
    try:
        p.start_worker()
        p.start_sink()
        provider = TracerProvider(resource=RESOURCE)
        bridge = LineageSpanProcessor(emitter)
        provider.add_span_processor(bridge)
        tracer = provider.get_tracer(TRACER_NAME)  # not the global provider: other tests own that
        gate = Gate(emitter, p.policy, context=bridge)

        good = "otel-" + run_agent(tracer, gate.authorize)
        bad = "otel-" + run_agent(
            tracer, gate.authorize, misbehaviours=("unauthorized", "after_deny")
        )
        sdk = f"wf-sdk-{uuid.uuid4().hex[:8]}"
        sdk_misbehaviour(Gate(emitter, p.policy), tools, sdk)

        assert provider.force_flush(30_000), bridge.report()
        assert tools.flush(30).ok
        report = bridge.report()
        assert report.ok and report.failed == 0, report
        total = emitter.emitted + tools.emitted
        wait_for(
            lambda: p.count("lineage_entries") >= total,
            120,
            f"{total} entries (worker log: {p.worker_log()})",
        )
        assert p.count("lineage_entries") == total

        dag = entries(p, good)
        assert len(dag) == 21, sorted((e["kind"], e["action"]) for e in dag.values())
        trace_id = good.removeprefix("otel-")
        assert {e["trace"] for e in dag.values()} == {trace_id}, "events join the trace on trace_id"
        assert {e["ver"] for e in dag.values()} == {"VERIFIED"}
        for e in dag.values():
            if e["parent"]:
                assert e["parent"] in dag, f"{e['kind']} {e['action']}: parent not in the workflow"
                assert dag[e["parent"]]["seq"] < e["seq"], "chained after its parent"

        def one(kind: str, action: str) -> dict[str, Any]:
            found = [e for e in dag.values() if e["kind"] == kind and e["action"] == action]
            assert len(found) == 1, f"expected one {kind} {action}, found {len(found)}"
            return found[0]

        root = one("WORKFLOW_STARTED", "workflow.start")
        assert root["parent"] == ""
        assert one("WORKFLOW_COMPLETED", "workflow.complete")["parent"] == root["id"]

        def execution(action: str, under: dict[str, Any], end: str = "EXECUTION_COMPLETED") -> Any:
            started = one("EXECUTION_STARTED", action)
            decision = dag[started["parent"]]
            assert (decision["kind"], decision["action"]) == ("AUTHORIZATION_DECISION", action)
            assert decision["parent"] == under["id"], f"{action}: decided under its caller"
            assert decision["span"] == started["span"], "decision recorded on the tool's span"
            assert one(end, action)["parent"] == started["id"]
            return started

        for tool in ("tool.call:search", "tool.call:read_report"):
            started = execution(tool, root)
            access = [e for e in dag.values() if e["parent"] == started["id"]]
            assert [a["kind"] for a in access if a["kind"] == "RESOURCE_ACCESS"] == [
                "RESOURCE_ACCESS"
            ]
        sub = execution("agent.invoke:researcher", root)
        execution("tool.call:fetch_paper", sub)
        failed = execution("tool.call:query_db", root, end="EXECUTION_FAILED")
        assert one("EXECUTION_FAILED", "tool.call:query_db")["error"].endswith("DatabaseTimeout")
        db = [
            e
            for e in dag.values()
            if e["parent"] == failed["id"] and e["kind"] == "RESOURCE_ACCESS"
        ]
        assert [(a["resource"], a["error"]) for a in db] == [("postgresql:crm/accounts", "timeout")]

        wait_for(lambda: p.count("violations", f"workflow_id = '{bad}'") >= 3, 60, "violations")
        wait_for(lambda: p.count("violations", f"workflow_id = '{sdk}'") >= 3, 60, "violations")
        otel_found = violations(p, bad)
        assert otel_found == violations(p, sdk), "the bridge and the SDK see the same misbehaviour"
        assert otel_found == Counter(
            {
                ("UNAUTHORIZED_EXECUTION", "EXECUTION_STARTED", "tool.call:search"): 1,
                ("UNAUTHORIZED_EXECUTION", "RESOURCE_ACCESS", "tool.call:search"): 1,
                ("DENIED_EXECUTION", "EXECUTION_STARTED", "tool.call:delete_records"): 1,
            }
        )
        assert p.count("violations", f"workflow_id = '{good}'") == 0

        registry = KeyRegistry.load(p.settings.resolved_keys_file)

        def bundle() -> dict[str, Any]:
            assert p.sink is not None
            with p.sink.sink.lock:
                return export_bundle(
                    chdb_client,
                    ch_database,
                    good,
                    registry,
                    policy_sets=[PolicySet.files(POLICY_FILE)],  # re-run under the agent's policy
                )

        def covered() -> bool:
            try:
                bundle()  # refuses entries no signed checkpoint covers yet
            except BundleError:
                return False
            return True

        wait_for(covered, 60, "a checkpoint covering the workflow")
        out = tmp_path / "otel-bundle.json"
        write_bundle(bundle(), out)

        def lineage_verify(path: Path) -> subprocess.CompletedProcess[str]:
            keys = (
                arg for vkey in checkpoint_vkeys(registry) for arg in ("--checkpoint-key", vkey)
            )
            return subprocess.run(
                [
                    *(sys.executable, "-m", "lineage_cli", "verify", str(path)),
                    *("--registry", str(p.settings.resolved_keys_file), *keys),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )

        verify = lineage_verify(out)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "verified" in verify.stdout.lower(), verify.stdout
        doc = json.loads(out.read_text())
        event = doc["entries"][3]["event"]
        doc["entries"][3]["event"] = event[:20] + ("A" if event[20] != "A" else "B") + event[21:]
        tampered = tmp_path / "tampered.json"
        tampered.write_text(json.dumps(doc))
        assert lineage_verify(tampered).returncode == 1, "one changed byte must fail verification"

        ol_file = tmp_path / "openlineage.jsonl"
        ol = OpenLineageClient(config={"transport": transport_config("file", file=ol_file)})
        assert p.sink is not None
        with p.sink.sink.lock:
            sent = list(export(chdb_client, ch_database, ol, ExportState(None), namespace="agents"))
        assert {wf.workflow_id for wf in sent} == {good, bad}, "the SDK workflow never completed"
        events = [json.loads(line) for line in ol_file.read_text().splitlines()]
        runs = {e["run"]["facets"][FACET_KEY]["workflowId"]: e for e in events}
        assert runs[good]["job"]["name"] == "agent:orchestrator"
        assert runs[good]["run"]["facets"][FACET_KEY]["violations"] == 0
        assert runs[bad]["run"]["facets"][FACET_KEY]["violations"] == 3
        inputs = {(d["namespace"], d["name"]) for d in runs[good]["inputs"]}
        assert ("postgresql", "crm/accounts") in inputs and (
            "search.example.com",
            "search.example.com",
        ) in inputs
    finally:
        emitter.close(5)
        tools.close(5)
        p.stop()


def test_bridge_reports_backpressure_when_the_broker_is_down(tmp_path: Path) -> None:
    own = start_broker(tmp_path / "b.log")
    create_topics(own.bootstrap, ["down.events"], 2)
    signer, _ = Signer.generate_ephemeral("svc", Role.EMITTER)
    em = Emitter(
        bootstrap=own.bootstrap,
        topic="down.events",
        signer=signer,
        queue_max=5,
        block_timeout_s=0.5,
        seal_every=1,  # one sealed-batch record per event: 10 records overflow a queue of 5
        producer_config={"message.timeout.ms": 60_000},
    )
    own.stop()
    provider = TracerProvider(resource=RESOURCE)
    bridge = LineageSpanProcessor(em)
    provider.add_span_processor(bridge)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("invoke_agent a", attributes={"gen_ai.agent.name": "a"}):
        for i in range(4):
            with tracer.start_as_current_span(
                f"execute_tool t{i}", attributes={"gen_ai.operation.name": "execute_tool"}
            ):
                pass  # the agent never sees the bridge fail
    report = bridge.report()
    assert report.failures.get("BackpressureTimeout", 0) >= 1, report
    assert report.events + report.failed == 2 + 4 * 2, "every event either queued or counted"
    assert not provider.force_flush(1000)
    assert em._timer.is_alive(), "the seal timer must outlive a full queue (it retries the batch)"
    with contextlib.suppress(BackpressureTimeout):  # the open batch still cannot be sent
        em.close(0.5)
    assert not em._timer.is_alive(), "close() stops the timer even when its last seal fails"
    report = bridge.report()
    assert report.delivery is not None and report.delivery.undelivered == em.pending() > 0
    assert not report.ok
    provider.shutdown()  # logs the losses; does not raise
    with pytest.raises(BackpressureTimeout):
        em.close(timeout=0.1)  # the SDK's own close cannot queue its last seal either
