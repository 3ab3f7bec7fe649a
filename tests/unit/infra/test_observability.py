"""Metrics definitions, the /metrics endpoint, alert rules and Grafana dashboards agree with each other."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from infra.metrics import LineageMetrics, metric_names, serve_metrics
from lineage.config import Settings
from sinks import rows, schema
from tests.support.lineage_builder import build_dataset

ROOT = Path(__file__).resolve().parents[3]
ALERTS = ROOT / "infra" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "infra" / "grafana").glob("*.json"))
DEFINED = metric_names(LineageMetrics("test")) | {"up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
PROMQL_WORDS |= {"unless", "bool", "offset", "inf", "nan"}


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers that are not functions, labels or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\$\w+", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[m.end() :].lstrip().startswith("("):
            continue  # a function
        if m.group() in PROMQL_WORDS or re.fullmatch(r"[0-9.e+-]+", m.group()):
            continue
        names.add(m.group())
    return names


def test_names_follow_prometheus_conventions() -> None:
    m = LineageMetrics("test")
    for family in m.registry.collect():
        assert re.fullmatch(r"lineage_[a-z0-9_]+", family.name), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        else:
            assert not family.name.endswith("_total"), f"{family.name}: only counters end in _total"
        if {"duration", "age"} & set(family.name.split("_")):
            assert family.name.endswith("_seconds"), f"{family.name}: unit missing from the name"
        assert family.documentation, f"{family.name} has no help text"
    expected = {
        "lineage_processor_records_in_total",
        "lineage_processor_events_in_total",
        "lineage_processor_entries_out_total",
        "lineage_contained_workflows_total",
        "lineage_violations_total",
        "lineage_quarantined_records_total",
        "lineage_seal_failures_total",
        "lineage_retries_total",
        "lineage_consumer_lag_records",
        "lineage_checkpoint_age_seconds",
        "lineage_open_workflows",
        "lineage_batch_size_records_bucket",
        "lineage_stage_duration_seconds_bucket",
    }
    assert expected <= DEFINED, expected - DEFINED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_on_the_configured_port() -> None:
    assert serve_metrics(Settings(), LineageMetrics("x")) is None, "no port, no endpoint"
    now = [1000.0]
    m = LineageMetrics("processor", clock=lambda: now[0])
    port = free_port()
    server = serve_metrics(Settings(metrics_port=port), m)
    assert server is not None
    try:
        m.violations.labels("BAD_SIGNATURE", "CRITICAL").inc()
        m.consumer_lag.labels("g", "lineage.events", "3").set(42)
        m.checkpoint_published(2, at=970.0)
        with m.timed("chain", 17):
            pass
        m.observe_bridge({"BackpressureTimeout": 3})
        m.observe_bridge({"BackpressureTimeout": 5})
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert (
        'lineage_violations_total{severity="CRITICAL",violation_type="BAD_SIGNATURE"} 1.0' in body
    )
    assert (
        'lineage_consumer_lag_records{group="g",partition="3",topic="lineage.events"} 42.0' in body
    )
    assert 'lineage_checkpoint_age_seconds{partition="2"} 30.0' in body
    assert 'lineage_batch_size_records_bucket{le="25.0",stage="chain"} 1.0' in body
    assert 'lineage_otel_bridge_failed_events_total{reason="BackpressureTimeout"} 5.0' in body
    assert 'lineage_build_info{component="processor",version="0.1.0"} 1.0' in body


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_every_alert_reads_defined_metrics_and_says_what_to_do() -> None:
    found = rules()
    names = {r["alert"] for r in found}
    assert {
        "LineageCriticalViolation",
        "LineageQuarantineSpike",
        "LineageConsumerLagGrowing",
        "LineageCheckpointTooOld",
        "LineageComponentDown",
    } <= names
    for r in found:
        used = promql_metrics(r["expr"])
        assert used, f"{r['alert']}: no metric found in {r['expr']!r}"
        assert used <= DEFINED, f"{r['alert']}: undefined {used - DEFINED}"
        assert r["labels"]["severity"] in ("page", "ticket")
        assert r["annotations"]["summary"] and r["annotations"]["description"]


def test_the_metric_parser_catches_a_misspelt_name() -> None:
    assert promql_metrics('sum by (x) (rate(lineage_violation_total{a="b"}[5m])) > 0') == {
        "lineage_violation_total"
    }
    assert "lineage_violation_total" not in DEFINED


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert test.returncode == 0, test.stdout + test.stderr


def targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboards_load_and_prometheus_queries_name_defined_metrics() -> None:
    assert {p.name for p in DASHBOARDS} == {"lineage-metrics.json", "lineage-clickhouse.json"}
    seen: set[str] = set()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"] and dash["panels"]
        assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
        for t in targets(dash):
            if t["datasource"]["type"] != "prometheus":
                continue
            used = promql_metrics(t["expr"])
            assert used, f"{path.name}: no metric in {t['expr']!r}"
            assert used <= DEFINED, f"{path.name}: undefined {used - DEFINED}"
            seen |= used
    assert "lineage_consumer_lag_records" in seen and "lineage_violations_total" in seen
    assert "lineage_processor_events_in_total" in seen, "the throughput panel shows events in"


def documented_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """docs/operations.md's metric table: name -> (type, labels)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    rows = re.findall(r"^\| `(lineage_\w+)` \| (\w+) \| ([^|]*) \|", text, re.M)
    return {
        name: (kind, tuple(sorted(re.findall(r"`(\w+)`", labels)))) for name, kind, labels in rows
    }


def defined_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every metric of ``LineageMetrics``: exposed name -> (type, labels)."""
    m = LineageMetrics("test")
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for metric in vars(m).values():
        if isinstance(metric, MetricWrapperBase):
            name = metric._name + ("_total" if metric._type == "counter" else "")
            found[name] = (metric._type, tuple(sorted(metric._labelnames)))
    m.checkpoint_published(0)  # the custom collector's labels show once it has a sample
    for family in m._checkpoints.collect():
        found[family.name] = (family.type, tuple(sorted(family.samples[0].labels)))
    return found


def test_operations_doc_lists_every_metric_with_its_type_and_labels() -> None:
    documented, defined = documented_metrics(), defined_metrics()
    assert len(defined) >= 19
    assert documented == defined


def grafana_macros(sql: str, database: str) -> str:
    """The ClickHouse datasource's macros, expanded as it does for a fixed time range."""
    lo, hi = "toDateTime('2000-01-01 00:00:00', 'UTC')", "toDateTime('2100-01-01 00:00:00', 'UTC')"
    sql = sql.replace("${database}", database)
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"(\1 >= {lo} AND \1 <= {hi})", sql)
    return sql.replace("$__fromTime", lo).replace("$__toTime", hi)


@pytest.mark.timeout(120)
def test_clickhouse_dashboard_queries_run_on_the_tables(chdb_client: Any, ch_database: str) -> None:
    schema.migrate(chdb_client, ch_database)
    data = build_dataset(workflows=3)
    chdb_client.insert(
        "lineage_entries",
        [rows.entry_row(e) for e in data.entries],
        column_names=list(rows.ENTRY_COLUMNS),
        database=ch_database,
    )
    dash = json.loads((ROOT / "infra" / "grafana" / "lineage-clickhouse.json").read_text())
    queries = [
        t for t in targets(dash) if t["datasource"]["type"] == "grafana-clickhouse-datasource"
    ]
    assert len(queries) == len(dash["panels"])
    tables = {
        r[0]
        for r in chdb_client.query(
            "SELECT name FROM system.tables WHERE database = {db:String}",
            parameters={"db": ch_database},
        ).result_rows
    }
    for t in queries:
        sql = t["rawSql"]
        for table in re.findall(r"\$\{database\}\.(\w+)", sql):
            assert table in tables, f"{table} is not a table or view of the schema"
        chdb_client.query(grafana_macros(sql, ch_database))  # an unknown table or column raises
    with pytest.raises(Exception, match="verificaton"):
        chdb_client.query(f"SELECT verificaton FROM {ch_database}.lineage_entries")
    workflows = next(t for t in queries if "workflow_summary" in t["rawSql"])
    assert len(chdb_client.query(grafana_macros(workflows["rawSql"], ch_database)).result_rows) == 3
