"""OpenTelemetry bridge: a span processor that turns (GenAI) spans into signed execution events.

``provider.add_span_processor(LineageSpanProcessor(emitter))`` is the whole setup; the mapping
is documented in docs/otel.md. Needs the ``otel`` extra (opentelemetry-api and -sdk).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from lineage.model import Decision, EventKind, ExecutionEvent, Runtime
from producers.emitter import Emitter, FlushReport
from producers.gate import TraceContext, TraceScope

log = logging.getLogger("lineage.otel")

OTEL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:execution-lineage:otel-bridge:v1")
"""Namespace of the bridge's event ids (UUIDv5 of trace id, span id and role)."""
_NS_SHA1 = hashlib.sha1(OTEL_NAMESPACE.bytes, usedforsecurity=False)
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version nibble, variant bits (RFC 9562)
_UUID_SET = (0x5000 << 64) | (0x8000 << 48)

OP = "gen_ai.operation.name"
MODEL_OPS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
CONTENT_INPUTS = ("gen_ai.input.messages", "gen_ai.tool.call.arguments", "gen_ai.prompt")
CONTENT_OUTPUTS = ("gen_ai.output.messages", "gen_ai.tool.call.result", "gen_ai.completion")
CONTENT_KEYS = frozenset({*CONTENT_INPUTS, *CONTENT_OUTPUTS, "gen_ai.system_instructions"})
"""Message and argument contents: only their SHA-256 leaves the service (raw data stays there)."""

AUTH_ID = "lineage.authorization.id"
AUTH_DECISION = "lineage.authorization.decision"
AUTH_POLICY_DIGEST = "lineage.authorization.policy_digest"
AUTH_POLICY_ID = "lineage.authorization.policy_id"
REFUSED_ERRORS = ("AuthorizationDenied", "GateError")
"""A gated span that ends with one of these, and started nothing, did not execute."""

_KIND_NAMES = {k: k.name for k in SpanKind}
_STATUS_NAMES = {s: s.name for s in StatusCode}
_START_KINDS = {
    "workflow": EventKind.WORKFLOW_STARTED,
    "execution": EventKind.EXECUTION_STARTED,
    "access": EventKind.RESOURCE_ACCESS,
}


class BridgeMetrics(Protocol):
    """Where the bridge reports its failure counts: ``infra.metrics.LineageMetrics`` fits."""

    def observe_bridge(self, failures: dict[str, int]) -> None:
        """Bring the reported counts up to ``failures`` (cumulative, by reason)."""


@dataclass(frozen=True)
class OtelMapping:
    """What the bridge reads from spans, and the bounds it keeps events within.

    ``workflow_attribute`` (a span attribute, else the same baggage entry) names the workflow;
    without it the workflow is ``otel-<trace id>``. The limits are the processor's event limits
    (``LINEAGE_MAX_ATTRIBUTES``, ``LINEAGE_MAX_ATTRIBUTE_BYTES``); values are cut to
    ``max_value_bytes`` and ids to ``max_id_bytes``.
    """

    workflow_attribute: str | None = "lineage.workflow_id"
    principal_attributes: tuple[str, ...] = ("enduser.id", "user.id")
    agent_prefix: str = "agent:"
    resource_attribute: str = "lineage.resource"
    attestation_type_attribute: str = "lineage.attestation.type"
    measurement_attribute: str = "lineage.attestation.measurement"
    max_attributes: int = 64
    max_attribute_bytes: int = 16 * 1024
    max_value_bytes: int = 512
    max_id_bytes: int = 256


@dataclass
class BridgeStats:
    """What the bridge did; ``failed`` counts events it could not hand to the emitter."""

    spans: int = 0
    events: int = 0
    failed: int = 0
    truncated_attributes: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None


@dataclass(frozen=True)
class BridgeReport:
    """The bridge's counts plus the emitter's delivery report; ``ok`` only if nothing was lost."""

    spans: int
    events: int
    failed: int
    failures: dict[str, int]
    delivery: FlushReport | None

    @property
    def ok(self) -> bool:
        return self.failed == 0 and (self.delivery is None or self.delivery.ok)


@dataclass(slots=True)
class _SpanState:
    trace_id: int
    span_id: int
    role: str  # "workflow", "execution" or "access"
    workflow_id: str
    parent_workflow_id: str | None
    parent_event_id: str | None
    principal: str
    agent_id: str | None
    action: str
    resource: str | None
    span: Span | None = None
    authorization_id: str | None = None
    decision: Decision | None = None
    inherited_auth: tuple[str, str] | None = None
    started: bool = False
    forced: bool = False
    gate_started: bool = False
    gate_finished: bool = False

    start_keys: frozenset[str] = frozenset()
    trace_hex: str = ""
    span_hex: str = ""
    traceparent: str = ""
    start_id: str = ""
    end_id: str = ""

    def __post_init__(self) -> None:
        self.trace_hex = f"{self.trace_id:032x}"
        self.span_hex = f"{self.span_id:016x}"
        self.traceparent = f"00-{self.trace_hex}-{self.span_hex}-01"
        name = f"{self.trace_hex}-{self.span_hex}-".encode()
        self.start_id = _uuid5(name + b"start")
        self.end_id = _uuid5(name + b"end")

    @property
    def trace(self) -> TraceContext:
        return TraceContext(self.trace_hex, self.span_hex)

    def auth_for_children(self) -> tuple[str, str] | None:
        if self.authorization_id is not None and self.decision is Decision.ALLOW:
            return self.authorization_id, self.action
        return self.inherited_auth


def event_id_for(trace_id: int, span_id: int, role: str) -> str:
    """The deterministic event id of a span's ``start`` or ``end`` event.

    Any process that knows a span's context can name its events before they exist, so a child
    names its parent's event even when the parent ends (and is exported) later or elsewhere.
    Equal to ``uuid.uuid5(OTEL_NAMESPACE, "<trace hex>-<span hex>-<role>")``.
    """
    return _uuid5(f"{trace_id:032x}-{span_id:016x}-{role}".encode())


def _uuid5(name: bytes) -> str:
    h = _NS_SHA1.copy()
    h.update(name)
    x = f"{int.from_bytes(h.digest()[:16]) & _UUID_CLEAR | _UUID_SET:032x}"
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _clip(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` UTF-8 bytes, marked with a digest of the whole."""
    if len(text) * 4 <= limit:  # short enough whatever its characters: no need to encode
        return text, False
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, False
    tag = "…sha256:" + hashlib.sha256(data).hexdigest()[:16]
    keep = data[: max(limit - len(tag.encode()), 0)].decode("utf-8", "ignore")
    return keep + tag, True


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Sequence):
        return json.dumps([v if isinstance(v, str | int | float | bool) else str(v) for v in value])
    return str(value)


def _digest(attrs: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        if key in attrs:
            return "sha256:" + hashlib.sha256(_text(attrs[key]).encode("utf-8")).hexdigest()
    return None


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    """One copy of the span's attributes (each read of the SDK's mapping is a Python call)."""
    a = span.attributes
    return dict(a) if a else {}


def _host_of(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


class LineageSpanProcessor(SpanProcessor):
    """Turns spans into execution events through an ``Emitter``; also a gate ``GateContext``.

    Each span's events get ids derived from its trace and span ids. A span's start event is
    emitted when first needed (a child starts, the gate runs in it, or it ends), so a gate
    decision taken inside the span is recorded before the execution that relies on it.
    Nothing raised here reaches the application: failures are counted in ``stats`` and, given
    ``metrics`` (e.g. ``infra.metrics.LineageMetrics``), reported through it as they change.
    """

    def __init__(
        self,
        emitter: Emitter,
        *,
        mapping: OtelMapping | None = None,
        owns_emitter: bool = False,
        max_tracked: int = 10_000,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self.emitter = emitter
        self.metrics = metrics
        self.mapping = mapping or OtelMapping()
        self.owns_emitter = owns_emitter
        self.max_tracked = max_tracked
        self.stats = BridgeStats()
        self._lock = threading.RLock()
        self._live: dict[int, _SpanState] = {}
        self._ended: OrderedDict[int, _SpanState] = OrderedDict()
        self._runtime_cache: dict[int, Runtime | None] = {}
        self._last_delivery: FlushReport | None = None

    # -- SpanProcessor ---------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            with self._lock:
                self.stats.spans += 1
                parent_ctx = span.parent
                parent = self._known(parent_ctx.span_id) if parent_ctx is not None else None
                state = self._state_for(span, _attrs(span), parent, parent_context)
                state.span = span
                self._live[state.span_id] = state
                if parent is not None and not parent.started and parent.span is not None:
                    parent.forced = True
                    self._emit_start(parent, parent.span, _attrs(parent.span))
        except Exception as exc:  # the application must never see the bridge fail
            self._failed("on_start", exc)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            with self._lock:
                ctx = span.context
                if ctx is None:
                    return
                attrs = _attrs(span)
                state = self._live.pop(ctx.span_id, None)
                if state is None:  # started before this processor was added
                    self.stats.spans += 1
                    parent_ctx = span.parent
                    parent = self._known(parent_ctx.span_id) if parent_ctx is not None else None
                    state = self._state_for(span, attrs, parent, None)
                self._remember(state)
                self._finish(state, span, attrs)
        except Exception as exc:
            self._failed("on_end", exc)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Seal and deliver what was emitted; False if anything is undelivered or was lost."""
        try:
            self._last_delivery = self.emitter.flush(timeout_millis / 1000)
        except Exception as exc:  # e.g. the seal could not be queued: say what is still pending
            self._failed("flush", exc)
            try:
                self._last_delivery = self.emitter.flush(timeout_millis / 1000, seal=False)
            except Exception as again:
                self._failed("flush", again)
            return False
        self._observe()
        return self.report().ok

    def shutdown(self) -> None:
        """Flush; close the emitter if the bridge owns it."""
        try:
            if self.owns_emitter:
                self._last_delivery = self.emitter.close()
            else:
                self._last_delivery = self.emitter.flush()
        except Exception as exc:
            self._failed("shutdown", exc)
        if not self.report().ok:
            log.warning("lineage bridge shut down with losses: %s", self.report())

    def report(self) -> BridgeReport:
        """Counts so far and the last delivery report (see ``force_flush``)."""
        s = self.stats
        return BridgeReport(s.spans, s.events, s.failed, dict(s.failures), self._last_delivery)

    # -- GateContext -----------------------------------------------------

    def current(self) -> TraceScope | None:
        """The current span as a gate scope: trace, workflow, parent and execution event ids."""
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        with self._lock:
            state = self._live.get(ctx.span_id)
            tc = TraceContext(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
            if state is None:
                return TraceScope(tc, workflow_id=f"otel-{ctx.trace_id:032x}")
            free = state.role == "execution" and not state.started
            return TraceScope(
                tc,
                workflow_id=state.workflow_id,
                parent_event_id=state.start_id if state.started else state.parent_event_id,
                parent_workflow_id=state.parent_workflow_id,
                execution_ids=(state.start_id, state.end_id) if free else None,
            )

    def record(self, event: ExecutionEvent) -> None:
        """Note an event the gate emitted in the current span; decisions become span attributes."""
        span = trace.get_current_span()
        ctx = span.get_span_context()
        with self._lock:
            state = self._live.get(ctx.span_id) if ctx.is_valid else None
            if event.kind is EventKind.AUTHORIZATION_DECISION and event.authorization is not None:
                auth = event.authorization
                span.set_attributes(
                    {
                        AUTH_ID: event.event_id,
                        AUTH_DECISION: auth.decision.value,
                        AUTH_POLICY_DIGEST: auth.policy_digest,
                        AUTH_POLICY_ID: auth.policy_id,
                    }
                )
                if state is not None and not state.started:
                    state.authorization_id = event.event_id
                    state.decision = auth.decision
            elif state is not None and event.event_id == state.start_id:
                state.started = state.gate_started = True
            elif state is not None and event.event_id == state.end_id:
                state.gate_finished = True

    # -- mapping ---------------------------------------------------------

    def _known(self, span_id: int) -> _SpanState | None:
        return self._live.get(span_id) or self._ended.get(span_id)

    def _remember(self, state: _SpanState) -> None:
        state.span = None
        self._ended[state.span_id] = state
        while len(self._ended) > self.max_tracked:
            self._ended.popitem(last=False)

    def _state_for(
        self,
        span: ReadableSpan,
        attrs: Mapping[str, Any],
        parent: _SpanState | None,
        parent_context: Context | None,
    ) -> _SpanState:
        m = self.mapping
        ctx = span.context
        assert ctx is not None
        parent_ctx = span.parent
        wf_attr = None
        if m.workflow_attribute:
            wf_attr = attrs.get(m.workflow_attribute)
            if wf_attr is None and parent is None and parent_context is not None:
                wf_attr = baggage.get_baggage(m.workflow_attribute, parent_context)
        inherited_wf = parent.workflow_id if parent is not None else None
        workflow = _clip(
            str(wf_attr) if wf_attr else inherited_wf or f"otel-{ctx.trace_id:032x}",
            m.max_id_bytes,
        )[0]
        if parent_ctx is None:
            parent_event_id = None
        elif parent is not None:
            parent_event_id = parent.start_id
        else:  # remote parent, or one that ended long ago: its start event has this id
            parent_event_id = event_id_for(parent_ctx.trace_id, parent_ctx.span_id, "start")
        new_workflow = parent_ctx is None or (inherited_wf is not None and workflow != inherited_wf)
        op = attrs.get(OP)
        agent_name = attrs.get("gen_ai.agent.name") or attrs.get("gen_ai.agent.id")
        agent = (
            _clip(f"{m.agent_prefix}{agent_name}", m.max_id_bytes)[0]
            if agent_name
            else (parent.agent_id if parent is not None else None)
        )
        principal_attr = next((attrs[k] for k in m.principal_attributes if k in attrs), None)
        if principal_attr:
            principal = _clip(str(principal_attr), m.max_id_bytes)[0]
        else:
            principal = (parent.principal if parent is not None else None) or agent or ""
            if not principal:
                service = span.resource.attributes.get("service.name") if span.resource else None
                principal = _clip(str(service or "unknown"), m.max_id_bytes)[0]
        inherited_auth = parent.auth_for_children() if parent is not None else None
        resource = self._resource(attrs, op)
        if new_workflow:
            role, action = "workflow", "workflow.start"
        elif op:
            role, action = "execution", self._action(str(op), attrs, span.name)
        else:
            role = "access"  # done on behalf of the execution above it, as the SDK records it
            if inherited_auth is not None:
                action = inherited_auth[1]
            elif parent is not None and parent.role != "workflow":
                action = parent.action
            else:
                action = "resource.access"
        return _SpanState(
            trace_id=ctx.trace_id,
            span_id=ctx.span_id,
            role=role,
            workflow_id=workflow,
            parent_workflow_id=inherited_wf if new_workflow and inherited_wf else None,
            parent_event_id=parent_event_id,
            principal=principal,
            agent_id=agent,
            action=_clip(action, m.max_id_bytes)[0],
            resource=_clip(resource, m.max_id_bytes)[0] if resource else None,
            inherited_auth=inherited_auth,
        )

    def _action(self, op: str, attrs: Mapping[str, Any], name: str) -> str:
        if op == "execute_tool":
            return f"tool.call:{attrs.get('gen_ai.tool.name') or name}"
        if op in ("invoke_agent", "create_agent"):
            who = attrs.get("gen_ai.agent.name") or attrs.get("gen_ai.agent.id") or name
            return f"agent.{op.split('_')[0]}:{who}"
        if op == "invoke_workflow":
            return f"workflow.invoke:{attrs.get('gen_ai.workflow.name') or name}"
        if op in MODEL_OPS:
            return f"model.{op}:{attrs.get('gen_ai.request.model') or 'unknown'}"
        return f"gen_ai.{op}"

    def _resource(self, attrs: Mapping[str, Any], op: Any) -> str | None:
        explicit = attrs.get(self.mapping.resource_attribute)
        if explicit:
            return str(explicit)
        system = attrs.get("db.system.name") or attrs.get("db.system")
        if system:
            ns = attrs.get("db.namespace")
            coll = attrs.get("db.collection.name")
            path = "/".join(str(p) for p in (ns, coll) if p)
            return f"{system}:{path}" if path else str(system)
        if attrs.get("server.address"):
            return str(attrs["server.address"])
        if attrs.get("url.full"):
            return _host_of(str(attrs["url.full"]))
        if op in MODEL_OPS and attrs.get("gen_ai.provider.name"):
            return str(attrs["gen_ai.provider.name"])
        return None

    def _runtime(self, span: ReadableSpan) -> Runtime | None:
        res = span.resource
        if res is None:
            return None
        key = id(res)
        if key in self._runtime_cache:
            return self._runtime_cache[key]
        a = res.attributes
        m = self.mapping
        host = a.get("host.name") or a.get("host.id") or a.get("service.instance.id")
        runtime = None
        if host:
            image = a.get("oci.manifest.digest") or a.get("container.image.id")
            runtime = Runtime(
                host=_clip(str(host), m.max_id_bytes)[0],
                image_digest=str(image) if image else None,
                attestation_type=str(a[m.attestation_type_attribute])
                if a.get(m.attestation_type_attribute)
                else None,
                measurement=str(a[m.measurement_attribute])
                if a.get(m.measurement_attribute)
                else None,
            )
        if len(self._runtime_cache) > 64:
            self._runtime_cache.clear()
        self._runtime_cache[key] = runtime
        return runtime

    _MAPPED = frozenset(
        {
            OP,
            "gen_ai.agent.name",
            "gen_ai.request.model",
            "gen_ai.response.model",
            AUTH_ID,
            AUTH_DECISION,
            AUTH_POLICY_DIGEST,
            AUTH_POLICY_ID,
        }
    )

    _EXCLUDED = _MAPPED | CONTENT_KEYS

    def _attributes(
        self,
        span: ReadableSpan,
        state: _SpanState,
        attrs: Mapping[str, Any],
        extra: Mapping[str, str],
        skip: frozenset[str] = frozenset(),
    ) -> dict[str, str]:
        """Fixed keys first, then the span's other attributes (not in ``skip``), within the limits."""
        m = self.mapping
        fixed = {
            "otel.span_name": span.name,
            "otel.span_kind": _KIND_NAMES.get(span.kind, "INTERNAL"),
            "traceparent": state.traceparent,
            **extra,
        }
        if OP in attrs:
            fixed[OP] = _text(attrs[OP])
        excluded = self._EXCLUDED
        pairs: list[tuple[str, Any]] = list(fixed.items())
        pairs += [
            (k, v)
            for k, v in attrs.items()
            if k not in excluded and k not in fixed and k not in skip
        ]
        budget = m.max_attribute_bytes - 64
        room = m.max_attributes - 1  # one slot kept for the truncation count
        limit = m.max_value_bytes
        if len(pairs) <= room:  # the usual span: within every bound even at 4 bytes a character
            out = {k: v if type(v) is str else _text(v) for k, v in pairs}
            keys, values = map(len, out), list(map(len, out.values()))
            if (
                max(keys) <= 32
                and max(values) * 4 <= limit
                and (sum(map(len, out)) + sum(values)) * 4 <= budget
            ):
                return out
        out = {}
        dropped = 0
        for key, value in pairs:
            k = key if len(key) <= 32 else _clip(key, 128)[0]
            v = value if type(value) is str else _text(value)
            n = len(v) if v.isascii() else len(v.encode())
            if n > limit:
                v = _clip(v, limit)[0]
                n = len(v.encode())
                dropped += 1
            size = (len(k) if k.isascii() else len(k.encode())) + n
            if room <= 0 or size > budget:
                dropped += 1
                continue
            out[k] = v
            budget -= size
            room -= 1
        if dropped:
            out["lineage.otel.truncated"] = str(dropped)
            self.stats.truncated_attributes += dropped
        return out

    # -- emitting --------------------------------------------------------

    def _emit(
        self, state: _SpanState, attrs: Mapping[str, Any], kind: EventKind, **fields: Any
    ) -> None:
        model = attrs.get("gen_ai.request.model")
        response_model = attrs.get("gen_ai.response.model")
        model = model or response_model
        try:
            self.emitter.emit(
                workflow_id=state.workflow_id,
                kind=kind,
                principal=state.principal,
                agent_id=state.agent_id,
                resource=state.resource,
                model_id=_clip(str(model), self.mapping.max_id_bytes)[0] if model else None,
                model_version=str(response_model)
                if response_model and response_model != model
                else None,
                trace_id=state.trace_hex,
                span_id=state.span_hex,
                **fields,
            )
            self.stats.events += 1
        except Exception as exc:
            self._failed(type(exc).__name__, exc)

    def _emit_start(self, state: _SpanState, span: ReadableSpan, attrs: Mapping[str, Any]) -> None:
        state.started = True
        auth_id = state.authorization_id
        parent = state.parent_event_id
        if state.role == "execution" and auth_id is not None:
            parent = auth_id  # as with the SDK gate: the execution follows its decision
        elif state.role == "access" and state.inherited_auth is not None:
            auth_id = state.inherited_auth[0]
        self._emit(
            state,
            attrs,
            _START_KINDS[state.role],
            action=state.action,
            event_id=state.start_id,
            event_time=max(span.start_time or 0, 1000) // 1000,
            parent_event_id=parent,
            parent_workflow_id=state.parent_workflow_id,
            authorization_id=auth_id if state.role != "workflow" else None,
            runtime=self._runtime(span) if state.role != "access" else None,
            input_digest=_digest(attrs, CONTENT_INPUTS),
            attributes=self._attributes(span, state, attrs, {}),
        )
        state.start_keys = frozenset(attrs)

    def _finish(self, state: _SpanState, span: ReadableSpan, attrs: Mapping[str, Any]) -> None:
        status = span.status.status_code if span.status is not None else StatusCode.UNSET
        error = attrs.get("error.type")
        if error is None and status is StatusCode.ERROR:
            exc = next(
                (e.attributes or {} for e in span.events if e.name == "exception"),
                {},
            )
            error = exc.get("exception.type") or span.status.description or "error"
        outcome = {"otel.status": _STATUS_NAMES[status]}
        if error is not None:
            outcome["error.type"] = _text(error)
        refused = (
            state.role == "execution"
            and not state.forced
            and state.authorization_id is not None
            and error is not None
            and _text(error).rsplit(".", 1)[-1] in REFUSED_ERRORS
        )
        if refused or state.gate_finished:
            return
        if not state.started:
            if state.role == "access":
                state.started = True
                self._emit_start_with(state, span, attrs, outcome)
                return
            self._emit_start(state, span, attrs)
        if state.role == "access":
            return
        if state.role == "workflow":
            kind = EventKind.WORKFLOW_COMPLETED
            action = "workflow.complete"
        else:
            kind = (
                EventKind.EXECUTION_FAILED if error is not None else EventKind.EXECUTION_COMPLETED
            )
            action = state.action
        self._emit(
            state,
            attrs,
            kind,
            action=action,
            event_id=state.end_id,
            event_time=max(span.end_time or span.start_time or 0, 1000) // 1000,
            parent_event_id=state.start_id,
            authorization_id=state.authorization_id if state.role == "execution" else None,
            output_digest=_digest(attrs, CONTENT_OUTPUTS),
            attributes=self._attributes(span, state, attrs, outcome, skip=state.start_keys),
        )

    def _emit_start_with(
        self,
        state: _SpanState,
        span: ReadableSpan,
        attrs: Mapping[str, Any],
        outcome: Mapping[str, str],
    ) -> None:
        """A resource access that ended before anything needed it: one event, with its outcome."""
        self._emit(
            state,
            attrs,
            EventKind.RESOURCE_ACCESS,
            action=state.action,
            event_id=state.start_id,
            event_time=max(span.start_time or 0, 1000) // 1000,
            parent_event_id=state.parent_event_id,
            authorization_id=state.inherited_auth[0] if state.inherited_auth else None,
            input_digest=_digest(attrs, CONTENT_INPUTS),
            output_digest=_digest(attrs, CONTENT_OUTPUTS),
            attributes=self._attributes(span, state, attrs, outcome),
        )

    def _failed(self, reason: str, exc: BaseException) -> None:
        with self._lock:
            self.stats.failed += 1
            self.stats.failures[reason] += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            if self.stats.failed == 1 or self.stats.failed % 1000 == 0:
                log.warning(
                    "lineage bridge could not record a span (%d so far): %s",
                    self.stats.failed,
                    self.stats.last_error,
                )
            self._observe()

    def _observe(self) -> None:
        """Bring ``metrics`` up to date with the failure counts; never raises."""
        if self.metrics is None:
            return
        with self._lock:
            failures = dict(self.stats.failures)
            try:
                self.metrics.observe_bridge(failures)
            except Exception as exc:  # metrics must not take the bridge (or the agent) down
                log.warning("lineage bridge could not report to its metrics: %s", exc)
