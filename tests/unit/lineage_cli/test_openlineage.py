"""``lineage openlineage`` on chDB: completed workflows → OpenLineage RunEvents through the file transport."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
from openlineage.client import OpenLineageClient
from typer.testing import CliRunner

from lineage_cli import openlineage_export
from lineage_cli.main import app
from lineage_cli.openlineage_export import (
    FACET_KEY,
    CheckedKafkaTransport,
    DeliveryError,
    ExportState,
    export,
    facet_schema,
    is_write,
    make_client,
    run_id,
    transport_config,
)
from sinks import rows, schema
from tests.support.lineage_builder import Dataset, build_dataset, decode_event

pytestmark = pytest.mark.timeout(120)
# The spec's RunEvent requirements written out, not the official OpenLineage.json: no installable
# package ships that file (see the schema's $comment for what was looked in).
RUN_EVENT_SCHEMA = json.loads(
    (Path(__file__).parent / "openlineage_runevent.schema.json").read_text()
)
ROOT = Path(__file__).resolve().parents[3]
CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(workflows=5)


@pytest.fixture
def db(chdb_client: Any, ch_database: str, data: Dataset) -> str:
    schema.migrate(chdb_client, ch_database)
    chdb_client.insert(
        "lineage_entries",
        [rows.entry_row(e) for e in data.entries],
        column_names=list(rows.ENTRY_COLUMNS),
        database=ch_database,
    )
    chdb_client.insert(
        "checkpoints",
        [rows.checkpoint_row(c) for c in data.checkpoints],
        column_names=list(rows.CHECKPOINT_COLUMNS),
        database=ch_database,
    )
    return ch_database


def file_client(path: Path) -> OpenLineageClient:
    return OpenLineageClient(config={"transport": transport_config("file", file=path)})


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_completed_workflows_become_valid_run_events(
    chdb_client: Any, db: str, data: Dataset, tmp_path: Path
) -> None:
    unfinished = data.workflows[0]
    chdb_client.command(
        f"ALTER TABLE {db}.lineage_entries DELETE WHERE workflow_id = '{unfinished}' "
        "AND kind = 'WORKFLOW_COMPLETED' SETTINGS mutations_sync = 1"
    )
    out = tmp_path / "ol.jsonl"
    state = ExportState(tmp_path / "exported")
    sent = list(export(chdb_client, db, file_client(out), state, namespace="agents"))
    expected = set(data.workflows) - {unfinished}
    assert {wf.workflow_id for wf in sent} == expected, "only completed workflows are exported"

    events = read_events(out)
    assert len(events) == 2 * len(expected)
    facet_validator = jsonschema.Draft202012Validator(facet_schema(), format_checker=CHECKER)
    for ev in events:
        jsonschema.Draft202012Validator(RUN_EVENT_SCHEMA, format_checker=CHECKER).validate(ev)
        uuid.UUID(ev["run"]["runId"])  # formats checked explicitly too, whatever jsonschema has
        datetime.fromisoformat(ev["eventTime"])
        assert urlparse(ev["producer"]).scheme == "https"
        facet_validator.validate(ev["run"]["facets"][FACET_KEY])

    by_wf: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        by_wf.setdefault(ev["run"]["facets"][FACET_KEY]["workflowId"], []).append(ev)
    for wf, pair in by_wf.items():
        chain = data.workflow_entries(wf)
        assert [e["eventType"] for e in pair] == ["START", "COMPLETE"]
        assert {e["run"]["runId"] for e in pair} == {run_id(wf)}
        start = pair[0]
        assert start["job"] == {
            "namespace": "agents",
            "name": decode_event(chain[0].event_bytes).agent_id,
            "facets": start["job"].get("facets", {}),
        }
        evidence = start["run"]["facets"][FACET_KEY]
        assert evidence["chainLength"] == len(chain)
        assert evidence["chainHead"] == chain[-1].entry_hash.hex()
        assert evidence["log"]["partition"] == chain[0].source_partition
        assert evidence["log"]["lastLogIndex"] == max(e.log_index for e in chain)
        assert evidence["checkpointSize"] > evidence["log"]["lastLogIndex"]
        assert evidence["verified"] is True and evidence["violations"] == 0
        assert f"lineage export --workflow {wf}" in evidence["verify"]
        systems = {(d["namespace"], d["name"]) for d in start["inputs"]}
        assert systems == {("crm", "accounts"), ("search", "web"), ("docs", "handbook")} & systems
        assert systems and start["outputs"] == [], "reads only: search, crm.read, docs.read"

    again = list(
        export(
            chdb_client,
            db,
            file_client(out),
            ExportState(tmp_path / "exported"),
            namespace="agents",
        )
    )
    assert again == [], "the state file keeps a restart from sending twice"


def test_a_workflow_not_yet_checkpointed_waits(
    chdb_client: Any, db: str, data: Dataset, tmp_path: Path
) -> None:
    chdb_client.command(f"TRUNCATE TABLE {db}.checkpoints")
    out = tmp_path / "ol.jsonl"
    assert list(export(chdb_client, db, file_client(out), ExportState(None), namespace="a")) == []
    assert not out.exists() or read_events(out) == []


def test_writes_are_outputs() -> None:
    assert is_write("tool.call:delete_records", "", "")
    assert is_write("tool.call:search", "POST", "")
    assert is_write("tool.call:query_db", "", "UPDATE")
    assert not is_write("tool.call:search", "GET", "SELECT")
    assert not is_write("tool.call:read_report", "", "")


def test_cli_is_registered_and_refuses_incomplete_transports(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["openlineage", "--help"])
    assert result.exit_code == 0 and "OpenLineage" in result.output
    result = runner.invoke(app, ["openlineage", "--transport", "file", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "expected --file PATH" in result.output
    with pytest.raises(Exception, match="expected one of console, file, http, kafka"):
        transport_config("smtp")
    for kind, kw in (
        ("http", {"url": "http://marquez.invalid:5000"}),
        ("kafka", {"kafka_bootstrap": "127.0.0.1:1", "kafka_topic": "openlineage"}),
        ("console", {}),
    ):
        client = make_client(transport_config(kind, **kw))
        assert client.transport.kind == kind
    assert isinstance(client_of("kafka").transport, CheckedKafkaTransport)


def client_of(kind: str) -> OpenLineageClient:
    return make_client(transport_config(kind, kafka_bootstrap="127.0.0.1:1", kafka_topic="ol"))


def test_an_undelivered_kafka_event_fails_the_export_and_is_not_recorded(
    chdb_client: Any, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openlineage_export, "KAFKA_DELIVERY_TIMEOUT_S", 1.0)
    ol = client_of("kafka")  # nothing listens on port 1: every delivery times out
    state = ExportState(tmp_path / "exported")
    with pytest.raises(DeliveryError, match="not delivered to Kafka topic ol"):
        list(export(chdb_client, db, ol, state, namespace="agents"))
    assert state.done == set() and not (tmp_path / "exported").exists()


POPULATE = """
import sys, clickhouse_connect
from sinks import rows, schema
from tests.support.lineage_builder import build_dataset
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
schema.migrate(client, "lineage")
data = build_dataset(workflows=2)
client.insert("lineage_entries", [rows.entry_row(e) for e in data.entries],
              column_names=list(rows.ENTRY_COLUMNS), database="lineage")
client.insert("checkpoints", [rows.checkpoint_row(c) for c in data.checkpoints],
              column_names=list(rows.CHECKPOINT_COLUMNS), database="lineage")
print(",".join(data.workflows))
"""


def test_the_command_streams_a_data_dir_to_a_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    data_dir = tmp_path / "data"
    env = {**os.environ, "LINEAGE_DATA_DIR": str(data_dir)}
    env.pop("LINEAGE_CLICKHOUSE_URL", None)
    made = subprocess.run(
        [sys.executable, "-c", POPULATE, str((data_dir / "clickhouse").resolve())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    workflows = made.stdout.strip().split(",")
    out = tmp_path / "ol.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "lineage_cli",
        "openlineage",
        "--transport",
        "file",
        "--file",
        str(out),
    ]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 workflows sent as OpenLineage run events via file" in run.stdout
    events = read_events(out)
    assert sorted(e["run"]["facets"][FACET_KEY]["workflowId"] for e in events) == sorted(
        workflows * 2
    )
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "0 workflows sent" in again.stdout, "the default state file remembers what was sent"
    assert (data_dir / "openlineage.exported").read_text().split() == [
        e["run"]["facets"][FACET_KEY]["workflowId"] for e in events if e["eventType"] == "START"
    ]
