"""``lineage openlineage --transport kafka`` on the embedded broker: run events land on the topic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra.embedded import Broker, create_topics
from lineage_cli.openlineage_export import FACET_KEY, run_id

pytest.importorskip("openlineage.client", reason="needs the openlineage extra")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]

POPULATE = """
import sys, clickhouse_connect
from sinks import rows, schema
from tests.support.lineage_builder import build_dataset, decode_event
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
schema.migrate(client, "lineage")
data = build_dataset(workflows=2)
client.insert("lineage_entries", [rows.entry_row(e) for e in data.entries],
              column_names=list(rows.ENTRY_COLUMNS), database="lineage")
client.insert("checkpoints", [rows.checkpoint_row(c) for c in data.checkpoints],
              column_names=list(rows.CHECKPOINT_COLUMNS), database="lineage")
for wf in data.workflows:
    print(wf, decode_event(data.workflow_entries(wf)[0].event_bytes).agent_id)
"""


def consume(bootstrap: str, topic: str, want: int, timeout: float) -> list[Any]:
    """Up to ``want`` records of partition 0 of ``topic`` from offset 0, in at most ``timeout`` s.

    Assigned, not subscribed: a group join on the embedded broker can take most of the timeout.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ol-read-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
    finally:
        consumer.close()
    return got


def test_completed_workflows_are_sent_to_a_kafka_topic(broker: Broker, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "LINEAGE_DATA_DIR": str(data_dir),
        "LINEAGE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "PYTHONPATH": str(ROOT),
    }
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
    agents = dict(line.split() for line in made.stdout.splitlines())
    assert len(agents) == 2
    topic = f"ol-{uuid.uuid4().hex[:10]}"
    create_topics(broker.bootstrap, [topic], 1)

    cmd = [sys.executable, "-m", "lineage_cli", "openlineage", "--transport", "kafka"]
    run = subprocess.run(
        [*cmd, "--kafka-topic", topic, "--namespace", "agents-it"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 workflows sent as OpenLineage run events via kafka" in run.stdout

    records = consume(broker.bootstrap, topic, want=5, timeout=10)
    assert len(records) == 4, "a START and a COMPLETE per workflow, nothing more"
    events = [json.loads(r.value()) for r in records]
    by_wf: dict[str, list[dict[str, Any]]] = {}
    for ev, rec in zip(events, records, strict=True):
        workflow = ev["run"]["facets"][FACET_KEY]["workflowId"]
        by_wf.setdefault(workflow, []).append(ev)
        assert ev["run"]["runId"] == run_id(workflow)
        assert ev["job"]["namespace"] == "agents-it"
        assert ev["job"]["name"] == agents[workflow]
        assert rec.key().decode() == f"run:agents-it/{agents[workflow]}"
    assert set(by_wf) == set(agents)
    for pair in by_wf.values():
        assert [e["eventType"] for e in pair] == ["START", "COMPLETE"], "in order on the topic"
