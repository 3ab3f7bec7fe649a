"""The processor's and the sink's /metrics, scraped over HTTP after a small workload on the embedded
stack, count what went through: records in, entries out, violations by type, rows inserted."""

from __future__ import annotations

import socket
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.metrics import LineageMetrics, metric_names
from lineage.model import EventKind
from sinks import metrics as sink_metrics
from tests.integration.conftest import Pipeline, wait_for

DEFINED = metric_names(LineageMetrics("names"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` on ``port``: (name, sorted labels) -> value; {} if not up yet."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of ``name`` over every sample whose labels include ``labels``; ``name`` must be defined."""
    assert name in DEFINED, f"{name} is not defined in infra/metrics.py"
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all((k, val) in ls for k, val in labels.items())
    )


@pytest.mark.timeout(90)
def test_processor_and_sink_metrics_count_the_workload(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc_port, sink_port = free_port(), free_port()
    monkeypatch.setenv("LINEAGE_METRICS_PORT", str(proc_port))  # child_env copies the environment
    pipeline.start_worker()
    monkeypatch.delenv("LINEAGE_METRICS_PORT")
    server = sink_metrics.start(pipeline.settings.model_copy(update={"metrics_port": sink_port}))
    assert server is not None
    try:
        pipeline.start_sink()
        workflows, events = 5, 0
        with pipeline.emitter("tool-runner", seal_every=4) as em:
            for i in range(workflows):
                wid = f"wf-metrics-{i}-{uuid.uuid4().hex[:6]}"
                start = em.emit(
                    workflow_id=wid,
                    kind=EventKind.WORKFLOW_STARTED,
                    principal="agent:o",
                    agent_id="agent:o",
                    action="workflow.start",
                )
                # an execution nobody authorized: the default policy raises a violation
                em.emit(
                    workflow_id=wid,
                    kind=EventKind.EXECUTION_STARTED,
                    principal="agent:o",
                    agent_id="agent:o",
                    action="tool.call:search",
                    resource="web:search",
                    parent_event_id=start.event_id,
                )
                events += 2
            assert em.flush(30).ok
        wait_for(
            lambda: (
                pipeline.count("lineage_entries") >= events
                and pipeline.count("violations") >= workflows
            ),
            60,
            f"{events} entries and {workflows}+ violations in ClickHouse "
            f"(worker log: {pipeline.worker_log()})",
        )
        types = {
            r[0].decode()
            for r in pipeline.rows("SELECT DISTINCT violation_type FROM {db}.violations")
        }
        violations = pipeline.count("violations")

        def processor_caught_up() -> bool:
            s = scrape(proc_port)
            return (
                total(s, "lineage_processor_entries_out_total") >= events
                and total(s, "lineage_violations_total") >= violations
            )

        wait_for(
            processor_caught_up, 20, f"processor /metrics on {proc_port} to count the workload"
        )
        proc = scrape(proc_port)
        seals = -(-events // 4)
        # one Kafka record per seal: a sealed batch holds the seal and the events it covers
        assert total(proc, "lineage_processor_records_in_total") >= seals
        assert total(proc, "lineage_processor_entries_out_total") == events
        for vtype in types:
            assert total(proc, "lineage_violations_total", violation_type=vtype) == pipeline.count(
                "violations", f"violation_type = '{vtype}'"
            ), vtype
        assert total(proc, "lineage_build_info", component="processor") == 1
        assert total(proc, "lineage_stage_duration_seconds_count", stage="decode") >= 1
        assert total(proc, "lineage_open_workflows") == workflows

        sink = scrape(sink_port)
        assert total(sink, "lineage_sink_rows_inserted_total", table="lineage_entries") >= events
        assert total(sink, "lineage_sink_rows_inserted_total", table="violations") >= violations
        assert total(sink, "lineage_stage_duration_seconds_count", stage="insert") >= 1
        assert total(sink, "lineage_build_info", component="sink") == 1
    finally:
        server.shutdown()
        sink_metrics.install(None)
