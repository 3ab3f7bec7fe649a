"""The ``lineage`` command line: demo, process, sink, query, keys, verify, export, alerts, bench."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bench.cli import register as register_bench
from lineage.config import Settings
from lineage_cli.console import KeyCustody, TokenLabel, check_key_custody
from lineage_cli.console import register as register_console
from lineage_cli.evidence import register as register_evidence
from lineage_cli.keys import keys_app
from lineage_cli.openlineage import register as register_openlineage
from lineage_cli.witness import witness_app

app = typer.Typer(
    help="Evidence-grade execution lineage for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(keys_app, name="keys")
app.add_typer(witness_app, name="witness")
register_evidence(app)
register_bench(app)
register_console(app)
register_openlineage(app)
console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="where the embedded stack keeps its data (env LINEAGE_DATA_DIR, default ./.lineage)",
    ),
]


def settings_for(data_dir: Path | None, **overrides: Any) -> Settings:
    """Settings from the environment, with command-line overrides."""
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return Settings(**overrides)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="about how many events to emit")] = 5000,
    workflows: Annotated[int, typer.Option(help="how many workflows")] = 200,
    data_dir: DataDir = None,
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for the pipeline to drain")
    ] = 240.0,
    keys: KeyCustody = "file",
    token: TokenLabel = "lineage-demo",
) -> None:
    """Start the embedded stack, run the multi-agent scenario, and show what was proven."""
    from infra.demo import run_demo

    check_key_custody(keys)
    code = run_demo(
        settings_for(data_dir),
        events=events,
        workflows=workflows,
        timeout=timeout,
        console=console,
        keys=keys,
        token=token,
    )
    raise typer.Exit(code)


@app.command()
def process(
    data_dir: DataDir = None,
    worker_id: Annotated[str, typer.Option(help="name of this worker in logs")] = "w0",
    log_level: Annotated[str, typer.Option(help="log level")] = "WARNING",
) -> None:
    """Run a processor worker (faust) against the configured Kafka (LINEAGE_KAFKA_BOOTSTRAP)."""
    from stream_processors.main import run_worker

    settings = settings_for(data_dir)
    if settings.kafka_bootstrap is None:
        fail("set LINEAGE_KAFKA_BOOTSTRAP to the broker (the demo starts workers with it set)")
    run_worker(settings, worker_id=worker_id, log_level=log_level)


@app.command()
def sink(
    data_dir: DataDir = None,
    log_level: Annotated[str, typer.Option(help="log level")] = "INFO",
) -> None:
    """Run the ClickHouse sink against the configured Kafka and ClickHouse."""
    import threading

    from sinks.clickhouse import ClickHouseSink, open_client

    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_for(data_dir)
    if settings.kafka_bootstrap is None:
        fail("set LINEAGE_KAFKA_BOOTSTRAP to the broker")
    from sinks.metrics import start as start_metrics

    server = start_metrics(settings)  # /metrics on LINEAGE_METRICS_PORT, if set
    s = ClickHouseSink(settings, str(settings.kafka_bootstrap), open_client(settings))
    stop = threading.Event()
    try:
        s.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        s.close()
        if server is not None:
            server.shutdown()


def _print_result(columns: list[str], rows: list[Any], fmt: str) -> None:
    def cell(v: Any) -> str:
        if isinstance(v, bytes):
            return v.hex()
        return str(v)

    if fmt == "json":
        for r in rows:
            print(
                json.dumps(
                    {
                        c: (cell(v) if isinstance(v, bytes) else v)
                        for c, v in zip(columns, r, strict=True)
                    },
                    default=str,
                )
            )
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for r in rows:
            w.writerow([cell(v) for v in r])
        sys.stdout.write(buf.getvalue())
    else:
        t = Table(*columns, show_lines=False)
        for r in rows:
            t.add_row(*[cell(v) for v in r])
        console.print(t)


@app.command()
def query(
    sql: Annotated[str | None, typer.Argument(help="SQL to run")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="a query pack, e.g. docs/queries.sql")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="query name in the pack")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="key=value for a pack query")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv (no header) or json")] = "table",
    data_dir: DataDir = None,
) -> None:
    """Run SQL (or a named query from a pack) against the configured ClickHouse."""
    from lineage_cli.remote import open_client

    if fmt not in ("table", "csv", "json"):
        fail(f"--format: expected table, csv or json, found {fmt!r}")
    settings = settings_for(data_dir)
    params: dict[str, Any] = {}
    if file is not None:
        from lineage.querypack import load_pack

        pack = load_pack(file)
        if name is None or name not in pack:
            fail(f"--name: expected one of {', '.join(sorted(pack))}, found {name!r}")
        assert name is not None
        given = dict(p.split("=", 1) for p in (param or []) if "=" in p)
        sql, params = pack[name].render(given)
    if not sql:
        fail("give SQL, or --file and --name")
    try:
        client = open_client(settings)
    except Exception as exc:
        fail(f"cannot open ClickHouse at {settings.clickhouse_dsn}: {exc}")
    try:
        client.database = settings.clickhouse_database
        result = client.query(sql, parameters=params or None)
    except Exception as exc:
        fail(f"query failed: {exc}", code=1)
    _print_result(list(result.column_names), list(result.result_rows), fmt)


@app.command()
def alerts(
    webhook: Annotated[
        str | None, typer.Option(help="POST each violation as JSON to this URL")
    ] = None,
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest violation")] = False,
    max_alerts: Annotated[
        int, typer.Option("--max", help="stop after this many (0 = run forever)")
    ] = 0,
    timeout: Annotated[
        float, typer.Option(help="stop after this many idle seconds (0 = never)")
    ] = 0.0,
    data_dir: DataDir = None,
) -> None:
    """Tail lineage.violations (and containments) and print each as it arrives."""
    import time

    from lineage.model import Violation
    from sinks.alerts import AlertTail, post_json, violation_json

    settings = settings_for(data_dir)
    if settings.kafka_bootstrap is None:
        fail("set LINEAGE_KAFKA_BOOTSTRAP to the broker")
    tail = AlertTail(settings, str(settings.kafka_bootstrap), from_beginning=from_beginning)
    seen = 0
    idle_since = time.monotonic()
    try:
        while not max_alerts or seen < max_alerts:
            items = tail.poll(0.5)
            if not items:
                if timeout and time.monotonic() - idle_since > timeout:
                    break
                continue
            idle_since = time.monotonic()
            for item in items:
                if isinstance(item, Violation):
                    seen += 1
                    console.print(
                        f"[bold red]{item.severity}[/] {item.violation_type} workflow={item.workflow_id} "
                        f"event={item.event_id} rule={item.rule}: {item.explanation}"
                    )
                    if webhook and not post_json(webhook, violation_json(item)):
                        err.print(f"webhook did not accept violation {item.violation_id}")
                else:
                    console.print(
                        f"[bold magenta]CONTAINED[/] workflow={item.workflow_id} after "
                        f"{item.violation_type} ({item.violation_id})"
                    )
    except KeyboardInterrupt:
        pass
    finally:
        tail.close()


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
