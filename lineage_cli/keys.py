"""``lineage keys``: generate, list and revoke keys in the Ed25519 key registry."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from lineage.config import Settings
from lineage.errors import LineageError
from lineage.keys import (
    KeyRecord,
    KeyRegistry,
    Role,
    format_time_us,
    generate_key,
)

keys_app = typer.Typer(
    help="Manage the Ed25519 key registry: which key may sign for which subject and role, and when.",
    no_args_is_help=True,
)

KeysDirOption = Annotated[
    Path | None,
    typer.Option("--keys-dir", help="Where private keys go (default: <data dir>/keys)."),
]
RegistryOption = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Key registry file (default: LINEAGE_KEYS_FILE, else <data dir>/keys/registry.json).",
    ),
]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _defaults() -> tuple[Path, Path]:
    try:
        settings = Settings()
    except ValidationError as exc:
        _fail(f"invalid LINEAGE_ settings: {exc.error_count()} error(s): {exc.errors()[0]['msg']}")
    keys_dir = settings.data_dir / "keys"
    return keys_dir, settings.keys_file or keys_dir / "registry.json"


def _registry_path(registry: Path | None) -> Path:
    return registry if registry is not None else _defaults()[1]


def _now_us() -> int:
    return time.time_ns() // 1000


def _short_time(us: int) -> str:
    """Whole seconds for the table; ``--json`` has the exact microseconds."""
    return format_time_us(us - us % 1_000_000)


def _status_text(record: KeyRecord, now_us: int) -> str:
    if record.revoked_at_us is not None:
        why = record.revocation_reason or "no reason given"
        return f"revoked {_short_time(record.revoked_at_us)}: {why}"
    return record.status(now_us)


@keys_app.command("generate")
def generate(
    subject: Annotated[
        str,
        typer.Option("--subject", help="Emitter id, service or processor name the key speaks for."),
    ],
    role: Annotated[Role, typer.Option("--role", help="What the key may sign.")],
    valid_days: Annotated[
        int | None,
        typer.Option("--valid-days", min=1, help="Validity in days from now (default: no end)."),
    ] = None,
    keys_dir: KeysDirOption = None,
    registry: RegistryOption = None,
) -> None:
    """Create a key pair, store the private key (mode 0600) and add the public key to the registry."""
    default_keys_dir, default_registry = _defaults()
    keys_dir = keys_dir if keys_dir is not None else default_keys_dir
    registry = registry if registry is not None else default_registry
    try:
        reg = KeyRegistry.load(registry) if registry.exists() else KeyRegistry()
        record, key_path = generate_key(subject, role, keys_dir, valid_days=valid_days)
        try:
            reg.add(record)
            reg.save(registry)
        except BaseException:
            # Without its registry entry the new key is useless; do not leave it behind.
            key_path.unlink(missing_ok=True)
            raise
    except LineageError as exc:
        _fail(str(exc))
    until = "no end" if record.not_after_us is None else format_time_us(record.not_after_us)
    typer.echo(f"generated {record.key_id} role={role.value} subject={subject!r} until {until}")
    typer.echo(f"private key: {key_path}")
    typer.echo(f"registry:    {registry}")


@keys_app.command("list")
def list_keys(
    registry: RegistryOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show every key in the registry with its validity and status."""
    path = _registry_path(registry)
    try:
        reg = KeyRegistry.load(path)
    except LineageError as exc:
        _fail(str(exc))
    now = _now_us()
    if as_json:
        entries: list[dict[str, Any]] = []
        for record, entry in zip(reg.records(), reg.to_json()["keys"], strict=True):
            entries.append({**entry, "status": record.status(now)})
        typer.echo(json.dumps({"registry": str(path), "keys": entries}, indent=2))
        return
    table = Table(title=f"key registry {path}")
    key_width = max((len(r.key_id) for r in reg.records()), default=6)
    table.add_column("key id", no_wrap=True, min_width=key_width)
    table.add_column("role", no_wrap=True)
    table.add_column("subject", overflow="fold")
    table.add_column("valid from", overflow="fold")
    table.add_column("valid until", overflow="fold")
    table.add_column("status")
    for record in reg.records():
        table.add_row(
            record.key_id,
            record.role.value,
            record.subject,
            _short_time(record.not_before_us),
            "no end" if record.not_after_us is None else _short_time(record.not_after_us),
            _status_text(record, now),
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id to revoke, e.g. ed25519:0123abcd...")],
    reason: Annotated[str, typer.Option("--reason", help="Why the key is revoked (recorded).")],
    registry: RegistryOption = None,
) -> None:
    """Revoke a key: from now on it is trusted for nothing, whatever time a signed item claims."""
    path = _registry_path(registry)
    at_us = _now_us()
    try:
        reg = KeyRegistry.load(path)
        reg.revoke(key_id, at_us, reason)
        reg.save(path)
    except LineageError as exc:
        _fail(str(exc))
    typer.echo(f"revoked {key_id} at {format_time_us(at_us)}: {reason}")
