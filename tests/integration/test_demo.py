"""The main job as a user runs it: ``lineage demo``, then the analyst query pack on its data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lineage.querypack import load_pack

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "docs" / "queries.sql"


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


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("demo")
    run = lineage(data_dir, "demo", "--events", "1500", "--workflows", "30", timeout=300)
    assert run.returncode == 0, (
        f"demo failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )
    (data_dir / "demo-output.txt").write_text(run.stdout)
    yield data_dir


def query_json(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    run = lineage(data_dir, "query", *args, "--format", "json")
    assert run.returncode == 0, f"query {args} failed: {run.stderr[-2000:]}"
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


def test_demo_summary(demo_dir: Path) -> None:
    out = (demo_dir / "demo-output.txt").read_text()
    assert "OK:" in out and "chained, verified lineage" in out
    for vtype in (
        "UNAUTHORIZED_EXECUTION",
        "DENIED_EXECUTION",
        "EXPIRED_AUTHORIZATION",
        "DEPTH_EXCEEDED",
        "UNKNOWN_KEY",
        "UNTRUSTED_AUTHORIZER",
    ):
        assert vtype in out, f"the demo summary should list {vtype} among the violations caught"


def test_count_matches_demo(demo_dir: Path) -> None:
    run = lineage(demo_dir, "query", "SELECT count() FROM lineage_entries FINAL", "--format", "csv")
    assert run.returncode == 0, run.stderr
    assert run.stdout.endswith("\n") and "\r" not in run.stdout, "csv must be usable in $(...)"
    emitted = int(
        next(
            line.split("│")[2]
            for line in (demo_dir / "demo-output.txt").read_text().splitlines()
            if "events emitted (trusted emitters)" in line
        ).strip()
    )
    assert int(run.stdout.strip()) == emitted


@pytest.mark.parametrize("name", sorted(load_pack(PACK)))
def test_every_pack_query_runs_as_is_with_results(demo_dir: Path, name: str) -> None:
    rows = query_json(demo_dir, "--file", str(PACK), "--name", name)
    assert rows, f"query {name} returned no rows on the demo data"


def test_pack_answers_known_scenario_facts(demo_dir: Path) -> None:
    unauthorized = query_json(demo_dir, "--file", str(PACK), "--name", "unauthorized_executions")
    problems = sorted(r["problem"] for r in unauthorized)
    # The scenario injects one execution without authorization, one after a DENY, one expired.
    assert problems == ["DENIED", "EXPIRED", "NO_AUTHORIZATION"], problems
    assert all(r["flagged"] for r in unauthorized), "each must also have raised a violation"
    contained = query_json(demo_dir, "--file", str(PACK), "--name", "contained_workflows")
    causes = sorted(t for r in contained for t in r["violation_types"] if t != "CONTAINED_WORKFLOW")
    assert "UNTRUSTED_AUTHORIZER" in causes, contained
    quarantine = query_json(demo_dir, "--file", str(PACK), "--name", "quarantine_by_reason")
    assert any(r.get("reason_code") == "UNKNOWN_KEY" for r in quarantine), quarantine
    systems = query_json(
        demo_dir,
        "--file",
        str(PACK),
        "--name",
        "agent_systems",
        "--param",
        "agent=agent:orchestrator",
    )
    touched = json.dumps(systems)
    assert "web:search" in touched or "api:" in touched, systems


def test_demo_verifies_with_named_keys_and_the_store_alone_is_not_trust(demo_dir: Path) -> None:
    """Issue 11 class 1: the demo's own verification names its keys; without them it is exit 3."""
    out = " ".join((demo_dir / "demo-output.txt").read_text().split())
    assert out.count("VERIFIED") >= 2, out[-3000:]
    assert "named by the demo as the auditor's" in out, out[-3000:]
    bundle = next((demo_dir / "evidence").glob("*.json"))
    registry = demo_dir / "keys" / "registry.json"
    trusted = lineage(demo_dir, "verify", str(bundle), "--registry", str(registry), "--json")
    assert trusted.returncode == 0, trusted.stdout[-2000:]
    assert json.loads(trusted.stdout)["workflows"] == [bundle.stem]
    untrusted = lineage(demo_dir, "verify", str(bundle), "--json")
    assert untrusted.returncode == 3, untrusted.stdout[-2000:]
    store = lineage(demo_dir, "verify", "--clickhouse", "--json", timeout=300)
    assert store.returncode == 3, store.stdout[-2000:]
    assert (
        "operator's own registry (not independent)"
        in json.loads(store.stdout)["trust"]["seal_keys"]
    )
