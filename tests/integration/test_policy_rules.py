"""Every stream policy rule fires from real events through the real broker; compliant work raises none."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.embedded import Broker
from lineage.model import EventKind, Runtime, ViolationType
from lineage.policy import evaluate
from producers.emitter import Emitter
from producers.gate import AuthorizationDenied, Gate
from tests.integration.conftest import Pipeline, wait_for

GOOD = Runtime(host="node-1", attestation_type="tpm2-quote", measurement="sha256:" + "ab" * 32)
OTHER = Runtime(host="node-2", attestation_type="tpm2-quote", measurement="sha256:" + "cd" * 32)
AGENT = "agent:planner"


class Rules:
    """One workflow per rule, emitted by an authorizer (gate) and a plain emitter."""

    def __init__(self, gate: Gate, tools: Emitter) -> None:
        self.gate = gate
        self.tools = tools
        self.expected: dict[str, set[ViolationType]] = {}

    def _start(self, name: str) -> tuple[str, str]:
        wid = f"wf-{name}-{uuid.uuid4().hex[:6]}"
        ev = self.gate.emitter.emit(
            workflow_id=wid,
            kind=EventKind.WORKFLOW_STARTED,
            principal=AGENT,
            agent_id=AGENT,
            action="workflow.start",
        )
        return wid, ev.event_id

    def _exec(
        self,
        wid: str,
        parent: str,
        *,
        auth: str | None,
        action: str = "tool.call:search",
        resource: str | None = "web:search",
        runtime: Runtime | None = GOOD,
        agent: str = AGENT,
        event_time: int | None = None,
    ) -> str:
        return self.tools.emit(
            workflow_id=wid,
            kind=EventKind.EXECUTION_STARTED,
            principal=agent,
            agent_id=agent,
            action=action,
            resource=resource,
            parent_event_id=parent,
            authorization_id=auth,
            runtime=runtime,
            event_time=event_time,
        ).event_id

    def _allow(
        self, wid: str, parent: str, action: str = "tool.call:search", resource: str = "web:search"
    ) -> Any:
        return self.gate.authorize(
            workflow_id=wid,
            principal=AGENT,
            action=action,
            resource=resource,
            agent_id=AGENT,
            parent_event_id=parent,
        )

    def run(self) -> None:
        wid, root = self._start("compliant")
        g = self._allow(wid, root)
        with self.gate.execution(g, principal=AGENT, agent_id=AGENT, runtime=GOOD):
            pass
        self.expected[wid] = set()

        wid, root = self._start("unauthorized")
        self._exec(wid, root, auth=None)
        self.expected[wid] = {ViolationType.UNAUTHORIZED_EXECUTION}

        wid, root = self._start("denied")
        try:
            self._allow(
                wid, root, action="tool.call:delete_records", resource="prod-db:crm/accounts"
            )
            raise AssertionError("the gate must deny tool.call:delete_records")
        except AuthorizationDenied as denied:
            self._exec(
                wid,
                denied.event.event_id,
                auth=denied.event.event_id,
                action="tool.call:delete_records",
                resource="prod-db:crm/accounts",
            )
        self.expected[wid] = {ViolationType.DENIED_EXECUTION}

        wid, root = self._start("expired")
        g = self._allow(wid, root)
        self._exec(wid, g.event.event_id, auth=g.event.event_id, event_time=g.expires_at + 1)
        self.expected[wid] = {ViolationType.EXPIRED_AUTHORIZATION}

        wid, root = self._start("scope")
        g = self._allow(wid, root)
        self._exec(
            wid,
            g.event.event_id,
            auth=g.event.event_id,
            action="tool.call:read_file",
            resource="fs:reports/q3.pdf",
        )
        self.expected[wid] = {ViolationType.SCOPE_MISMATCH}

        wid, root = self._start("untrusted")
        d = evaluate(
            self.gate.policy,
            principal=AGENT,
            action="tool.call:search",
            resource="web:search",
            context={},
        )
        fake = self.tools.emit(
            workflow_id=wid,
            kind=EventKind.AUTHORIZATION_DECISION,
            principal=AGENT,
            agent_id=AGENT,
            action="tool.call:search",
            resource="web:search",
            parent_event_id=root,
            authorization=d.to_authorization(expires_at=self.tools.clock() + 10**9),
        )
        self._exec(wid, fake.event_id, auth=fake.event_id)
        self.expected[wid] = {ViolationType.UNTRUSTED_AUTHORIZER, ViolationType.CONTAINED_WORKFLOW}

        wid, root = self._start("missing-attestation")
        g = self._allow(wid, root)
        self._exec(wid, g.event.event_id, auth=g.event.event_id, runtime=None)
        self.expected[wid] = {ViolationType.MISSING_ATTESTATION}

        wid, root = self._start("attestation-changed")
        g = self._allow(wid, root)
        first = self._exec(wid, g.event.event_id, auth=g.event.event_id, runtime=GOOD)
        self._exec(wid, first, auth=g.event.event_id, runtime=OTHER)
        self.expected[wid] = {ViolationType.ATTESTATION_CHANGED}

        wid, root = self._start("depth")
        parent = root
        for _ in range(self.gate.policy.max_depth + 1):
            g = self._allow(wid, parent)
            parent = self._exec(wid, g.event.event_id, auth=g.event.event_id)
        self.expected[wid] = {ViolationType.DEPTH_EXCEEDED}

        wid, root = self._start("fanout")
        g = self._allow(wid, root)
        hub = self._exec(wid, g.event.event_id, auth=g.event.event_id)
        for _ in range(self.gate.policy.max_fanout + 1):
            self._exec(wid, hub, auth=g.event.event_id)
        self.expected[wid] = {ViolationType.FANOUT_EXCEEDED}

        wid, root = self._start("forbidden")
        g = self._allow(wid, root, action="tool.call:search", resource="web:search")
        self.tools.emit(
            workflow_id=wid,
            kind=EventKind.RESOURCE_ACCESS,
            principal=AGENT,
            agent_id=AGENT,
            action="tool.call:search",
            resource="secrets:vault/db-password",
            parent_event_id=g.event.event_id,
            authorization_id=g.event.event_id,
        )
        self.expected[wid] = {ViolationType.FORBIDDEN_RESOURCE, ViolationType.SCOPE_MISMATCH}


@pytest.fixture(scope="module")
def rule_run(
    broker: Broker, chdb_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Pipeline, Rules]]:
    from tests.integration.conftest import make_pipeline

    database = f"t_{uuid.uuid4().hex[:12]}"
    chdb_client.command(f"CREATE DATABASE {database}")
    p = make_pipeline(broker, chdb_client, database, Path(tmp_path_factory.mktemp("rules")))
    p.start_worker()
    p.start_sink()
    with (
        p.emitter("orchestrator", seal_every=5) as orch,
        p.emitter("tool-runner", seal_every=5) as tools,
    ):
        rules = Rules(Gate(orch, p.policy, confirm_timeout_s=10), tools)
        rules.run()
    emitted = orch.emitted + tools.emitted
    wait_for(
        lambda: p.count("lineage_entries") >= emitted, 120, f"{emitted} entries ({p.worker_log()})"
    )
    # violations reach ClickHouse on a topic of their own, possibly after the last entry
    pairs = sum(len(v) for v in rules.expected.values())

    def stored_pairs() -> int:
        sql = "SELECT uniqExact(workflow_id, violation_type) FROM {db}.violations FINAL"
        return int(p.rows(sql)[0][0])

    wait_for(lambda: stored_pairs() >= pairs, 60, f"{pairs} (workflow, violation type) pairs")
    yield p, rules
    p.stop()
    chdb_client.command(f"DROP DATABASE IF EXISTS {database}")


def _types(p: Pipeline, wid: str) -> set[ViolationType]:
    rows = p.rows(
        f"SELECT DISTINCT violation_type FROM {{db}}.violations FINAL WHERE workflow_id = '{wid}'"
    )
    return {ViolationType(r[0].decode()) for r in rows}


@pytest.mark.parametrize(
    "name",
    [
        "compliant",
        "unauthorized",
        "denied",
        "expired",
        "scope",
        "untrusted",
        "missing-attestation",
        "attestation-changed",
        "depth",
        "fanout",
        "forbidden",
    ],
)
def test_rule(rule_run: tuple[Pipeline, Rules], name: str) -> None:
    p, rules = rule_run
    (wid,) = [w for w in rules.expected if w.startswith(f"wf-{name}-")]
    found = _types(p, wid)
    assert found == rules.expected[wid], (
        f"{name}: expected {sorted(rules.expected[wid])}, found {sorted(found)}"
    )


def test_violation_records_name_rule_policy_and_events(rule_run: tuple[Pipeline, Rules]) -> None:
    p, _ = rule_run
    rows = p.rows(
        "SELECT rule, policy_digest, workflow_id, event_id, severity, explanation "
        "FROM {db}.violations FINAL"
    )
    assert rows, "expected violations"
    for rule, digest, wid, event_id, severity, explanation in rows:
        assert rule and explanation and event_id, f"incomplete violation record {rule!r} {wid!r}"
        assert digest.decode() == p.policy.digest_hex
        assert severity.decode() in {"LOW", "MEDIUM", "HIGH", "CRITICAL"}


def test_alerts_webhook_and_containment_stop_the_gate(rule_run: tuple[Pipeline, Rules]) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from lineage.model import Containment, Violation
    from producers.containment import ContainmentWatcher
    from producers.gate import GateError
    from sinks.alerts import AlertTail, post_json, violation_json

    p, rules = rule_run
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tail = AlertTail(
        p.settings, p.bootstrap, group=f"alerts-{uuid.uuid4().hex[:6]}", from_beginning=True
    )
    items: list[Violation | Containment] = []
    try:
        expected = p.count("violations")
        wait_for(
            lambda: (
                bool(items.extend(tail.poll(0.5)))
                or sum(isinstance(i, Violation) for i in items) >= expected
            ),
            60,
            f"{expected} violations on the topic",
        )
        first = next(i for i in items if isinstance(i, Violation))
        assert post_json(f"http://127.0.0.1:{server.server_port}/alert", violation_json(first))
        assert received[0]["violation_id"] == first.violation_id
        assert received[0]["violation_type"] == first.violation_type.value
    finally:
        tail.close()
        server.shutdown()
    (untrusted,) = [w for w in rules.expected if w.startswith("wf-untrusted-")]
    contained = {i.workflow_id for i in items if isinstance(i, Containment)}
    assert untrusted in contained, (
        f"expected a containment record for {untrusted}, found {contained}"
    )
    with (
        ContainmentWatcher(
            p.bootstrap, p.settings.topics.control, group=f"gate-{uuid.uuid4().hex[:6]}"
        ) as watch,
        p.emitter("orchestrator") as orch,
    ):
        wait_for(
            lambda: watch.is_contained(untrusted) is not None,
            30,
            "the gate to learn the containment",
        )
        gate = Gate(orch, p.policy, containment=watch)
        with pytest.raises(GateError, match="is contained after UNTRUSTED_AUTHORIZER"):
            gate.authorize(
                workflow_id=untrusted,
                principal=AGENT,
                action="tool.call:search",
                resource="web:search",
            )
