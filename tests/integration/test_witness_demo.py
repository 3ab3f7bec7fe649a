"""``lineage demo`` with its witness; then the issue's rollback attacks on the store, via the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def lineage(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LINEAGE_DATA_DIR=str(data_dir))
    env.pop("LINEAGE_KAFKA_BOOTSTRAP", None)
    return subprocess.run(
        [sys.executable, "-m", "lineage_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def tamper(data_dir: Path, *statements: str) -> None:
    """Run DELETEs on the demo's chDB in a child process (chDB: one data path per process)."""
    code = (
        "import sys, clickhouse_connect\n"
        f"c = clickhouse_connect.get_client(dsn='chdb://{data_dir / 'clickhouse'}')\n"
        "for s in sys.argv[1:]:\n"
        "    c.command(s + ' SETTINGS mutations_sync = 1')\n"
    )
    subprocess.run([sys.executable, "-c", code, *statements], check=True, timeout=120, cwd=ROOT)


def newest(data_dir: Path) -> dict[int, list[int]]:
    run = lineage(
        data_dir,
        "query",
        "SELECT partition, arraySort(groupArray(tree_size)) AS sizes FROM checkpoints FINAL "
        "GROUP BY partition ORDER BY partition",
        "--format",
        "json",
    )
    assert run.returncode == 0, run.stderr
    return {r["partition"]: r["sizes"] for r in map(json.loads, run.stdout.splitlines())}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("witness-demo")
    run = lineage(data_dir, "demo", "--events", "600", "--workflows", "20", timeout=400)
    assert run.returncode == 0, f"demo failed:\n{run.stdout[-4000:]}\n{run.stderr[-3000:]}"
    (data_dir / "demo-output.txt").write_text(run.stdout)
    yield data_dir


def verify_json(data_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    run = lineage(data_dir, "verify", *args, "--json")
    return run.returncode, json.loads(run.stdout)


def test_demo_bundle_verifies_with_the_witness_key(demo_dir: Path) -> None:
    out = (demo_dir / "demo-output.txt").read_text()
    assert "newest cosigned checkpoint" in out and "witness.lineage.local/demo+" in out
    key = lineage(demo_dir, "witness", "key").stdout.strip()
    bundle = next((demo_dir / "evidence").glob("*.json"))
    registry = demo_dir / "keys" / "registry.json"
    code, report = verify_json(
        demo_dir, str(bundle), "--registry", str(registry), "--witness-key", key
    )
    assert code == 0, report
    assert report["witness"]["newest_cosigned"]["witness"] == "+".join(key.split("+", 2)[:2])
    assert report["witness"]["newest_age_s"] >= 0
    stranger = "witness.example/x+" + key.split("+", 2)[1] + "+" + key.split("+", 2)[2]
    run = lineage(demo_dir, "verify", str(bundle), "--witness-key", stranger)
    assert run.returncode == 2 and "expected key id" in run.stdout + run.stderr


def test_rollback_attacks_on_the_store(demo_dir: Path, tmp_path: Path) -> None:
    key = lineage(demo_dir, "witness", "key").stdout.strip()
    trusted = tmp_path / "trusted.json"
    assert lineage(demo_dir, "witness", "state", "--out", str(trusted)).returncode == 0
    # The auditor names the registry (a1: the store's own registry alone is exit 3).
    registry = ("--registry", str(demo_dir / "keys" / "registry.json"))
    anchored = (*registry, "--trusted-checkpoints", str(trusted), "--witness-key", key)
    code, report = verify_json(demo_dir, "--clickhouse", *anchored)
    assert code == 0, report["failure"]
    assert report["trust"]["witnesses"] == ["+".join(key.split("+", 2)[:2])]
    assert not [g for g in report["not_proven"] if g.startswith("rows deleted together")]

    sizes = newest(demo_dir)
    # The attacks accumulate; partitions are checked in order, so each attack takes a lower one.
    p = max(sizes)
    # Back to the previous checkpoint, or (a fast run signed one per partition) half the log.
    keep = sizes[p][-2] if len(sizes[p]) > 1 else sizes[p][-1] // 2
    # 1. Delete the newest checkpoints of one partition together with the rows they cover.
    tamper(
        demo_dir,
        f"DELETE FROM lineage.lineage_entries WHERE source_partition = {p} AND log_index >= {keep}",
        f"DELETE FROM lineage.checkpoints WHERE partition = {p} AND tree_size > {keep}",
    )
    code, report = verify_json(demo_dir, "--clickhouse", *registry)
    assert code == 0, "without a trusted checkpoint the store still vouches for itself"
    assert [g for g in report["not_proven"] if g.startswith("rows deleted together")]
    code, report = verify_json(demo_dir, "--clickhouse", *anchored)
    assert code == 1
    assert report["failure"]["kind"] == "LOG_ROLLED_BACK"
    assert report["failure"]["where"]["partition"] == p
    assert report["failure"]["found"] == f"{keep} entries"
    # 2. Delete a whole (other) partition.
    other = min(sizes)
    tamper(
        demo_dir,
        f"DELETE FROM lineage.lineage_entries WHERE source_partition = {other}",
        f"DELETE FROM lineage.checkpoints WHERE partition = {other}",
    )
    code, report = verify_json(demo_dir, "--clickhouse", *anchored)
    assert code == 1 and report["failure"]["kind"] == "LOG_MISSING"
    assert report["failure"]["where"]["partition"] == other
    # 3. Delete everything.
    tamper(
        demo_dir,
        "DELETE FROM lineage.lineage_entries WHERE 1",
        "DELETE FROM lineage.checkpoints WHERE 1",
    )
    code, report = verify_json(demo_dir, "--clickhouse", *anchored)
    assert code == 1 and report["failure"]["kind"] == "LOG_MISSING"
    assert report["failure"]["where"] == {"logs": len(sizes)}
