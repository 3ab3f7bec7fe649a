"""The pre-execution gate: evaluate policy, record a signed decision, and wrap executions fail-closed."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from lineage.model import Containment, Decision, EventKind, ExecutionEvent, Runtime
from lineage.policy import (
    MAX_REQUEST_BYTES,
    REQUEST_ATTRIBUTE,
    GateDecision,
    PolicyEvaluationError,
    PolicySet,
    evaluate,
)
from producers.emitter import Emitter
from producers.errors import EmitterError


class ContainmentCheck(Protocol):
    def is_contained(self, workflow_id: str) -> Containment | None: ...


class GateContext(Protocol):
    """Where the gate takes trace and causality from (e.g. the current OpenTelemetry span).

    ``current()`` describes the ambient scope or returns None; ``record(event)`` is told every
    event the gate emitted in that scope (to set span attributes, say).
    """

    def current(self) -> TraceScope | None: ...

    def record(self, event: ExecutionEvent) -> None: ...


class GateError(EmitterError):
    """The gate could not decide or could not record its decision; the action must not run."""


class AuthorizationDenied(EmitterError):
    """The policy said DENY; the decision has been recorded."""

    def __init__(self, decision: GateDecision, event: ExecutionEvent) -> None:
        super().__init__(
            f"{decision.action} on {decision.resource or '-'} denied by {decision.policy_id} "
            f"({', '.join(decision.determining_policies) or 'no permit matched'})"
        )
        self.decision = decision
        self.event = event


@dataclass(frozen=True)
class TraceContext:
    """W3C trace context carried to downstream calls."""

    trace_id: str
    span_id: str

    @classmethod
    def new(cls) -> TraceContext:
        return cls(os.urandom(16).hex(), os.urandom(8).hex())

    def child(self) -> TraceContext:
        return TraceContext(self.trace_id, os.urandom(8).hex())

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"

    @classmethod
    def parse(cls, header: str) -> TraceContext:
        parts = header.split("-")
        if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
            raise ValueError(
                f"traceparent: expected 00-<32 hex>-<16 hex>-<2 hex>, found {header!r}"
            )
        return cls(parts[1], parts[2])


@dataclass(frozen=True)
class TraceScope:
    """The ambient context a GateContext supplies; unset fields fall back to the gate's defaults.

    ``execution_ids`` (started, finished), when given, are the event ids ``execution()`` uses, so
    that the owner of the context (the OpenTelemetry bridge) can name them before they exist.
    """

    trace: TraceContext
    workflow_id: str | None = None
    parent_event_id: str | None = None
    parent_workflow_id: str | None = None
    execution_ids: tuple[str, str] | None = None


@dataclass(frozen=True)
class Grant:
    """An ALLOW decision that has been recorded."""

    event: ExecutionEvent
    decision: GateDecision
    expires_at: int
    trace: TraceContext


@dataclass(frozen=True)
class Execution:
    """A running execution: pass ``event_id`` and ``trace.traceparent`` to downstream calls."""

    started: ExecutionEvent
    trace: TraceContext

    @property
    def event_id(self) -> str:
        return self.started.event_id


class Gate:
    """Pre-execution authorization for one service; its emitter should hold an authorizer key."""

    def __init__(
        self,
        emitter: Emitter,
        policy: PolicySet,
        *,
        ttl_s: float = 300.0,
        confirm_timeout_s: float | None = 10.0,
        containment: ContainmentCheck | None = None,
        context: GateContext | None = None,
    ) -> None:
        self.emitter = emitter
        self.context = context
        self.containment = containment
        self.policy = policy
        self.ttl_us = int(ttl_s * 1_000_000)
        self.confirm_timeout_s = confirm_timeout_s

    def authorize(
        self,
        *,
        workflow_id: str | None = None,
        principal: str,
        action: str,
        resource: str | None = None,
        agent_id: str | None = None,
        parent_event_id: str | None = None,
        parent_workflow_id: str | None = None,
        context: Mapping[str, str | int | bool] | None = None,
        trace: TraceContext | None = None,
    ) -> Grant:
        """Evaluate, record the decision (waiting for the broker when confirming), raise on DENY.

        A workflow contained by the processor (critical violation) is refused before evaluation.
        With a ``context``, the workflow, parent and trace not given come from its current scope.
        """
        scope = self.context.current() if self.context is not None else None
        if scope is not None:
            workflow_id = workflow_id or scope.workflow_id
            parent_event_id = parent_event_id or scope.parent_event_id
            parent_workflow_id = parent_workflow_id or scope.parent_workflow_id
            trace = trace or scope.trace
        if not workflow_id:
            raise GateError("workflow_id: expected an id (or a context that gives one), found none")
        if self.containment is not None:
            held = self.containment.is_contained(workflow_id)
            if held is not None:
                raise GateError(
                    f"workflow {workflow_id} is contained after {held.violation_type} "
                    f"(violation {held.violation_id}); no further executions"
                )
        try:
            decision = evaluate(
                self.policy,
                principal=principal,
                action=action,
                resource=resource,
                context=context or {},
            )
        except PolicyEvaluationError as exc:
            raise GateError(f"policy could not be evaluated, action not run: {exc}") from exc
        if len(decision.request) > MAX_REQUEST_BYTES:
            raise GateError(
                f"request is {len(decision.request)} bytes, at most {MAX_REQUEST_BYTES} can be "
                "recorded with the decision; action not run"
            )
        trace = trace or TraceContext.new()
        now = self.emitter.clock()
        expires_at = now + self.ttl_us
        try:
            event = self.emitter.emit(
                workflow_id=workflow_id,
                kind=EventKind.AUTHORIZATION_DECISION,
                principal=principal,
                action=action,
                resource=resource,
                agent_id=agent_id,
                parent_event_id=parent_event_id,
                parent_workflow_id=parent_workflow_id,
                authorization=decision.to_authorization(expires_at=expires_at),
                # The exact request the input digest covers: an auditor re-runs the decision.
                attributes={REQUEST_ATTRIBUTE: decision.request.decode("utf-8")},
                trace_id=trace.trace_id,
                span_id=trace.span_id,
                event_time=now,
                seal=self.confirm_timeout_s is not None,  # durable before the action: seal now
            )
            if self.confirm_timeout_s is not None:
                report = self.emitter.flush(self.confirm_timeout_s, seal=False)
                if not report.ok:
                    raise GateError(
                        f"decision could not be recorded ({report.undelivered} undelivered, "
                        f"{report.failed} failed); action not run"
                    )
        except EmitterError as exc:
            if isinstance(exc, GateError):
                raise
            raise GateError(f"decision could not be recorded, action not run: {exc}") from exc
        if self.context is not None:
            self.context.record(event)
        if decision.decision is Decision.DENY:
            raise AuthorizationDenied(decision, event)
        return Grant(event, decision, expires_at, trace)

    @contextmanager
    def execution(
        self,
        grant: Grant,
        *,
        principal: str,
        agent_id: str | None = None,
        runtime: Runtime | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> Iterator[Execution]:
        """Emit EXECUTION_STARTED, run the body, then EXECUTION_COMPLETED or EXECUTION_FAILED."""
        if grant.decision.decision is not Decision.ALLOW:
            raise GateError("an execution needs an ALLOW grant")
        if self.emitter.clock() > grant.expires_at:
            raise GateError("the authorization has expired; ask again")
        ev = grant.event
        scope = self.context.current() if self.context is not None else None
        trace = scope.trace if scope is not None else grant.trace.child()
        ids = scope.execution_ids if scope is not None else None
        started = self.emitter.emit(
            event_id=ids[0] if ids else None,
            workflow_id=ev.workflow_id,
            kind=EventKind.EXECUTION_STARTED,
            principal=principal,
            action=grant.decision.action,
            resource=grant.decision.resource,
            agent_id=agent_id,
            parent_event_id=ev.event_id,
            authorization_id=ev.event_id,
            runtime=runtime,
            trace_id=trace.trace_id,
            span_id=trace.span_id,
            attributes=attributes,
        )
        if self.context is not None:
            self.context.record(started)
        handle = Execution(started, trace)

        def finish(kind: EventKind, attrs: Mapping[str, str] | None = None) -> None:
            done = self.emitter.emit(
                event_id=ids[1] if ids else None,
                workflow_id=ev.workflow_id,
                kind=kind,
                principal=principal,
                action=grant.decision.action,
                resource=grant.decision.resource,
                agent_id=agent_id,
                parent_event_id=started.event_id,
                authorization_id=ev.event_id,
                runtime=runtime,
                trace_id=trace.trace_id,
                span_id=trace.span_id,
                attributes=attrs,
            )
            if self.context is not None:
                self.context.record(done)

        try:
            yield handle
        except BaseException as exc:
            finish(EventKind.EXECUTION_FAILED, {"error": type(exc).__name__})
            raise
        finish(EventKind.EXECUTION_COMPLETED)
