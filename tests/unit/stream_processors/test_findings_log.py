"""The processor logs every violation in its partition's findings log and signs its root."""

from __future__ import annotations

from lineage import binding, findings, note
from lineage.model import EventKind
from stream_processors.state import DictStore
from tests.support.events import SimEmitter, make_pipeline, registry_for, run, to_records


def _unauthorized(em: SimEmitter, wf: str, n: int) -> list:  # type: ignore[type-arg]
    """Executions without an authorization: one HIGH finding each."""
    out = em.event(wf)
    root = out[0].event.event_id  # type: ignore[union-attr]
    for _ in range(n):
        out += em.event(wf, kind=EventKind.EXECUTION_STARTED, parent_event_id=root)
    return out


def test_violations_are_logged_in_order_across_a_restart() -> None:
    em = SimEmitter("svc-a", "1")
    store = DictStore()
    registry = registry_for(em)
    msgs = _unauthorized(em, "wf-1", 2) + _unauthorized(em, "wf-2", 2)
    first = run(make_pipeline(registry, store), to_records(msgs[:3])).outputs
    again = make_pipeline(registry, store)  # restored from the state store
    second = run(again, to_records(msgs[3:], start=3)).outputs
    logged = first.violations + second.violations
    assert len(logged) == 4
    assert [findings.index_of(v.violation_id) for v in logged] == [0, 1, 2, 3]
    assert again.findings_log.size == 4

    cp = again.maybe_checkpoint(force=True)
    assert cp is not None
    signed = findings.signed_findings(note.parse_checkpoint(binding.note_text(cp.note)))
    assert signed == findings.root_of(findings.leaf(v) for v in logged)


def test_containments_name_the_logged_violation() -> None:
    em = SimEmitter("svc-a", "1")
    stranger = SimEmitter("svc-b", "1")  # not in the registry: UNKNOWN_KEY, CRITICAL
    out = run(
        make_pipeline(registry_for(em)),
        to_records(em.event("wf-1") + stranger.event("wf-1", parent_event_id="svc-a#1/0")),
    ).outputs
    ids = {v.violation_id for v in out.violations}
    assert out.containments
    assert all(c.violation_id in ids for c in out.containments)
    assert all(findings.index_of(c.violation_id) is not None for c in out.containments)


def test_a_replayed_batch_logs_nothing_twice() -> None:
    em = SimEmitter("svc-a", "1")
    store = DictStore()
    pl = make_pipeline(registry_for(em), store)
    records = to_records(_unauthorized(em, "wf-1", 2))
    first = run(pl, records).outputs
    replayed = run(pl, records).outputs
    assert len(first.violations) == 2 and replayed.violations == []
    assert pl.findings_log.size == 2
