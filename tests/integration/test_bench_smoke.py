"""The benchmarks run: a short ``lineage bench`` and the per-stage figures (figures are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = (
    "events_per_s",
    "ceiling_events_per_s",
    "p99_chained_ms",
    "p99_queryable_ms",
    "p99_violation_ms",
    "verify_entries_per_s",
    "processor_peak_rss_mb",
)


def test_lineage_bench_short_run_reports_every_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lineage_cli",
            "bench",
            "--duration",
            "4",
            "--json",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, f"bench failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    figures = json.loads(run.stdout)
    missing = [k for k in KEYS if k not in figures]
    assert not missing, f"bench JSON lacks {missing}"
    assert figures["events_per_s"] > 0 and figures["ceiling_events_per_s"] > 0


def test_stage_benchmark_runs(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.stages",
            "--events",
            "400",
            "--repeat",
            "1",
            "--orphans",
            "2000",
            "--active-workflows",
            "500",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout), "expected per-stage figures"
