"""``lineage up`` as a user runs it: serves, routes the CLI, stops on Ctrl-C, restarts as a new epoch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.console.stack import wait_for

pytestmark = pytest.mark.integration
LINEAGE = [sys.executable, "-m", "lineage_cli"]


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_")}
    env["LINEAGE_DATA_DIR"] = str(data)
    env["LINEAGE_CHECKPOINT_EVERY_S"] = "0.5"
    return env


def _call(info: dict[str, Any], path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        info["url"] + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {info['token']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LINEAGE, *args, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(data),
    )


def _run_once(data: Path, log: Path) -> tuple[int, str]:
    """Start ``lineage up``, run a scenario from the API, use the CLI through it, Ctrl-C it."""
    proc = subprocess.Popen(
        [*LINEAGE, "up", "--port", "0", "--data-dir", str(data)],
        stdout=open(log, "w"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        env=_env(data),
    )
    try:
        lock = data / "console.json"
        wait_for(
            lambda: lock.exists() and json.loads(lock.read_text())["pid"] == proc.pid,
            90,
            f"lineage up to serve (log: {log.read_text()[-2000:] if log.exists() else ''})",
        )
        info = json.loads(lock.read_text())
        assert oct(lock.stat().st_mode & 0o777) == "0o600"
        _call(info, "/api/demo/scenario", {"events": 300, "workflows": 6})
        wait_for(lambda: not _call(info, "/api/demo/log")["running"], 60, "the scenario to finish")
        done = [i for i in _call(info, "/api/demo/log")["items"] if i.get("status") == "done"]
        emitted = int(done[-1]["events"])

        def stored() -> int:
            return int(_call(info, "/api/health")["tables"]["entries"])

        wait_for(lambda: stored() >= emitted, 90, f"{emitted} entries stored")
        # the CLI goes through the running app, which owns chDB
        q = _cli(data, "query", "SELECT count() FROM lineage_entries", "--format", "csv")
        assert q.returncode == 0, q.stderr
        assert int(q.stdout.strip()) >= emitted
        wf = _cli(
            data,
            "query",
            "SELECT workflow_id FROM lineage_entries WHERE workflow_id NOT LIKE '%/%' LIMIT 1",
            "--format",
            "csv",
        ).stdout.strip()
        # the witness of this run cosigns the stored checkpoints; the exported bundle carries them
        line = next(ln for ln in log.read_text().splitlines() if ln.strip().startswith("witness"))
        witness_url, witness_key = line.split()[1], line.split("(key ")[1].rstrip(")")
        wait_for(
            lambda: (
                b"lineage.local/" in urllib.request.urlopen(witness_url + "/checkpoints").read()
            ),
            60,
            "the witness to cosign a checkpoint",
        )
        out = data.parent / f"{wf}.json"
        registry = str(data / "keys" / "registry.json")
        verdicts: list[subprocess.CompletedProcess[str]] = []

        def witnessed_bundle() -> bool:
            ex = _cli(data, "export", "--workflow", wf, "--out", str(out))
            assert ex.returncode == 0, ex.stderr
            verdicts.append(
                _cli(data, "verify", str(out), "--registry", registry, "--witness-key", witness_key)
            )
            return verdicts[-1].returncode == 0

        # the bundle verifies with the witness key once a cosigned checkpoint covers the workflow
        try:
            wait_for(witnessed_bundle, 60, "a bundle that verifies with the witness key")
        except AssertionError as exc:
            last = verdicts[-1] if verdicts else None
            raise AssertionError(
                f"{exc}; last verify: {last and last.stdout + last.stderr}"
            ) from None
        time.sleep(1.5)  # let the last checkpoint cover everything before verifying all of it
        v = _cli(data, "verify", "--clickhouse", "--registry", str(data / "keys" / "registry.json"))
        assert v.returncode == 0, v.stdout + v.stderr
        assert "VERIFIED" in v.stdout
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        assert not lock.exists(), "the lock file is removed on exit"
        return code, wf
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_lineage_up_serves_routes_the_cli_stops_and_restarts_as_a_new_epoch(
    tmp_path: Path,
) -> None:
    """Without a broker snapshot (a run that was killed saves none) a restart begins a new epoch;
    tests/console/test_up_resume.py has the restart that resumes."""
    data = tmp_path / "data"
    code, first_wf = _run_once(data, tmp_path / "up1.log")
    assert code == 0
    snapshot = data / "broker-snapshot"
    assert (snapshot / "manifest.json").exists(), "a stopped run saves the broker's topics"
    shutil.rmtree(snapshot)  # as if the run had been killed: the next one cannot resume
    code, _ = _run_once(data, tmp_path / "up2.log")
    assert code == 0
    log1 = (tmp_path / "up1.log").read_text()
    log2 = (tmp_path / "up2.log").read_text()
    assert "new log epoch" in log2

    def bootstrap(log: str) -> str:
        return next(ln.split()[2] for ln in log.splitlines() if "Kafka bootstrap" in ln)

    assert bootstrap(log1) == bootstrap(log2), "services reconnect to the same Kafka address"
    epoch = data / "epochs" / "1"
    assert json.loads((epoch / "EPOCH.json").read_text())["epoch"] == 1
    assert (epoch / "witness" / "state").is_dir(), "the witness's view of epoch 1 is archived"
    # the first run's lineage stays verifiable where it was archived, and the current one too
    v1 = _cli(epoch, "verify", "--clickhouse", "--registry", str(epoch / "keys" / "registry.json"))
    assert v1.returncode == 0, v1.stdout + v1.stderr
    q = _cli(
        epoch,
        "query",
        f"SELECT count() FROM lineage_entries WHERE workflow_id = '{first_wf}'",
        "--format",
        "csv",
    )
    assert int(q.stdout.strip()) > 0
    v2 = _cli(data, "verify", "--clickhouse", "--registry", str(data / "keys" / "registry.json"))
    assert v2.returncode == 0, v2.stdout + v2.stderr
