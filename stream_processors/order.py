"""Order stage: admit a workflow's events only after their causal parent has been chained."""

from __future__ import annotations

from dataclasses import dataclass, field

from stream_processors.records import PendingEvent
from stream_processors.state import WorkflowState


@dataclass(frozen=True)
class OrderLimits:
    max_events_per_workflow: int = 1000
    max_events_per_partition: int = 50_000
    max_bytes_per_partition: int = 64 * 1024 * 1024


@dataclass
class Admission:
    ready: list[PendingEvent] = field(default_factory=list)
    duplicates: list[PendingEvent] = field(default_factory=list)
    conflicts: list[tuple[PendingEvent, str]] = field(default_factory=list)


def parent_in_workflow(p: PendingEvent) -> str | None:
    """The parent to wait for: only parents inside the same workflow can be ordered here."""
    ev = p.event
    if ev.parent_event_id is None:
        return None
    if ev.parent_workflow_id is not None and ev.parent_workflow_id != ev.workflow_id:
        return None
    return ev.parent_event_id


def offer(state: WorkflowState, p: PendingEvent) -> Admission:
    """Offer an authenticated event; returns what is now ready in causal order (children after parents)."""
    out = Admission()
    known = state.chained.get(p.event.event_id)
    if known is not None or any(w.event.event_id == p.event.event_id for w in state.waiting):
        prior = (
            known
            if known is not None
            else next(w.digest[:8] for w in state.waiting if w.event.event_id == p.event.event_id)
        )
        if prior == p.digest[:8]:
            out.duplicates.append(p)
        else:
            out.conflicts.append(
                (
                    p,
                    f"event id {p.event.event_id} already seen with digest {prior.hex()}…, found {p.digest[:8].hex()}…",
                )
            )
        return out
    parent = parent_in_workflow(p)
    if parent is not None and parent not in state.chained:
        state.waiting.append(p)
        return out
    out.ready.append(p)
    _mark(state, p)
    _release_children(state, p.event.event_id, out)
    return out


def _mark(state: WorkflowState, p: PendingEvent) -> None:
    state.mark_chained(p.event.event_id, p.digest)


def _release_children(state: WorkflowState, event_id: str, out: Admission) -> None:
    stack = [event_id]
    while stack and state.waiting:
        parent = stack.pop()
        children = [w for w in state.waiting if parent_in_workflow(w) == parent]
        if not children:
            continue
        state.waiting = [w for w in state.waiting if parent_in_workflow(w) != parent]
        children.sort(key=lambda w: w.offset)
        for child in children:
            out.ready.append(child)
            _mark(state, child)
        stack.extend(reversed([c.event.event_id for c in children]))
