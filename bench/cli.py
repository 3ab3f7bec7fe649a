"""``lineage bench``: the end-to-end benchmark on the embedded stack (``register`` mounts it)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bench.e2e import BenchOptions, run_bench


def bench_cmd(
    duration: Annotated[float, typer.Option(help="seconds of load per phase")] = 60.0,
    rate: Annotated[
        float | None,
        typer.Option(
            help="events/s to offer (default: as fast as the pipeline takes them, then half of that for latency)"
        ),
    ] = None,
    violations: Annotated[
        float, typer.Option(help="share of workflows that misbehave on purpose")
    ] = 0.02,
    workflows: Annotated[
        int | None, typer.Option(help="at most this many workflows per phase (default: no limit)")
    ] = None,
    workflow_events: Annotated[int, typer.Option(help="events per workflow, about")] = 25,
    partitions: Annotated[int, typer.Option(help="partitions of every topic")] = 4,
    max_in_flight: Annotated[
        int,
        typer.Option(help="as-fast-as-possible mode: most events emitted but not yet queryable"),
    ] = 10_000,
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object (the table goes to stderr)")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="data dir (env LINEAGE_DATA_DIR, default ./.lineage); the bench works in DIR/bench",
        ),
    ] = None,
    scaling: Annotated[
        bool, typer.Option(help="short runs: 1 vs 2 processor workers, 4 vs 16 partitions")
    ] = False,
) -> None:
    """Measure the pipeline on the embedded stack: throughput, latencies, CPU and memory per process."""
    console = Console(stderr=as_json)
    opts = BenchOptions(
        duration=duration,
        rate=rate,
        violations=violations,
        workflows=workflows or 0,
        workflow_events=workflow_events,
        data_dir=data_dir,
        scaling=scaling,
        partitions=partitions,
        max_in_flight=max_in_flight,
    )
    result = run_bench(opts, lambda text: console.print(f"[bold]bench[/] {text}"))
    print_report(result, console)
    if as_json:
        print(json.dumps(result))


def _f(x: Any, fmt: str = ",.0f", unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:{fmt}}{unit}"


def print_report(r: dict[str, Any], console: Console) -> None:
    c = r["ceiling"]
    if "scaling" in r:
        t = Table(title="scaling (short closed-loop runs)")
        for col in (
            "workers",
            "partitions",
            "events/s",
            "ratio",
            "p99 queryable ms",
            "processor peak RSS MB",
        ):
            t.add_column(col, justify="right")
        for row in r["scaling"]:
            peaks = [v for k, v in row["peak_rss_mb"].items() if k.startswith("processor")]
            t.add_row(
                str(row["workers"]),
                str(row["partitions"]),
                _f(row["events_per_s"]),
                _f(row["ratio"], ".2f"),
                _f(row["queryable_ms"].get("p99")),
                ", ".join(_f(p) for p in peaks),
            )
        console.print(t)
        console.print(
            f"ceiling (raw produce → consume, same mix): {_f(c['events_per_s'])} events/s"
        )
        return
    t = Table(title="lineage bench: end to end on the embedded stack")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row(
        "ceiling: raw produce → consume, same events and producer settings",
        _f(c["events_per_s"], unit=" ev/s"),
    )
    t.add_row(
        "pipeline: emitted → queryable in ClickHouse (sustained)",
        _f(r["events_per_s"], unit=" ev/s"),
    )
    t.add_row("ratio to ceiling", _f(r.get("ratio_to_ceiling"), ".1%"))
    t.add_row(
        f"latencies measured at ({r['latency_phase']})",
        _f(r["latency_load_events_per_s"], unit=" ev/s"),
    )
    for kind, label in (
        ("chained", "produce → chained entry consumed"),
        ("queryable", "produce → queryable row"),
        ("violation", "produce → violation consumed"),
    ):
        t.add_row(
            f"{label}, p50 / p95 / p99 ms",
            " / ".join(_f(r.get(f"{q}_{kind}_ms"), ",.0f") for q in ("p50", "p95", "p99")),
        )
    v = r["verify"]
    t.add_row(
        "offline verification of the stored run (wall, query included / per CPU s)",
        f"{_f(v['entries_per_s'])} / {_f(v.get('entries_per_cpu_s'))} entries/s"
        + ("" if v.get("ok", True) else " [red]FAILED[/]")
        if v["entries_per_s"]
        else "not measured",
    )
    spot = r["queryable_spot_checks"]
    t.add_row("queryable spot checks (SELECT right after insert)", f"{spot['ok']}/{spot['of']}")
    t.add_row("wall time of the benchmark", _f(r["wall_s"], ".0f", " s"))
    code = r.get("code", {})
    t.add_row(
        "code measured",
        f"{code.get('commit')} + {len(code.get('uncommitted_changes', []))} changed files",
    )
    console.print(t)
    console.print(f"  verification: {v['note']}")
    main = next(iter(r["phases"].values()))
    p = Table(
        title=f"per process, {next(iter(r['phases']))} phase ({main['rows_queryable']:,} events)"
    )
    for col in ("process", "CPU s / 1,000 events", "CPU cores used", "peak RSS MB"):
        p.add_column(col, justify="right" if col != "process" else "left")
    for name, per in r["cpu_s_per_1000_events"].items():
        p.add_row(
            name,
            _f(per, ".3f"),
            _f(main["cpu_utilisation"].get(name), ".2f"),
            _f(r["peak_rss_mb"].get(name)),
        )
    console.print(p)
    console.print(
        "  sink = this process: sink thread "
        f"({main['sink_thread_cpu_s']:.1f} s CPU) + chDB engine threads + bench bookkeeping "
        f"({main.get('bench_bookkeeping_cpu_s', 0):.1f} s decoding rows for latencies); "
        "observer = measurement only"
    )
    mem = main.get("processor_memory", {})
    if mem.get("samples", 0) >= 4:
        console.print(
            f"  processor memory over the phase: {mem['first_mb']:.0f} → {mem['mid_mb']:.0f} → "
            f"{mem['last_mb']:.0f} MB, second half {mem['second_half_growth_mb_per_min']:+.1f} "
            f"MB/min ({'flat' if mem['flat'] else '[red]growing[/]'}; soak: --duration 300)"
        )
    ph = Table(title="phases")
    for col in (
        "phase",
        "offered ev/s",
        "queryable ev/s",
        "events",
        "drain s",
        "p99 chained",
        "p99 queryable",
        "p99 violation",
        "complete",
    ):
        ph.add_column(col, justify="right")
    for name, d in r["phases"].items():
        ph.add_row(
            name,
            _f(d["offered_events_per_s"]),
            _f(d["events_per_s"]),
            _f(d["rows_queryable"]),
            _f(d["drain_s"], ".1f"),
            _f(d["chained_ms"].get("p99")),
            _f(d["queryable_ms"].get("p99")),
            _f(d["violation_ms"].get("p99")),
            "yes" if d["complete"] else "[red]no[/]",
        )
    console.print(ph)


def register(app: typer.Typer) -> None:
    """Mount ``bench`` on the ``lineage`` CLI."""
    app.command("bench")(bench_cmd)
