"""The OpenTelemetry bridge, broker-less: spans in, execution events out of a recording emitter."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

from lineage import codec
from lineage.ids import uuid7
from lineage.model import Decision, EventKind, ExecutionEvent
from lineage.policy import PolicySet
from producers.emitter import FlushReport
from producers.errors import BackpressureTimeout
from producers.gate import AuthorizationDenied, Gate
from producers.otel import (
    AUTH_DECISION,
    AUTH_ID,
    AUTH_POLICY_DIGEST,
    OTEL_NAMESPACE,
    LineageSpanProcessor,
    OtelMapping,
    event_id_for,
)

POLICY = PolicySet.load(Path(__file__).resolve().parents[3] / "policies" / "default.toml")
SCHEMA = codec.load("execution_event")
RESOURCE = Resource.create(
    {
        "service.name": "support-agent",
        "host.name": "node-7",
        "container.image.id": "sha256:" + "cd" * 32,
        "lineage.attestation.type": "tpm2-quote",
        "lineage.attestation.measurement": "sha256:" + "ab" * 32,
    }
)


class RecordingEmitter:
    """Builds and encodes events like the Emitter does, and keeps them instead of sending."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.events: list[ExecutionEvent] = []
        self.fail = fail

    def clock(self) -> int:
        return time.time_ns() // 1000

    def emit(self, **kw: Any) -> ExecutionEvent:
        if self.fail is not None:
            raise self.fail
        kw["event_id"] = kw.get("event_id") or uuid7()
        kw["event_time"] = kw.get("event_time") or self.clock()
        kw["attributes"] = dict(kw.get("attributes") or {})
        kw.pop("seal", None)  # whether the emitter seals at once (test_sdk covers it)
        ev = ExecutionEvent(
            emitter_id="svc#1", emitter_seq=len(self.events), topic="t", partition=0, **kw
        )
        SCHEMA.encode(ev.to_record())
        self.events.append(ev)
        return ev

    def flush(self, timeout: float = 30.0, *, seal: bool = True) -> FlushReport:
        return FlushReport(len(self.events), 0, 0)

    def close(self, timeout: float = 30.0) -> FlushReport:
        return self.flush(timeout)

    def by_id(self) -> dict[str, ExecutionEvent]:
        return {e.event_id: e for e in self.events}


@pytest.fixture
def setup() -> Iterator[tuple[TracerProvider, LineageSpanProcessor, RecordingEmitter]]:
    em = RecordingEmitter()
    provider = TracerProvider(resource=RESOURCE)
    bridge = LineageSpanProcessor(em)  # type: ignore[arg-type]
    provider.add_span_processor(bridge)
    yield provider, bridge, em
    provider.shutdown()


def hexid(span: Any) -> tuple[int, int]:
    ctx = span.get_span_context()
    return ctx.trace_id, ctx.span_id


def assert_causal(events: list[ExecutionEvent]) -> None:
    """Every parent inside the workflow was emitted before its child."""
    seen: set[str] = set()
    for e in events:
        if e.parent_event_id is not None and e.parent_workflow_id is None:
            assert e.parent_event_id in seen, f"{e.kind} {e.action} emitted before its parent"
        seen.add(e.event_id)


def test_genai_spans_become_a_causal_dag(setup: Any) -> None:
    provider, bridge, em = setup
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span(
        "invoke_agent orchestrator",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "orchestrator",
            "gen_ai.request.model": "gpt-4.1",
            "gen_ai.response.model": "gpt-4.1-2025-04-14",
            "enduser.id": "user:alice",
        },
    ) as root:
        with (
            tracer.start_as_current_span(
                "execute_tool search",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "search",
                    "gen_ai.tool.call.id": "call-1",
                    "gen_ai.tool.call.arguments": '{"q": "secret prompt text"}',
                    "server.address": "search.example.com",
                },
            ) as tool,
            tracer.start_as_current_span(
                "GET",
                kind=SpanKind.CLIENT,
                attributes={
                    "url.full": "https://search.example.com/v1?q=x",
                    "http.request.method": "GET",
                },
            ) as http,
        ):
            pass
        with (
            pytest.raises(TimeoutError),
            tracer.start_as_current_span(
                "execute_tool query_db",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "query_db",
                    "db.system.name": "postgresql",
                    "db.namespace": "crm",
                    "db.collection.name": "accounts",
                },
            ) as failing,
        ):
            raise TimeoutError("db timed out")
    trace_id, root_id = hexid(root)
    events = em.events
    assert_causal(events)
    ids = em.by_id()
    start = ids[event_id_for(trace_id, root_id, "start")]
    assert start.kind is EventKind.WORKFLOW_STARTED
    assert start.workflow_id == f"otel-{trace_id:032x}"
    assert start.agent_id == "agent:orchestrator" and start.principal == "user:alice"
    assert (start.model_id, start.model_version) == ("gpt-4.1", "gpt-4.1-2025-04-14")
    assert start.runtime is not None and start.runtime.host == "node-7"
    assert start.runtime.measurement == "sha256:" + "ab" * 32
    assert start.runtime.image_digest == "sha256:" + "cd" * 32
    assert start.trace_id == f"{trace_id:032x}" and start.span_id == f"{root_id:016x}"

    t_start = ids[event_id_for(*hexid(tool), "start")]
    assert t_start.kind is EventKind.EXECUTION_STARTED
    assert (t_start.action, t_start.resource) == ("tool.call:search", "search.example.com")
    assert t_start.parent_event_id == start.event_id
    assert t_start.agent_id == "agent:orchestrator", "the tool runs for the agent above it"
    assert t_start.input_digest is not None and t_start.input_digest.startswith("sha256:")
    assert "secret prompt text" not in repr(t_start), "contents leave the service only as digests"
    access = ids[event_id_for(*hexid(http), "start")]
    assert access.kind is EventKind.RESOURCE_ACCESS
    assert access.parent_event_id == t_start.event_id
    assert access.resource == "search.example.com"
    assert access.attributes["http.request.method"] == "GET"
    assert ids[event_id_for(*hexid(tool), "end")].kind is EventKind.EXECUTION_COMPLETED

    f_end = ids[event_id_for(*hexid(failing), "end")]
    assert f_end.kind is EventKind.EXECUTION_FAILED
    assert f_end.attributes["error.type"].endswith("TimeoutError")
    assert f_end.resource == "postgresql:crm/accounts"
    end = ids[event_id_for(trace_id, root_id, "end")]
    assert end.kind is EventKind.WORKFLOW_COMPLETED and end.parent_event_id == start.event_id
    assert len(events) == 2 + 2 + 1 + 2
    assert bridge.report().ok and bridge.stats.spans == 4


def test_event_ids_are_uuid5_of_the_span_context() -> None:
    expected = uuid.uuid5(OTEL_NAMESPACE, f"{0xABC:032x}-{0x12:016x}-start")
    assert event_id_for(0xABC, 0x12, "start") == str(expected)
    assert event_id_for(0xABC, 0x12, "end") != event_id_for(0xABC, 0x12, "start")


def test_child_names_a_parent_that_has_not_ended_or_lives_elsewhere(setup: Any) -> None:
    provider, _, em = setup
    tracer = provider.get_tracer("t")
    remote = SpanContext(
        trace_id=0x1234, span_id=0x99, is_remote=True, trace_flags=trace.TraceFlags(1)
    )
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    parent = tracer.start_span(
        "invoke_agent researcher",
        context=ctx,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "researcher"},
    )
    with trace.use_span(parent, end_on_exit=False):
        child = tracer.start_span(
            "execute_tool fetch",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch"},
        )
    child.end()  # the child ends (and is exported) while its parent is still running
    assert [e.kind for e in em.events] == [
        EventKind.EXECUTION_STARTED,
        EventKind.EXECUTION_STARTED,
        EventKind.EXECUTION_COMPLETED,
    ]
    p_start, c_start, _ = em.events
    assert p_start.event_id == event_id_for(0x1234, parent.get_span_context().span_id, "start")
    assert p_start.parent_event_id == event_id_for(0x1234, 0x99, "start"), "remote parent named"
    assert p_start.workflow_id == c_start.workflow_id == f"otel-{0x1234:032x}"
    assert c_start.parent_event_id == p_start.event_id
    parent.end()
    assert em.events[-1].kind is EventKind.EXECUTION_COMPLETED
    assert em.events[-1].parent_event_id == p_start.event_id


def test_workflow_attribute_starts_a_called_workflow(setup: Any) -> None:
    provider, _, em = setup
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("root", attributes={"lineage.workflow_id": "wf-main"}),
        tracer.start_as_current_span(
            "invoke_agent sub",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "sub",
                "lineage.workflow_id": "wf-sub",
            },
        ) as sub,
    ):
        pass
    ids = em.by_id()
    s = ids[event_id_for(*hexid(sub), "start")]
    assert (s.kind, s.workflow_id, s.parent_workflow_id) == (
        EventKind.WORKFLOW_STARTED,
        "wf-sub",
        "wf-main",
    )
    assert em.events[0].workflow_id == "wf-main" and s.parent_event_id == em.events[0].event_id


def test_unmapped_and_oversized_attributes_are_bounded(setup: Any) -> None:
    provider, bridge, em = setup
    tracer = provider.get_tracer("t")
    attrs: dict[str, Any] = {f"custom.key{i}": "v" * 5000 for i in range(100)}
    attrs["gen_ai.operation.name"] = "execute_tool"
    attrs["gen_ai.tool.name"] = "t" * 10_000
    attrs["gen_ai.output.messages"] = "x" * 100_000
    attrs["list.value"] = [1, 2, 3]
    with (
        tracer.start_as_current_span("root"),
        tracer.start_as_current_span("big", attributes=attrs),
    ):
        pass
    limits = OtelMapping()
    for e in em.events:
        assert len(e.attributes) <= limits.max_attributes
        size = sum(len(k.encode()) + len(v.encode()) for k, v in e.attributes.items())
        assert size <= limits.max_attribute_bytes
        assert len(SCHEMA.encode(e.to_record())) < 64 * 1024
    big = next(e for e in em.events if e.kind is EventKind.EXECUTION_STARTED)
    assert int(big.attributes["lineage.otel.truncated"]) > 50
    assert len(big.action.encode()) <= limits.max_id_bytes and "…sha256:" in big.action
    end = next(e for e in em.events if e.kind is EventKind.EXECUTION_COMPLETED)
    assert end.output_digest is not None and "x" * 100 not in repr(em.events)
    assert "custom.key1" not in end.attributes, "the end event repeats no start attribute"
    assert bridge.report().ok and bridge.stats.truncated_attributes > 0


def test_events_that_cannot_be_sent_are_counted_never_raised() -> None:
    em = RecordingEmitter(fail=BackpressureTimeout("local queue full for 30 s"))
    provider = TracerProvider()
    bridge = LineageSpanProcessor(em)  # type: ignore[arg-type]
    provider.add_span_processor(bridge)
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("root"),
        tracer.start_as_current_span("t", attributes={"gen_ai.operation.name": "execute_tool"}),
    ):
        pass  # the application goes on
    report = bridge.report()
    assert not report.ok and report.failed == 4
    assert report.failures == {"BackpressureTimeout": 4}
    assert not bridge.force_flush(100)
    assert "local queue full" in (bridge.stats.last_error or "")
    provider.shutdown()


def gate_for(bridge: LineageSpanProcessor, em: RecordingEmitter) -> Gate:
    return Gate(em, POLICY, context=bridge)  # type: ignore[arg-type]


def test_gate_takes_trace_and_parent_from_the_span_and_records_the_decision(setup: Any) -> None:
    provider, bridge, em = setup
    gate = gate_for(bridge, em)
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span(
            "invoke_agent orchestrator",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "orchestrator",
            },
        ) as root,
        tracer.start_as_current_span(
            "execute_tool search",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search",
                "server.address": "search.example.com",
            },
        ) as tool,
    ):
        grant = gate.authorize(
            principal="agent:orchestrator", action="tool.call:search", resource="search.example.com"
        )
        with tracer.start_as_current_span(
            "GET", attributes={"server.address": "search.example.com"}
        ) as http:
            pass
    ids = em.by_id()
    decision = grant.event
    trace_id, span_id = hexid(tool)
    assert decision.trace_id == f"{trace_id:032x}" and decision.span_id == f"{span_id:016x}"
    assert decision.workflow_id == f"otel-{trace_id:032x}"
    assert decision.parent_event_id == event_id_for(*hexid(root), "start")
    attrs = tool.attributes
    assert attrs[AUTH_ID] == decision.event_id and attrs[AUTH_DECISION] == "ALLOW"
    assert attrs[AUTH_POLICY_DIGEST] == POLICY.digest_hex
    started = ids[event_id_for(trace_id, span_id, "start")]
    assert started.authorization_id == decision.event_id
    assert started.parent_event_id == decision.event_id
    access = ids[event_id_for(*hexid(http), "start")]
    assert access.authorization_id == decision.event_id
    assert (access.action, access.resource) == ("tool.call:search", "search.example.com")
    assert ids[event_id_for(trace_id, span_id, "end")].authorization_id == decision.event_id
    assert_causal(em.events)


def test_gate_execution_inside_a_span_is_not_recorded_twice(setup: Any) -> None:
    provider, bridge, em = setup
    gate = gate_for(bridge, em)
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("root"),
        tracer.start_as_current_span(
            "execute_tool search",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
        ) as tool,
    ):
        grant = gate.authorize(principal="agent:a", action="tool.call:search")
        with gate.execution(grant, principal="agent:a") as ex:
            assert ex.trace.span_id == f"{hexid(tool)[1]:016x}"
    kinds = [e.kind for e in em.events]
    assert kinds.count(EventKind.EXECUTION_STARTED) == 1
    assert kinds.count(EventKind.EXECUTION_COMPLETED) == 1
    assert ex.event_id == event_id_for(*hexid(tool), "start")


def test_a_denied_tool_call_that_is_refused_is_not_an_execution(setup: Any) -> None:
    provider, bridge, em = setup
    gate = gate_for(bridge, em)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root"):
        with (
            pytest.raises(AuthorizationDenied),
            tracer.start_as_current_span(
                "execute_tool delete_records",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "delete_records",
                },
            ) as refused,
        ):
            gate.authorize(principal="agent:a", action="tool.call:delete_records")
        with (
            tracer.start_as_current_span(
                "execute_tool delete_records",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "delete_records",
                },
            ) as ran_anyway,
            contextlib.suppress(AuthorizationDenied),
        ):
            # misbehaviour: the agent runs the tool all the same
            gate.authorize(principal="agent:a", action="tool.call:delete_records")
    ids = em.by_id()
    assert event_id_for(*hexid(refused), "start") not in ids
    assert refused.attributes[AUTH_DECISION] == Decision.DENY.value
    ran = ids[event_id_for(*hexid(ran_anyway), "start")]
    assert ran.kind is EventKind.EXECUTION_STARTED
    assert ran.authorization_id == ran_anyway.attributes[AUTH_ID]


def test_processor_survives_bad_spans_and_without_context(setup: Any) -> None:
    provider, bridge, em = setup
    assert bridge.current() is None  # no span: the gate falls back to its own trace
    token = otel_context.attach(otel_context.Context())
    try:
        tracer = provider.get_tracer("t")
        span = tracer.start_span("x", attributes={"gen_ai.operation.name": "execute_tool"})
        span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end()
    finally:
        otel_context.detach(token)
    end = em.events[-1]
    assert end.kind is EventKind.WORKFLOW_COMPLETED and end.attributes["error.type"] == "boom"


def test_concurrent_agents_keep_causal_order_per_workflow(setup: Any) -> None:
    provider, bridge, em = setup
    tracer = provider.get_tracer("t")

    def agent(n: int) -> None:
        with tracer.start_as_current_span(
            f"invoke_agent a{n}",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": f"a{n}"},
        ):
            for i in range(20):
                with (
                    tracer.start_as_current_span(
                        f"execute_tool t{i}",
                        attributes={"gen_ai.operation.name": "execute_tool"},
                    ),
                    tracer.start_as_current_span("GET", attributes={"server.address": "x.example"}),
                ):
                    pass

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert bridge.report().ok and bridge.stats.spans == 8 * 41
    by_workflow: dict[str, list[ExecutionEvent]] = {}
    for e in em.events:
        by_workflow.setdefault(e.workflow_id, []).append(e)
    assert len(by_workflow) == 8
    for events in by_workflow.values():
        assert len(events) == 2 + 20 * 3
        assert_causal(events)
        assert {e.agent_id for e in events} == {events[0].agent_id}


def test_values_at_the_bounds_are_kept_or_cut_by_their_utf8_size(setup: Any) -> None:
    provider, bridge, em = setup
    tracer = provider.get_tracer("t")
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "ascii.at_limit": "a" * 512,
        "ascii.over": "a" * 513,
        "utf8.under": "é" * 200,  # 400 bytes: kept although 200 characters could be 800 bytes
        "utf8.over": "é" * 300,  # 600 bytes
        "k" * 40: "long key",
    }
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("t", attributes=attrs):
        pass
    start = next(e for e in em.events if e.kind is EventKind.EXECUTION_STARTED)
    a = start.attributes
    assert a["ascii.at_limit"] == "a" * 512 and a["utf8.under"] == "é" * 200
    assert a["k" * 40] == "long key"
    for key in ("ascii.over", "utf8.over"):
        assert len(a[key].encode()) <= 512 and "…sha256:" in a[key], key
    assert a["lineage.otel.truncated"] == "2" and bridge.stats.truncated_attributes == 2
    short = next(e for e in em.events if e.kind is EventKind.WORKFLOW_STARTED)
    assert "lineage.otel.truncated" not in short.attributes


class RaisingFlushEmitter(RecordingEmitter):
    def flush(self, timeout: float = 30.0, *, seal: bool = True) -> FlushReport:
        raise BackpressureTimeout("seal could not be queued")


def bridge_failures(metrics: Any) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for family in metrics.registry.collect()
        if family.name == "lineage_otel_bridge_failed_events"
        for s in family.samples
        if s.name.endswith("_total")
    }


def test_failures_are_reported_through_metrics_as_they_change() -> None:
    from infra.metrics import LineageMetrics

    metrics = LineageMetrics("agent")
    em = RaisingFlushEmitter(fail=BackpressureTimeout("local queue full for 30 s"))
    provider = TracerProvider()
    bridge = LineageSpanProcessor(em, metrics=metrics)  # type: ignore[arg-type]
    provider.add_span_processor(bridge)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root"):
        pass
    assert bridge_failures(metrics) == {"BackpressureTimeout": 2}, "reported in the failure path"
    assert not bridge.force_flush(100)
    assert bridge_failures(metrics) == {"BackpressureTimeout": 2, "flush": 2}
    assert not bridge.force_flush(100)
    assert bridge_failures(metrics) == {"BackpressureTimeout": 2, "flush": 4}
    assert bridge.report().failures == {"BackpressureTimeout": 2, "flush": 4}
    provider.shutdown()  # its flush fails too: counted and reported, not raised
    assert bridge_failures(metrics) == {"BackpressureTimeout": 2, "flush": 4, "shutdown": 1}


def test_force_flush_reports_counts_and_broken_metrics_never_reach_the_agent() -> None:
    class Recording:
        def __init__(self) -> None:
            self.seen: list[dict[str, int]] = []

        def observe_bridge(self, failures: dict[str, int]) -> None:
            self.seen.append(failures)

    class Broken:
        def observe_bridge(self, failures: dict[str, int]) -> None:
            raise RuntimeError("registry gone")

    rec = Recording()
    bridge = LineageSpanProcessor(RecordingEmitter(), metrics=rec)  # type: ignore[arg-type]
    assert bridge.force_flush(100) and rec.seen == [{}]

    em = RecordingEmitter(fail=BackpressureTimeout("full"))
    provider = TracerProvider()
    broken = LineageSpanProcessor(em, metrics=Broken())  # type: ignore[arg-type]
    provider.add_span_processor(broken)
    with provider.get_tracer("t").start_as_current_span("root"):
        pass  # the agent goes on
    assert broken.report().failures == {"BackpressureTimeout": 2}
    assert not broken.force_flush(100)
    provider.shutdown()
