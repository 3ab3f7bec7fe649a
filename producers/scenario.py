"""The demo's multi-agent scenario: orchestrators, tools, sub-agents, external APIs, and misbehaviour."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from lineage.ids import uuid7
from lineage.model import EventKind, Runtime
from producers.emitter import Emitter
from producers.gate import AuthorizationDenied, Execution, Gate, Grant, TraceContext

MEASUREMENT = "sha256:" + "ab" * 32
TOOLS = [
    ("tool.call:search", "web:search"),
    ("tool.call:read_file", "fs:reports/q3.pdf"),
    ("tool.call:query_db", "prod-db:crm/accounts"),
    ("tool.call:summarize", "llm:summarizer"),
]
APIS = [("api.call", "api:payments"), ("api.call", "api:weather"), ("api.call", "api:crm")]
MISBEHAVIOURS = (
    "unauthorized",
    "after_deny",
    "expired",
    "recursive",
    "forged_key",
    "untrusted_authorizer",
)


@dataclass
class ScenarioReport:
    """What the scenario emitted, and which misbehaviour it injected on purpose."""

    workflows: list[str] = field(default_factory=list)
    events: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    forged_events: int = 0
    misbehaving_workflows: dict[str, str] = field(default_factory=dict)


@dataclass
class Emitters:
    """The services taking part: the orchestrator runs the gate (authorizer key)."""

    orchestrator: Emitter
    tools: Emitter
    subagents: Emitter
    rogue: Emitter | None = None


class Scenario:
    """Generates realistic workflows until about ``events`` events have been emitted."""

    def __init__(self, emitters: Emitters, gate: Gate, *, seed: int = 7) -> None:
        self.e = emitters
        self.gate = gate
        self.rng = random.Random(seed)
        self.report = ScenarioReport()

    def _count(self) -> int:
        return sum(x.emitted for x in (self.e.orchestrator, self.e.tools, self.e.subagents))

    def run(
        self,
        events: int,
        workflows: int,
        *,
        misbehave: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> ScenarioReport:
        per_workflow = max(events // max(workflows, 1), 8)
        bad = list(MISBEHAVIOURS) if misbehave else []
        for i in range(workflows):
            kind = bad[i] if i < len(bad) else None
            self.workflow(per_workflow, kind)
            if progress:
                progress(self._count())
        self.report.events = self._count()
        return self.report

    def _runtime(self, agent: str) -> Runtime:
        return Runtime(
            host=f"node-{self.rng.randint(1, 4)}",
            image_digest="sha256:" + "cd" * 32,
            attestation_type="tpm2-quote",
            measurement=MEASUREMENT,
        )

    def workflow(self, budget: int, misbehaviour: str | None = None) -> str:
        wid = f"wf-{uuid7()}"
        self.report.workflows.append(wid)
        orch, agent = self.e.orchestrator, "agent:orchestrator"
        trace = TraceContext.new()
        start = orch.emit(
            workflow_id=wid,
            kind=EventKind.WORKFLOW_STARTED,
            principal=agent,
            agent_id=agent,
            action="workflow.start",
            model_id="gpt-4.1",
            model_version="2025-04-14",
            trace_id=trace.trace_id,
            span_id=trace.span_id,
            attributes={"user": "user:alice"},
        )
        orch.emit(
            workflow_id=wid,
            kind=EventKind.ATTESTATION,
            principal=agent,
            agent_id=agent,
            action="runtime.attest",
            parent_event_id=start.event_id,
            runtime=self._runtime(agent),
        )
        used = 2
        while used < budget - 1:
            if self.rng.random() < 0.7:
                used += self._tool_call(wid, start.event_id, agent, trace)
            else:
                used += self._subagent(wid, start.event_id, trace)
        if misbehaviour:
            self.report.injected[misbehaviour] += 1
            self.report.misbehaving_workflows[wid] = misbehaviour
            getattr(self, f"_bad_{misbehaviour}")(wid, start.event_id, trace)
        orch.emit(
            workflow_id=wid,
            kind=EventKind.WORKFLOW_COMPLETED,
            principal=agent,
            agent_id=agent,
            action="workflow.complete",
            parent_event_id=start.event_id,
        )
        return wid

    def _tool_call(self, wid: str, parent: str, agent: str, trace: TraceContext) -> int:
        action, resource = self.rng.choice(TOOLS + APIS)
        grant = self.gate.authorize(
            workflow_id=wid,
            principal=agent,
            action=action,
            resource=resource,
            agent_id=agent,
            parent_event_id=parent,
            trace=trace.child(),
        )
        with self.gate.execution(
            grant, principal=agent, agent_id=agent, runtime=self._runtime(agent)
        ) as ex:
            self._access(wid, ex, grant, agent)
        return 4

    def _access(self, wid: str, ex: Execution, grant: Grant, agent: str) -> None:
        """The tool service, a separate emitter, records the system it touched downstream."""
        self.e.tools.emit(
            workflow_id=wid,
            kind=EventKind.RESOURCE_ACCESS,
            principal=agent,
            agent_id="tool-runner",
            action=grant.decision.action,
            resource=grant.decision.resource,
            parent_event_id=ex.event_id,
            authorization_id=grant.event.event_id,
            trace_id=ex.trace.trace_id,
            span_id=ex.trace.child().span_id,
            attributes={"traceparent": ex.trace.traceparent},
        )

    def _subagent(self, wid: str, parent: str, trace: TraceContext, depth: int = 1) -> int:
        orch_agent = "agent:orchestrator"
        sub = f"agent:researcher-{self.rng.randint(1, 3)}"
        grant = self.gate.authorize(
            workflow_id=wid,
            principal=orch_agent,
            action="tool.call:spawn_agent",
            resource=sub,
            agent_id=orch_agent,
            parent_event_id=parent,
            trace=trace.child(),
        )
        used = 4
        with self.gate.execution(
            grant, principal=orch_agent, agent_id=orch_agent, runtime=self._runtime(orch_agent)
        ) as ex:
            action, resource = self.rng.choice(TOOLS)
            # A third of the sub-agents run as their own workflow, called from this one.
            child = self.rng.random() < 0.33
            cwid = f"{wid}/sub-{self.rng.randint(0, 10**6)}" if child else wid
            if child:
                self.report.workflows.append(cwid)
            g2 = self.gate.authorize(
                workflow_id=cwid,
                principal=sub,
                action=action,
                resource=resource,
                agent_id=sub,
                parent_event_id=ex.event_id,
                trace=ex.trace,
                parent_workflow_id=wid if child else None,
            )
            started = self.e.subagents.emit(
                workflow_id=cwid,
                kind=EventKind.EXECUTION_STARTED,
                principal=sub,
                agent_id=sub,
                action=action,
                resource=resource,
                parent_event_id=g2.event.event_id,
                authorization_id=g2.event.event_id,
                runtime=self._runtime(sub),
                trace_id=ex.trace.trace_id,
                span_id=ex.trace.child().span_id,
                model_id="claude-sonnet",
                model_version="4.5",
            )
            completed = self.e.subagents.emit(
                workflow_id=cwid,
                kind=EventKind.EXECUTION_COMPLETED,
                principal=sub,
                agent_id=sub,
                action=action,
                resource=resource,
                parent_event_id=started.event_id,
                authorization_id=g2.event.event_id,
                runtime=self._runtime(sub),
                output_digest="sha256:" + uuid7().replace("-", "")[:32],
            )
            used += 3
            if child:  # the sub-agent's own workflow ends with its run (the processor then
                # shrinks its state like any completed workflow's)
                self.e.subagents.emit(
                    workflow_id=cwid,
                    kind=EventKind.WORKFLOW_COMPLETED,
                    principal=sub,
                    agent_id=sub,
                    action="workflow.complete",
                    parent_event_id=completed.event_id,
                )
                used += 1
        return used

    # -- injected misbehaviour ---------------------------------------------

    def _rogue_start(
        self,
        wid: str,
        *,
        parent: str,
        auth: str | None = None,
        action: str = "tool.call:search",
        resource: str = "web:search",
        event_time: int | None = None,
    ) -> None:
        """The tool service starts an execution on its own, bypassing the gate."""
        agent = "agent:orchestrator"
        self.e.tools.emit(
            workflow_id=wid,
            kind=EventKind.EXECUTION_STARTED,
            principal=agent,
            agent_id=agent,
            action=action,
            resource=resource,
            parent_event_id=parent,
            authorization_id=auth,
            runtime=self._runtime(agent),
            event_time=event_time,
        )

    def _bad_unauthorized(self, wid: str, parent: str, trace: TraceContext) -> None:
        self._rogue_start(wid, parent=parent)

    def _bad_after_deny(self, wid: str, parent: str, trace: TraceContext) -> None:
        agent = "agent:orchestrator"
        try:
            self.gate.authorize(
                workflow_id=wid,
                principal=agent,
                action="tool.call:delete_records",
                resource="prod-db:crm/accounts",
                agent_id=agent,
                parent_event_id=parent,
            )
        except AuthorizationDenied as denied:
            self._rogue_start(
                wid,
                parent=denied.event.event_id,
                auth=denied.event.event_id,
                action="tool.call:delete_records",
                resource="prod-db:crm/accounts",
            )

    def _bad_expired(self, wid: str, parent: str, trace: TraceContext) -> None:
        agent = "agent:orchestrator"
        grant = self.gate.authorize(
            workflow_id=wid,
            principal=agent,
            action="tool.call:search",
            resource="web:search",
            agent_id=agent,
            parent_event_id=parent,
        )
        self._rogue_start(
            wid,
            parent=grant.event.event_id,
            auth=grant.event.event_id,
            event_time=grant.expires_at + 60_000_000,
        )

    def _bad_recursive(self, wid: str, parent: str, trace: TraceContext) -> None:
        agent = "agent:recursive-planner"
        for _ in range(10):
            grant = self.gate.authorize(
                workflow_id=wid,
                principal=agent,
                action="tool.call:spawn_agent",
                resource="agent:recursive-planner",
                agent_id=agent,
                parent_event_id=parent,
            )
            started = self.e.subagents.emit(
                workflow_id=wid,
                kind=EventKind.EXECUTION_STARTED,
                principal=agent,
                agent_id=agent,
                action="tool.call:spawn_agent",
                resource="agent:recursive-planner",
                parent_event_id=parent,
                authorization_id=grant.event.event_id,
                runtime=self._runtime(agent),
            )
            parent = started.event_id

    def _bad_forged_key(self, wid: str, parent: str, trace: TraceContext) -> None:
        if self.e.rogue is None:
            return
        for _ in range(3):
            self.e.rogue.emit(
                workflow_id=wid,
                kind=EventKind.RESOURCE_ACCESS,
                principal="agent:orchestrator",
                agent_id="agent:orchestrator",
                action="tool.call:read_file",
                resource="fs:reports/q3.pdf",
                parent_event_id=parent,
            )
            self.report.forged_events += 1

    def _bad_untrusted_authorizer(self, wid: str, parent: str, trace: TraceContext) -> None:
        agent = "agent:orchestrator"
        decision = self.gate.policy
        from lineage.policy import evaluate

        d = evaluate(
            decision, principal=agent, action="tool.call:search", resource="web:search", context={}
        )
        fake = self.e.tools.emit(
            workflow_id=wid,
            kind=EventKind.AUTHORIZATION_DECISION,
            principal=agent,
            agent_id=agent,
            action="tool.call:search",
            resource="web:search",
            parent_event_id=parent,
            authorization=d.to_authorization(expires_at=self.e.tools.clock() + 300_000_000),
        )
        self._rogue_start(wid, parent=fake.event_id, auth=fake.event_id)
