"""``lineage up`` with LINEAGE_METRICS_PORT=P: the web app (and its in-process sink) serve /metrics on
P, the processor child on P + 1, and after a demo scenario both count it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.metrics import LineageMetrics, metric_names
from tests.console.stack import interrupt, wait_for

pytestmark = pytest.mark.integration
DEFINED = metric_names(LineageMetrics("names"))


def _free_pair() -> int:
    """A port P with P + 1 free too (best effort: checked, then released)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two consecutive free ports")


def _scrape(port: int) -> list[Any]:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read()
    except OSError:
        return []
    return [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]


def _sum(samples: list[Any], name: str, **labels: str) -> float:
    assert name in DEFINED, f"{name} is not defined in infra/metrics.py"
    return sum(
        float(s.value)
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.mark.timeout(150)
def test_lineage_up_serves_web_and_processor_metrics_on_consecutive_ports(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = _free_pair()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_")}
    env.update(
        LINEAGE_DATA_DIR=str(data), LINEAGE_CHECKPOINT_EVERY_S="0.5", LINEAGE_METRICS_PORT=str(port)
    )
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineage_cli", "up", "--port", "0", "--data-dir", str(data)],
        stdout=open(log, "w"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        lock = data / "console.json"
        wait_for(
            lambda: lock.exists() and json.loads(lock.read_text())["pid"] == proc.pid,
            90,
            f"lineage up to serve (log: {log.read_text()[-2000:] if log.exists() else ''})",
        )
        info = json.loads(lock.read_text())
        req = urllib.request.Request(
            info["url"] + "/api/demo/scenario",
            data=json.dumps({"events": 60, "workflows": 3}).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {info['token']}",
                "Content-Type": "application/json",
            },
        )
        urllib.request.urlopen(req, timeout=30).read()

        def counted() -> bool:
            proc_m, web_m = _scrape(port + 1), _scrape(port)
            return (
                _sum(proc_m, "lineage_processor_entries_out_total") >= 60
                and _sum(web_m, "lineage_sink_rows_inserted_total", table="lineage_entries") >= 60
            )

        wait_for(
            counted, 90, f"both endpoints to count the scenario (log: {log.read_text()[-2000:]})"
        )
        proc_m, web_m = _scrape(port + 1), _scrape(port)
        assert _sum(proc_m, "lineage_build_info", component="processor") == 1
        assert _sum(web_m, "lineage_build_info", component="web") == 1
        # Kafka records read: sealed batches, each holding one or more of the 60 events
        assert 1 <= _sum(proc_m, "lineage_processor_records_in_total") <= 60
        # the HealthMonitor's samples: lag gauges for both groups on every partition
        wait_for(
            lambda: (
                len([s for s in _scrape(port) if s.name == "lineage_consumer_lag_records"]) >= 2
            ),
            20,
            "the web app to publish consumer lag",
        )
        lag = [s for s in _scrape(port) if s.name == "lineage_consumer_lag_records"]
        assert {s.labels["group"] for s in lag} == {"lineage-processor", "lineage-sink"}, lag
    finally:
        interrupt(proc)
