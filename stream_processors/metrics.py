"""The processor's Prometheus figures, updated from each partition batch's pipeline outputs.

``run_worker`` calls ``install(LineageMetrics("processor"))``; the agent calls ``process(pipeline,
records)`` in place of ``pipeline.process(records)``. With nothing installed ``process`` is exactly
``pipeline.process``. Stage timings come from the pipeline's own collaborators (decoder,
authenticator, policy stage, checkpoint signing), wrapped once per pipeline object, so the
pipeline's code stays free of metrics.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from lineage.model import EventKind, ExecutionEvent, ViolationType
from stream_processors.pipeline import PartitionPipeline
from stream_processors.records import Outputs, RawRecord

if TYPE_CHECKING:  # prometheus-client is an optional extra; nothing here needs it at import
    from infra.metrics import LineageMetrics

SEAL_FAILURES = {
    ViolationType.BAD_SIGNATURE: "bad_signature",
    ViolationType.UNKNOWN_KEY: "unknown_key",
    ViolationType.UNSEALED_EVENT: "unsealed",
    ViolationType.DUPLICATE_CONFLICT: "equivocation",
}
"""Violation types that mean an emitter's seals did not authenticate, and the ``reason`` label of
each (a DUPLICATE_CONFLICT is an emitter signing two different things for one sequence number)."""

OPENS = frozenset({EventKind.WORKFLOW_STARTED})
CLOSES = frozenset({EventKind.WORKFLOW_COMPLETED})
MAX_OPEN_TRACKED = 100_000
"""Open workflows remembered at most (about 180 bytes each): past this the longest-open one is
forgotten, so workflows that never complete cannot grow the worker's memory without bound."""

F = TypeVar("F", bound=Callable[..., Any])


class ProcessorMetrics:
    """Updates one ``LineageMetrics`` from the partition pipelines it is handed."""

    def __init__(self, metrics: LineageMetrics, *, max_open: int = MAX_OPEN_TRACKED) -> None:
        self.metrics = metrics
        self.max_open = max_open
        self._spent: dict[str, float] = defaultdict(float)
        self._open: OrderedDict[str, None] = OrderedDict()  # oldest start first
        self._kinds: list[tuple[str, EventKind]] = []
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: the lookup costs more than the update it serves."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- timing ----------------------------------------------------------

    def _timed(self, stage: str, fn: F) -> F:
        spent = self._spent

        def timed(*args: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                spent[stage] += time.perf_counter() - start

        return timed  # type: ignore[return-value]

    def _instrument(self, pl: PartitionPipeline) -> None:
        """Wrap the pipeline's stage objects once, so each batch's stage time can be summed."""
        if getattr(pl, "_lineage_metrics", None) is self:
            return
        pl.decoder.decode = self._timed("decode", pl.decoder.decode)  # type: ignore[method-assign]
        pl.auth.on_event = self._timed("authenticate", pl.auth.on_event)  # type: ignore[method-assign]
        pl.auth.on_seal = self._timed("authenticate", pl.auth.on_seal)  # type: ignore[method-assign]
        check = self._timed("policy", pl.policy_stage.check)

        def policy_check(event: ExecutionEvent, *args: Any, **kw: Any) -> Any:
            self._kinds.append((event.workflow_id, event.kind))  # called once per chained event
            return check(event, *args, **kw)

        pl.policy_stage.check = policy_check  # type: ignore[method-assign]
        checkpoint = pl.maybe_checkpoint
        partition = pl.partition

        def maybe_checkpoint(*, force: bool = False) -> Any:
            start = time.perf_counter()
            cp = checkpoint(force=force)
            if cp is not None:
                self.metrics.stage_latency.labels("checkpoint").observe(time.perf_counter() - start)
            if pl.log.size <= pl.meta.checkpoint_size:
                # every entry is under a signed checkpoint: an idle partition is not "stale"
                self.metrics.checkpoint_published(partition)
            return cp

        pl.maybe_checkpoint = maybe_checkpoint  # type: ignore[method-assign]
        pl._lineage_metrics = self  # type: ignore[attr-defined]

    # -- one batch -------------------------------------------------------

    def process(
        self, pl: PartitionPipeline, records: list[RawRecord]
    ) -> tuple[Outputs, int | None]:
        """``pl.process(records)``, then every figure that batch moved."""
        self._instrument(pl)
        self._spent.clear()
        self._kinds.clear()
        before = dict(pl.counters)
        out, seek = pl.process(records)
        self.observe(pl, out, before, len(records), dict(self._spent))
        return out, seek

    def observe(
        self,
        pl: PartitionPipeline,
        out: Outputs,
        counters_before: dict[str, int],
        batch_records: int,
        stage_seconds: dict[str, float],
    ) -> None:
        """Update counters, gauges and histograms from one batch of partition ``pl.partition``."""
        m = self.metrics
        child = self._child
        part = str(pl.partition)

        def delta(name: str) -> int:
            return max(0, pl.counters.get(name, 0) - counters_before.get(name, 0))

        read = delta("records") + delta("replayed")
        if read:
            child(m.records_in, part).inc(read)
        events = delta("events")
        if events:
            child(m.events_in, part).inc(events)
        if out.entries:
            child(m.entries_out, part).inc(len(out.entries))
        for v in out.violations:
            child(m.violations, v.violation_type.value, v.severity.value).inc()
            reason = seal_failure_reason(v.violation_type)
            if reason is not None:
                child(m.seal_failures, reason).inc()
        for q in out.quarantine:
            child(m.quarantined, q.reason_code.value).inc()
        dups = delta("duplicates")
        if dups:
            m.duplicates.inc(dups)
        for cp in out.checkpoints:
            m.checkpoint_published(cp.partition)
        if out.containments:
            m.contained_workflows.inc(len(out.containments))
        self._track_open()
        child(m.reorder_waiting, part).set(pl.meta.counters.get("waiting", 0))
        for stage, seconds in stage_seconds.items():
            child(m.stage_latency, stage).observe(seconds)
            child(m.batch_size, stage).observe(batch_records)

    def _track_open(self) -> None:
        """Open workflows: started and not yet completed, as chained since this worker started;
        at most ``max_open`` of them, the most recently started."""
        opened = self._open
        changed = False
        for workflow_id, kind in self._kinds:
            if kind in OPENS:
                opened[workflow_id] = None
                if len(opened) > self.max_open:
                    opened.popitem(last=False)
                changed = True
            elif kind in CLOSES:
                opened.pop(workflow_id, None)
                changed = True
        self._kinds.clear()
        if changed:
            self.metrics.open_workflows.set(len(opened))


def seal_failure_reason(vtype: ViolationType) -> str | None:
    """The ``lineage_seal_failures_total`` reason of a violation, or None if it is not one."""
    return SEAL_FAILURES.get(vtype)


_installed: ProcessorMetrics | None = None


def install(metrics: LineageMetrics | None) -> ProcessorMetrics | None:
    """Make ``process`` update ``metrics`` (None: stop updating). Returns what is installed."""
    global _installed
    _installed = ProcessorMetrics(metrics) if metrics is not None else None
    return _installed


def process(pl: PartitionPipeline, records: Sequence[RawRecord]) -> tuple[Outputs, int | None]:
    """The agent's hook: ``pl.process(records)``, observed when metrics are installed."""
    obs = _installed
    if obs is None:
        return pl.process(list(records))
    return obs.process(pl, list(records))
