"""End-to-end benchmark on the embedded stack: raw broker ceiling, then the whole pipeline under load.

Processes: the load generator (``bench.loadgen``, the scenario through the real SDK), Tansu,
one or two faust processor workers, the ClickHouse sink as a thread of this process (chDB
allows one process per data directory, so the sink and the ClickHouse engine share this
process), and an observer (``bench.observer``) that times chain entries and violations.

Produce → queryable is timed by wrapping the sink's ClickHouse client: a row is queryable
once the synchronous insert that carries it has returned (spot-checked with SELECTs). The
produce time of every event is its ``event_time``, stamped by the SDK just before
``produce()``; all processes share this machine's clock.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench.ceiling import run_ceiling, verify_throughput
from bench.measure import TimedClient
from bench.pipeline_run import BenchOptions, Phase, PipelineRun, phase_doc
from infra.demo import demo_signers
from infra.embedded import (
    Stack,
    open_stack,
    terminate_on_signals,
)
from lineage.config import Settings

__all__ = ["BenchOptions", "run_bench"]


# -- the whole run ---------------------------------------------------------------


@contextlib.contextmanager
def bench_stack(opts: BenchOptions) -> Iterator[tuple[Stack, Settings, TimedClient, Path]]:
    from sinks.clickhouse import open_client

    root = Settings(data_dir=opts.data_dir) if opts.data_dir else Settings()
    settings = root.model_copy(
        update={
            "data_dir": root.data_dir / "bench",
            "partitions": opts.partitions,
            "topic_prefix": "bench",
        }
    )
    if settings.chdb_path.exists():
        shutil.rmtree(settings.chdb_path)
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    demo_signers(settings)
    with terminate_on_signals(), open_stack(settings, create=False) as stack:
        yield stack, settings, TimedClient(open_client(settings)), log_dir


def run_bench(opts: BenchOptions, progress: Any) -> dict[str, Any]:
    """Run the benchmark; ``progress(text)`` reports what it is doing. Returns every figure."""
    t_start = time.monotonic()
    with bench_stack(opts) as (stack, settings, client, log_dir):
        progress(
            f"ceiling run ({opts.ceiling_s:.0f} s, raw produce → consume on a broker of its own)"
        )
        ceiling = run_ceiling(settings, log_dir, opts.ceiling_s)
        if opts.scaling:
            result = run_scaling(stack, settings, client, log_dir, opts, progress)
        else:
            result = run_pipeline(stack, settings, client, log_dir, opts, progress)
        result["ceiling"] = ceiling
        result["ceiling_events_per_s"] = round(ceiling["events_per_s"])
        if result.get("events_per_s"):
            result["ratio_to_ceiling"] = round(result["events_per_s"] / ceiling["events_per_s"], 4)
    result["wall_s"] = round(time.monotonic() - t_start, 1)
    result["code"] = code_version()
    result["machine"] = {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }
    return result


def code_version() -> dict[str, Any]:
    """The commit measured, and which tracked files differed from it (read-only git calls)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    changed = [
        line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
    ]
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "uncommitted_changes": changed,
    }


def run_pipeline(
    stack: Stack,
    settings: Settings,
    client: TimedClient,
    log_dir: Path,
    opts: BenchOptions,
    progress: Any,
) -> dict[str, Any]:
    run = PipelineRun(
        stack,
        settings,
        client,
        tag="main",
        partitions=opts.partitions,
        workers=1,
        observe=True,
        log_dir=log_dir,
    )
    spot: list[bool] = []
    try:
        progress("starting the processor, the sink and the observer; warm-up")
        run.start()
        run.warm_up()
        if opts.rate:
            progress(f"load phase: {opts.rate:,.0f} events/s for {opts.duration:.0f} s")
            main = run.phase(
                Phase("steady", opts.rate, opts.duration),
                opts,
                max_in_flight=0,
                seed=11,
                drain_timeout=120.0,
                spot_checks=spot,
            )
            latency = main
        else:
            progress(
                f"throughput phase: as fast as the pipeline takes it (at most {opts.max_in_flight:,} events "
                f"in flight) for {opts.duration:.0f} s"
            )
            main = run.phase(
                Phase("throughput", None, opts.duration),
                opts,
                max_in_flight=opts.max_in_flight,
                seed=11,
                drain_timeout=120.0,
                spot_checks=spot,
            )
            half = max(main.events_per_s / 2, 10.0)
            progress(
                f"latency phase: half that load, {half:,.0f} events/s for {opts.duration:.0f} s"
            )
            latency = run.phase(
                Phase("half-load", half, opts.duration),
                opts,
                max_in_flight=0,
                seed=13,
                drain_timeout=120.0,
                spot_checks=spot,
            )
        run.finish_observer()
        peaks = run.peak_rss()
        changelog_bytes = run.changelog_mean_bytes()
    finally:
        run.stop()
    progress("offline verification of everything the run stored (lineage verify --clickhouse)")
    verify = verify_throughput(client, run.settings)
    out: dict[str, Any] = {
        "events_per_s": round(main.events_per_s),
        "offered_events_per_s": round(main.offered_per_s),
        "latency_phase": latency.name,
        "latency_load_events_per_s": round(latency.events_per_s),
        "verify_entries_per_s": verify["entries_per_s"],
        "verify": verify,
        "processor_peak_rss_mb": peaks.get("processor"),
        "peak_rss_mb": peaks,
        "queryable_spot_checks": {"ok": sum(spot), "of": len(spot)},
        "config": {
            "partitions": opts.partitions,
            "workers": 1,
            "duration_s": opts.duration,
            "rate": opts.rate,
            "violations_share": opts.violations,
            "workflow_events": opts.workflow_events,
            "seal_every": settings.seal_every_events,
            "max_in_flight": opts.max_in_flight,
        },
        "phases": {p.name: phase_doc(p) for p in run.phases},
        "changelog_mean_record_bytes": None if changelog_bytes is None else round(changelog_bytes),
    }
    for p in run.phases:
        per_event = p.changelog_records / p.rows if p.rows else None
        doc = out["phases"][p.name]
        doc["changelog_records_per_event"] = None if per_event is None else round(per_event, 3)
        doc["changelog_bytes_per_event"] = (
            None
            if per_event is None or changelog_bytes is None
            else round(per_event * changelog_bytes)
        )
    for kind in ("chained", "queryable", "violation"):
        figures: dict[str, float | None] = getattr(latency, f"{kind}_ms")
        for q in ("p50", "p95", "p99"):
            out[f"{q}_{kind}_ms"] = figures.get(q)
    out["cpu_s_per_1000_events"] = {n: main.per_1000(n) for n in main.cpu_s}
    return out


SCALING = ((1, 4), (2, 4), (1, 16), (2, 16))


def run_scaling(
    stack: Stack,
    settings: Settings,
    client: TimedClient,
    log_dir: Path,
    opts: BenchOptions,
    progress: Any,
) -> dict[str, Any]:
    """Short closed-loop runs: 1 vs 2 processor workers, 4 vs 16 partitions."""
    duration = min(opts.duration, 20.0)
    rows: list[dict[str, Any]] = []
    for workers, partitions in SCALING:
        tag = f"w{workers}p{partitions}"
        progress(f"scaling: {workers} worker(s), {partitions} partitions, {duration:.0f} s")
        run = PipelineRun(
            stack,
            settings,
            client,
            tag=tag,
            partitions=partitions,
            workers=workers,
            observe=False,
            log_dir=log_dir,
        )
        try:
            run.start()
            run.warm_up()
            p = run.phase(
                Phase(tag, None, duration),
                opts,
                max_in_flight=opts.max_in_flight,
                seed=17,
                drain_timeout=60.0,
                spot_checks=[],
            )
            peaks = run.peak_rss()
        finally:
            run.stop()
        rows.append(
            {
                "workers": workers,
                "partitions": partitions,
                "events_per_s": round(p.events_per_s),
                "queryable_ms": p.queryable_ms,
                "complete": p.complete,
                "cpu_s_per_1000_events": {n: p.per_1000(n) for n in p.cpu_s},
                "peak_rss_mb": peaks,
                "cpu_utilisation": phase_doc(p)["cpu_utilisation"],
                "other_processes_cores": phase_doc(p)["other_processes_cores"],
            }
        )
    base = rows[0]["events_per_s"] or 1
    for r in rows:
        r["ratio"] = round(r["events_per_s"] / base, 3)
    return {"scaling": rows, "events_per_s": rows[0]["events_per_s"]}
