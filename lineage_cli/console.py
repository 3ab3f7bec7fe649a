"""``lineage up`` (embedded stack + console) and ``lineage console`` (web app only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lineage.errors import LineageError

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="data directory of the embedded stack (env LINEAGE_DATA_DIR)"),
]
Host = Annotated[str, typer.Option(help="address to listen on (loopback by default)")]
KeyCustody = Annotated[
    str,
    typer.Option(
        "--keys",
        help="where the demo's signing keys live: 'file' (PEM under the data dir) or "
        "'pkcs11' (a token; LINEAGE_PKCS11_MODULE, LINEAGE_PKCS11_PIN_FILE, docs/keys.md)",
    ),
]
TokenLabel = Annotated[str, typer.Option(help="label of the PKCS#11 token for --keys pkcs11")]


def check_key_custody(keys: str) -> None:
    """Refuse a ``--keys`` value other than ``file`` or ``pkcs11`` with one line, exit 2."""
    if keys not in ("file", "pkcs11"):
        Console(stderr=True).print(
            f"[bold red]error:[/] --keys: expected 'file' or 'pkcs11', found {keys!r}"
        )
        raise typer.Exit(2)


def up_cmd(
    data_dir: DataDir = None,
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(help="console port (0 = any free port)")] = 8765,
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="enable the Runtime Governance Demo actions")
    ] = True,
    keys: KeyCustody = "file",
    token: TokenLabel = "lineage-demo",
) -> None:
    """Start broker, processor, sink and the console; run until Ctrl-C."""
    from lineage.config import Settings
    from lineage_cli.up import run_up

    check_key_custody(keys)
    console = Console(highlight=False)
    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    try:
        code = run_up(
            settings, host=host, port=port, demo=demo, console=console, keys=keys, token_label=token
        )
    except LineageError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def console_cmd(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(help="console port")] = 8765,
    demo: Annotated[
        bool, typer.Option("--demo", help="enable demo actions (they emit into the cluster)")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Run only the web app against LINEAGE_KAFKA_BOOTSTRAP and LINEAGE_CLICKHOUSE_URL."""
    from lineage.config import Settings
    from lineage_cli.up import run_console

    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    raise typer.Exit(run_console(settings, host=host, port=port, demo=demo, console=Console()))


def register(app: typer.Typer) -> None:
    """Add ``up`` and ``console`` to ``app``."""
    app.command("up")(up_cmd)
    app.command("console")(console_cmd)
