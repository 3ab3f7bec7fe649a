"""Runtime Governance Demo actions: the scenario, single gated agent steps, and a misbehaving tool."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lineage.config import Settings
from lineage.ids import uuid7
from lineage.keys import Role, Signer
from lineage.model import EventKind, Runtime
from lineage.policy import PolicySet, evaluate
from producers.containment import ContainmentWatcher
from producers.emitter import Emitter
from producers.gate import AuthorizationDenied, Gate, GateError, TraceContext
from producers.scenario import MEASUREMENT, Emitters, Scenario

AGENT = "agent:orchestrator"
MISBEHAVIOURS = {
    "bypass_gate": "the tool service starts a tool call without asking the gate "
    "(UNAUTHORIZED_EXECUTION, HIGH)",
    "self_authorized": "the tool service signs its own ALLOW and runs the call "
    "(UNTRUSTED_AUTHORIZER, CRITICAL: the workflow is contained)",
}


@dataclass
class DemoLog:
    """What the demo did, newest last, for the page."""

    items: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=300))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **item: Any) -> dict[str, Any]:
        item["at"] = time.time()
        with self.lock:
            item["n"] = (self.items[-1]["n"] + 1) if self.items else 1
            self.items.append(item)
        return item

    def since(self, n: int) -> list[dict[str, Any]]:
        with self.lock:
            return [i for i in self.items if i["n"] > n]


class DemoRunner:
    """Emitters, a gate with a containment watcher, and the scenario, against the running stack."""

    def __init__(
        self, settings: Settings, bootstrap: str, signers: dict[str, Signer], policy: PolicySet
    ) -> None:
        def emitter(signer: Signer) -> Emitter:
            return Emitter(
                bootstrap=bootstrap,
                topic=settings.topics.events,
                signer=signer,
                seal_every=settings.seal_every_events,
                seal_ms=settings.seal_every_ms,
            )

        rogue, _ = Signer.generate_ephemeral("tool-runner", Role.EMITTER)
        self.orch = emitter(signers["orchestrator"])
        self.tools = emitter(signers["tool-runner"])
        self.subs = emitter(signers["subagents"])
        self.rogue = emitter(rogue)
        self.watcher = ContainmentWatcher(
            bootstrap,
            settings.topics.control,
            group=f"{settings.topic_prefix}-demo-{uuid.uuid4().hex[:8]}",
        )
        self.policy = policy
        self.gate = Gate(self.orch, policy, containment=self.watcher)
        self.log = DemoLog()
        self._lock = threading.Lock()
        self._scenario_thread: threading.Thread | None = None

    def close(self) -> None:
        if self._scenario_thread is not None:
            self._scenario_thread.join(60)
        for e in (self.orch, self.tools, self.subs, self.rogue):
            e.close(10)
        self.watcher.close()

    @property
    def scenario_running(self) -> bool:
        return self._scenario_thread is not None and self._scenario_thread.is_alive()

    def run_scenario(self, events: int, workflows: int) -> dict[str, Any]:
        """Start the scenario in the background (one run at a time)."""
        if self.scenario_running:
            raise GateError("the scenario is already running")

        def run() -> None:
            with self._lock:
                scenario = Scenario(
                    Emitters(self.orch, self.tools, self.subs, self.rogue),
                    self.gate,
                    seed=int(time.time()),
                )
                try:
                    report = scenario.run(events, workflows)
                    for e in (self.orch, self.tools, self.subs, self.rogue):
                        e.flush(30)
                    self.log.add(
                        kind="scenario",
                        status="done",
                        events=report.events,
                        workflows=len(report.workflows),
                        injected=dict(report.injected),
                        example=report.workflows[0] if report.workflows else "",
                    )
                except Exception as exc:
                    self.log.add(kind="scenario", status="failed", error=str(exc))

        self.log.add(kind="scenario", status="started", events=events, workflows=workflows)
        self._scenario_thread = threading.Thread(target=run, name="demo-scenario", daemon=True)
        self._scenario_thread.start()
        return {"started": True, "events": events, "workflows": workflows}

    def _runtime(self) -> Runtime:
        return Runtime(
            host="node-1",
            image_digest="sha256:" + "cd" * 32,
            attestation_type="tpm2-quote",
            measurement=MEASUREMENT,
        )

    def start_workflow(self) -> dict[str, Any]:
        """Begin a workflow: WORKFLOW_STARTED and the orchestrator's attestation."""
        with self._lock:
            wid = f"wf-demo-{uuid7()}"
            trace = TraceContext.new()
            start = self.orch.emit(
                workflow_id=wid,
                kind=EventKind.WORKFLOW_STARTED,
                principal=AGENT,
                agent_id=AGENT,
                action="workflow.start",
                trace_id=trace.trace_id,
                span_id=trace.span_id,
            )
            self.orch.emit(
                workflow_id=wid,
                kind=EventKind.ATTESTATION,
                principal=AGENT,
                agent_id=AGENT,
                action="runtime.attest",
                parent_event_id=start.event_id,
                runtime=self._runtime(),
            )
            self.orch.flush(10)
        return self.log.add(
            kind="workflow", workflow_id=wid, root_event_id=start.event_id, status="started"
        )

    def step(
        self, workflow_id: str, root_event_id: str, action: str, resource: str
    ) -> dict[str, Any]:
        """One agent step through the gate: ALLOW runs it, DENY and a contained workflow refuse it."""
        with self._lock:
            t0 = time.monotonic()
            try:
                grant = self.gate.authorize(
                    workflow_id=workflow_id,
                    principal=AGENT,
                    action=action,
                    resource=resource,
                    agent_id=AGENT,
                    parent_event_id=root_event_id,
                )
            except AuthorizationDenied as denied:
                return self.log.add(
                    kind="step",
                    workflow_id=workflow_id,
                    action=action,
                    resource=resource,
                    decision="DENY",
                    event_id=denied.event.event_id,
                    policies=list(denied.decision.determining_policies),
                    ms=round((time.monotonic() - t0) * 1000, 1),
                )
            except GateError as exc:
                return self.log.add(
                    kind="step",
                    workflow_id=workflow_id,
                    action=action,
                    resource=resource,
                    decision="REFUSED",
                    reason=str(exc),
                    ms=round((time.monotonic() - t0) * 1000, 1),
                )
            with self.gate.execution(
                grant, principal=AGENT, agent_id=AGENT, runtime=self._runtime()
            ) as ex:
                self.tools.emit(
                    workflow_id=workflow_id,
                    kind=EventKind.RESOURCE_ACCESS,
                    principal=AGENT,
                    agent_id="tool-runner",
                    action=action,
                    resource=resource,
                    parent_event_id=ex.event_id,
                    authorization_id=grant.event.event_id,
                )
            self.orch.flush(10)
            self.tools.flush(10)
            return self.log.add(
                kind="step",
                workflow_id=workflow_id,
                action=action,
                resource=resource,
                decision="ALLOW",
                event_id=grant.event.event_id,
                policies=list(grant.decision.determining_policies),
                ms=round((time.monotonic() - t0) * 1000, 1),
            )

    def misbehave(self, workflow_id: str, root_event_id: str, how: str) -> dict[str, Any]:
        """The tool service acts behind the gate's back (``how`` is a MISBEHAVIOURS key)."""
        if how not in MISBEHAVIOURS:
            raise ValueError(f"how: expected one of {sorted(MISBEHAVIOURS)}, found {how!r}")
        with self._lock:
            parent, auth = root_event_id, None
            if how == "self_authorized":
                d = evaluate(
                    self.policy,
                    principal=AGENT,
                    action="tool.call:search",
                    resource="web:search",
                    context={},
                )
                fake = self.tools.emit(
                    workflow_id=workflow_id,
                    kind=EventKind.AUTHORIZATION_DECISION,
                    principal=AGENT,
                    agent_id=AGENT,
                    action="tool.call:search",
                    resource="web:search",
                    parent_event_id=root_event_id,
                    authorization=d.to_authorization(expires_at=self.tools.clock() + 300_000_000),
                )
                parent = auth = fake.event_id
            started = self.tools.emit(
                workflow_id=workflow_id,
                kind=EventKind.EXECUTION_STARTED,
                principal=AGENT,
                agent_id=AGENT,
                action="tool.call:search",
                resource="web:search",
                parent_event_id=parent,
                authorization_id=auth,
                runtime=self._runtime(),
            )
            self.tools.flush(10)
        return self.log.add(
            kind="misbehaviour",
            how=how,
            explanation=MISBEHAVIOURS[how],
            workflow_id=workflow_id,
            event_id=started.event_id,
        )
