"""``lineage openlineage``: stream completed workflows as OpenLineage RunEvents.

The mapping and the transports are in ``lineage_cli.openlineage_export`` (extra ``openlineage``),
imported only when the command runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from lineage.errors import ConfigError


def openlineage_cmd(
    transport: Annotated[
        str, typer.Option(help="console, file, http or kafka (openlineage-python transports)")
    ] = "console",
    file: Annotated[
        Path | None, typer.Option(help="file transport: JSON lines file to append to")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="http transport: e.g. http://marquez:5000")
    ] = None,
    kafka_topic: Annotated[str | None, typer.Option(help="kafka transport: topic")] = None,
    namespace: Annotated[str, typer.Option(help="OpenLineage job namespace")] = "agents",
    state: Annotated[
        Path | None,
        typer.Option(
            help="file of exported workflow ids (default <data dir>/openlineage.exported)"
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option(help="keep polling for newly completed workflows")
    ] = False,
    poll_s: Annotated[float, typer.Option(help="seconds between polls with --follow")] = 5.0,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="data directory (env LINEAGE_DATA_DIR)")
    ] = None,
) -> None:
    """Stream completed workflows as OpenLineage RunEvents (Marquez, DataHub, any OL consumer)."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from lineage_cli.evidence import _client, _fail, _settings, _Unusable

    try:
        from lineage_cli.openlineage_export import (
            DeliveryError,
            ExportState,
            export,
            make_client,
            run_id,
            transport_config,
        )
    except ImportError as exc:
        _fail(f"needs the openlineage extra (pip install 'execution-lineage[openlineage]'): {exc}")
    settings = _settings(data_dir)
    try:
        config = transport_config(
            transport,
            file=file,
            url=url,
            kafka_bootstrap=settings.kafka_bootstrap,
            kafka_topic=kafka_topic,
        )
    except ConfigError as exc:
        _fail(str(exc))
    ol = make_client(config)
    exported = ExportState(state or settings.data_dir / "openlineage.exported")
    sent = 0
    try:
        client = _client(settings)
        while True:
            for wf in export(
                client, settings.clickhouse_database, ol, exported, namespace=namespace
            ):
                sent += 1
                if transport != "console":
                    typer.echo(f"{wf.workflow_id}: run {run_id(wf.workflow_id)}")
            if not follow:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        pass
    except DeliveryError as exc:
        _fail(f"{exc} ({sent} workflows sent before; the rest will be sent by the next run)")
    except _Unusable as exc:
        _fail(str(exc))
    except ClickHouseError as exc:
        _fail(
            f"cannot read the lineage tables in {settings.clickhouse_dsn} "
            f"(database {settings.clickhouse_database}): {str(exc).splitlines()[0][:300]}"
        )
    finally:
        ol.close()
    if transport != "console":
        typer.echo(f"{sent} workflows sent as OpenLineage run events via {transport}")


def register(app: typer.Typer) -> None:
    """Add ``lineage openlineage`` to the CLI."""
    app.command("openlineage")(openlineage_cmd)
