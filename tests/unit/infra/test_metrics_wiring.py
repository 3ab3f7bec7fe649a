"""The processor's, the sink's and the web app's update functions move the right figures.

Processor figures come from real pipeline outputs (SimEmitter records through PartitionPipeline);
every metric read here is one infra/metrics.py defines.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from console.metrics import publish
from infra.metrics import STAGES, LineageMetrics, metric_names
from lineage.config import Settings
from lineage.model import EventKind, QuarantineReason, QuarantineRecord
from sinks import metrics as sink_metrics
from stream_processors import metrics as processor_metrics
from stream_processors.metrics import ProcessorMetrics
from tests.support.events import (
    Message,
    SimEmitter,
    make_pipeline,
    registry_for,
    to_records,
)


def value(m: LineageMetrics, name: str, **labels: str) -> float:
    """A sample's value (0.0 when absent); ``name`` must be a defined sample name."""
    assert name in metric_names(m) or name.removesuffix("_total") in metric_names(m), name
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def _tamper(m: Message) -> Message:
    return Message(m.key, m.value[:-1] + bytes([m.value[-1] ^ 1]), seal=m.seal)


def test_processor_counts_a_batch_with_entries_violations_quarantine_and_duplicates() -> None:
    good = SimEmitter("svc-a", seal_every=1)
    bad = SimEmitter("svc-b", seal_every=2)
    msgs = good.chain("wf-1", 3)
    msgs += good.event("wf-1", kind=EventKind.WORKFLOW_COMPLETED, parent_event_id="svc-a#1/2")
    msgs += good.chain("wf-2", 1)
    forged = bad.event("wf-3") + bad.event("wf-3", kind=EventKind.EXECUTION_COMPLETED)
    forged[-1] = _tamper(forged[-1])  # the seal over both events: BAD_SIGNATURE, quarantined
    records = to_records(msgs + forged + [msgs[0]])  # and one exact redelivery
    m = LineageMetrics("processor")
    obs = ProcessorMetrics(m)
    pl = make_pipeline(registry_for(good, bad))

    out, seek = obs.process(pl, records)

    assert seek is None
    assert value(m, "lineage_processor_records_in_total", partition="0") == len(records)
    events = [r for r in msgs + forged + [msgs[0]] if r.event is not None]
    assert len(events) == 8 < len(records), "per-event framing: seals are records, not events"
    assert value(m, "lineage_processor_events_in_total", partition="0") == 8
    assert value(m, "lineage_processor_entries_out_total", partition="0") == len(out.entries) == 5
    assert [v.violation_type.value for v in out.violations] == ["BAD_SIGNATURE"] * 2
    assert (
        value(m, "lineage_violations_total", violation_type="BAD_SIGNATURE", severity="CRITICAL")
        == 2
    )
    assert value(m, "lineage_seal_failures_total", reason="bad_signature") == 2
    assert value(m, "lineage_quarantined_records_total", reason_code="BAD_SIGNATURE") == 2
    assert value(m, "lineage_processor_duplicates_total") == pl.counters["duplicates"] >= 1
    assert value(m, "lineage_contained_workflows_total") == len(out.containments) == 1
    assert value(m, "lineage_open_workflows") == 1, "wf-1 completed, wf-2 still open"
    assert value(m, "lineage_reorder_buffer_events", partition="0") == 0
    for stage in ("decode", "authenticate", "policy"):
        assert value(m, "lineage_stage_duration_seconds_count", stage=stage) == 1
        assert value(m, "lineage_batch_size_records_sum", stage=stage) == len(records)

    more = good.chain("wf-4", 2)
    obs.process(pl, to_records(more, start=len(records)))
    assert value(m, "lineage_processor_records_in_total", partition="0") == len(records) + 4
    assert value(m, "lineage_processor_events_in_total", partition="0") == 8 + 2
    assert value(m, "lineage_open_workflows") == 2


def test_open_workflows_are_capped_at_the_most_recently_started() -> None:
    em = SimEmitter(seal_every=1)
    m = LineageMetrics("processor")
    obs = ProcessorMetrics(m, max_open=3)
    pl = make_pipeline(registry_for(em))
    msgs = [r for i in range(5) for r in em.chain(f"wf-{i}", 1)]  # five starts, none completed
    obs.process(pl, to_records(msgs))
    assert value(m, "lineage_open_workflows") == 3
    assert list(obs._open) == ["wf-2", "wf-3", "wf-4"], "the longest-open are forgotten first"
    done = em.event("wf-0", kind=EventKind.WORKFLOW_COMPLETED, parent_event_id="svc-a#1/0")
    done += em.event("wf-3", kind=EventKind.WORKFLOW_COMPLETED, parent_event_id="svc-a#1/3")
    out, _ = obs.process(pl, to_records(done, start=len(msgs)))
    assert len(out.entries) == 2
    assert value(m, "lineage_open_workflows") == 2, "wf-0 was forgotten: its completion is a no-op"


def test_every_stage_label_is_observed_by_a_component() -> None:
    em = SimEmitter(seal_every=2)
    m = LineageMetrics("processor")
    obs = ProcessorMetrics(m)
    pl = make_pipeline(registry_for(em))
    obs.process(pl, to_records(em.chain("wf-1", 4)))
    assert pl.maybe_checkpoint(force=True) is not None
    sink_metrics.SinkMetrics(m).insert(FakeSink(), [object()], {"entries": 4})
    observed = {
        s.labels["stage"]
        for family in m.registry.collect()
        if family.name == "lineage_stage_duration_seconds"
        for s in family.samples
        if s.name.endswith("_count")
    }
    assert observed == set(STAGES)


def test_an_orphan_waits_in_the_reorder_gauge() -> None:
    em = SimEmitter(seal_every=1)
    m = LineageMetrics("processor")
    obs = ProcessorMetrics(m)
    pl = make_pipeline(registry_for(em))
    orphan = em.event("wf-1", kind=EventKind.EXECUTION_STARTED, parent_event_id="not-yet")
    obs.process(pl, to_records(orphan))
    assert value(m, "lineage_reorder_buffer_events", partition="0") == 1
    assert value(m, "lineage_processor_entries_out_total", partition="0") == 0


def test_checkpoint_age_restarts_when_the_log_is_signed_and_stays_fresh_when_idle() -> None:
    em = SimEmitter(seal_every=1)
    now = [1000.0]
    m = LineageMetrics("processor", clock=lambda: now[0])
    obs = ProcessorMetrics(m)
    pl = make_pipeline(registry_for(em))
    obs.process(pl, to_records(em.chain("wf-1", 2)))
    assert value(m, "lineage_checkpoint_age_seconds", partition="0") == 0.0, "none yet"
    cp = pl.maybe_checkpoint(force=True)
    assert cp is not None and cp.tree_size == 2
    now[0] = 1030.0
    assert value(m, "lineage_checkpoint_age_seconds", partition="0") == 30.0
    assert value(m, "lineage_stage_duration_seconds_count", stage="checkpoint") == 1
    assert pl.maybe_checkpoint(force=True) is None  # nothing new: everything is anchored
    assert value(m, "lineage_checkpoint_age_seconds", partition="0") == 0.0


def test_the_hook_without_metrics_is_plain_process() -> None:
    em = SimEmitter(seal_every=1)
    processor_metrics.install(None)
    pl = make_pipeline(registry_for(em))
    out, seek = processor_metrics.process(pl, to_records(em.chain("wf-1", 2)))
    assert len(out.entries) == 2 and seek is None
    assert not hasattr(pl, "_lineage_metrics")


class FakeSink:
    """The two things the sink hook reads: ``inserter.insert`` and ``stats.retries``."""

    def __init__(self, fail: int = 0, refuse: list[QuarantineRecord] | None = None) -> None:
        self.stats = SimpleNamespace(retries=0)
        self.fail = fail
        self.refuse = refuse or []
        self.inserted: list[list[Any]] = []
        self.inserter = SimpleNamespace(insert=self._insert)

    def _insert(self, parts: list[Any]) -> list[QuarantineRecord]:
        if self.fail:
            self.fail -= 1
            self.stats.retries += 1
            raise RuntimeError("ClickHouse down")
        self.inserted.append(parts)
        return self.refuse


def _quarantine(code: QuarantineReason) -> QuarantineRecord:
    return QuarantineRecord(
        reason_code=code,
        reason="test",
        raw_value=b"x",
        source_topic="t",
        source_partition=0,
        source_offset=1,
        raw_key=None,
    )


def test_sink_counts_rows_per_table_quarantine_and_retries_once_inserted() -> None:
    m = LineageMetrics("sink")
    sink_metrics.install(m)
    try:
        refused = [_quarantine(QuarantineReason.SINK_REJECTED)] * 2
        sink = FakeSink(fail=2, refuse=refused)
        parts: list[Any] = [object(), object()]
        counts = {"entries": 3, "violations": 1, "checkpoints": 0, "quarantine": 2}
        for _ in range(2):
            with pytest.raises(RuntimeError):
                sink_metrics.insert(sink, parts, counts)
        assert value(m, "lineage_sink_rows_inserted_total", table="lineage_entries") == 0
        assert sink_metrics.insert(sink, parts, counts) == refused
        assert sink.inserted == [parts]
        assert value(m, "lineage_sink_rows_inserted_total", table="lineage_entries") == 3
        assert value(m, "lineage_sink_rows_inserted_total", table="violations") == 1
        assert value(m, "lineage_sink_rows_inserted_total", table="quarantine") == 2
        assert value(m, "lineage_quarantined_records_total", reason_code="SINK_REJECTED") == 2
        assert value(m, "lineage_retries_total", operation="clickhouse_insert") == 2
        assert value(m, "lineage_stage_duration_seconds_count", stage="insert") == 1
        assert value(m, "lineage_batch_size_records_sum", stage="insert") == 6
        sink.refuse = []
        sink_metrics.insert(sink, parts, {"entries": 1})
        assert value(m, "lineage_retries_total", operation="clickhouse_insert") == 2, (
            "no new retries"
        )
    finally:
        sink_metrics.install(None)


def test_health_sample_is_published_as_lag_and_checkpoint_age() -> None:
    now = [500.0]
    m = LineageMetrics("web", clock=lambda: now[0])
    settings = Settings(topic_prefix="tx", processor_group="pg", sink_group="sg")
    publish(
        m,
        settings,
        490.0,
        {
            0: {"processor_lag": 7, "sink_lag": 3, "checkpoint_age_s": 4.0},
            1: {"processor_lag": 0, "sink_lag": 0, "checkpoint_age_s": 1.0},
        },
    )
    t = settings.topics
    assert value(m, "lineage_consumer_lag_records", group="pg", topic=t.events, partition="0") == 7
    assert value(m, "lineage_consumer_lag_records", group="sg", topic=t.chain, partition="0") == 3
    assert value(m, "lineage_checkpoint_age_seconds", partition="0") == 14.0
    assert value(m, "lineage_checkpoint_age_seconds", partition="1") == 11.0


def test_child_processes_get_the_next_port() -> None:
    from infra.metrics import EMBEDDED_PROCESSOR_PORT_OFFSET, child_metrics_env

    assert child_metrics_env(Settings(), EMBEDDED_PROCESSOR_PORT_OFFSET) == {}
    assert child_metrics_env(Settings(metrics_port=9400), EMBEDDED_PROCESSOR_PORT_OFFSET) == {
        "LINEAGE_METRICS_PORT": "9401"
    }
