"""``lineage keys``: generate, list, rotate, retire and revoke keys in the Ed25519 key registry."""

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
    CUSTODY_FILE,
    KeyRecord,
    KeyRegistry,
    Role,
    file_backed_keys,
    format_time_us,
    generate_key,
    parse_time_us,
    plan_rotation,
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


Pkcs11Option = Annotated[
    str | None,
    typer.Option(
        "--pkcs11",
        help="Create the key pair in a PKCS#11 token, e.g. 'pkcs11:token=lineage;object=gate-1' "
        "(library: LINEAGE_PKCS11_MODULE; PIN: LINEAGE_PKCS11_PIN_FILE or LINEAGE_PKCS11_PIN).",
    ),
]


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        _fail(f"invalid LINEAGE_ settings: {exc.error_count()} error(s): {exc.errors()[0]['msg']}")


def _defaults() -> tuple[Path, Path]:
    settings = _settings()
    keys_dir = settings.data_dir / "keys"
    return keys_dir, settings.keys_file or keys_dir / "registry.json"


def _time_option(text: str, option: str) -> int:
    try:
        return parse_time_us(text)
    except ValueError as exc:
        _fail(f"{option}: {exc}")


def _new_key(
    subject: str,
    role: Role,
    pkcs11_uri: str | None,
    keys_dir: Path,
    valid_days: int | None,
    *,
    per_key: bool,
) -> tuple[KeyRecord, Path | None]:
    """A new key pair in a token (no file) or in a PEM file under ``keys_dir``."""
    if pkcs11_uri is None:
        return generate_key(subject, role, keys_dir, valid_days=valid_days, per_key=per_key)
    from lineage.pkcs11 import TokenConfig, generate_token_key

    record = generate_token_key(
        pkcs11_uri,
        subject,
        role,
        config=TokenConfig.from_settings(_settings()),
        valid_days=valid_days,
    )
    return record, None


def _registry_path(registry: Path | None) -> Path:
    return registry if registry is not None else _defaults()[1]


def _now_us() -> int:
    return time.time_ns() // 1000


def _short_time(us: int) -> str:
    """Whole seconds for the table; ``--json`` has the exact microseconds."""
    return format_time_us(us - us % 1_000_000)


def _status_text(record: KeyRecord, now_us: int) -> str:
    if record.compromised_at_us is not None and record.revoked_at_us is not None:
        why = record.revocation_reason or "no reason given"
        return (
            f"compromised since {_short_time(record.compromised_at_us)} "
            f"(revoked {_short_time(record.revoked_at_us)}): {why}"
        )
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
    pkcs11_uri: Pkcs11Option = None,
) -> None:
    """Create a key pair (in a PKCS#11 token with --pkcs11, else a mode-0600 PEM file) and add
    its public key to the registry."""
    default_keys_dir, default_registry = _defaults()
    keys_dir = keys_dir if keys_dir is not None else default_keys_dir
    registry = registry if registry is not None else default_registry
    try:
        reg = KeyRegistry.load(registry) if registry.exists() else KeyRegistry()
        record, key_path = _new_key(subject, role, pkcs11_uri, keys_dir, valid_days, per_key=False)
        try:
            reg.add(record)
            reg.save(registry)
        except BaseException:
            # Without its registry entry the new key is useless; do not leave it behind.
            if key_path is not None:
                key_path.unlink(missing_ok=True)
            raise
    except LineageError as exc:
        _fail(str(exc))
    until = "no end" if record.not_after_us is None else format_time_us(record.not_after_us)
    typer.echo(f"generated {record.key_id} role={role.value} subject={subject!r} until {until}")
    typer.echo(f"private key: {key_path if key_path is not None else record.key_uri}")
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
    settings = _settings()
    exposed = file_backed_keys(reg, production=settings.production, at_us=now)
    if as_json:
        entries: list[dict[str, Any]] = []
        for record, entry in zip(reg.records(), reg.to_json()["keys"], strict=True):
            entries.append(
                {**entry, "custody": record.custody, "key_uri": record.key_uri}
                | {"status": record.status(now)}
            )
        doc = {
            "registry": str(path),
            "format": reg.to_json()["format"],
            "production": settings.production,
            "file_backed_in_production": [r.key_id for r in exposed],
            "keys": entries,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"key registry {path}")
    key_width = max((len(r.key_id) for r in reg.records()), default=6)
    table.add_column("key id", no_wrap=True, min_width=key_width)
    table.add_column("role", no_wrap=True)
    table.add_column("subject", overflow="fold")
    table.add_column("valid from", overflow="fold")
    table.add_column("valid until", overflow="fold")
    table.add_column("custody", overflow="fold")
    table.add_column("status")
    for record in reg.records():
        table.add_row(
            record.key_id,
            record.role.value,
            record.subject,
            _short_time(record.not_before_us),
            "no end" if record.not_after_us is None else _short_time(record.not_after_us),
            record.custody if record.key_uri is None else f"{record.custody} {record.key_uri}",
            _status_text(record, now),
        )
    Console().print(table)
    if exposed:
        typer.echo(
            f"warning: LINEAGE_PRODUCTION is set and {len(exposed)} key(s) in use are "
            f"{CUSTODY_FILE}-backed: " + ", ".join(f"{r.key_id} ({r.subject})" for r in exposed),
            err=True,
        )


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id to revoke, e.g. ed25519:0123abcd...")],
    reason: Annotated[str, typer.Option("--reason", help="Why the key is revoked (recorded).")],
    compromised_at: Annotated[
        str | None,
        typer.Option(
            "--compromised-at",
            help="RFC 3339 time from which the key must be assumed in other hands: evidence "
            "signed at or after it fails verification (KEY_COMPROMISED), earlier evidence still "
            "verifies. Without it the key is distrusted for everything it ever signed.",
        ),
    ] = None,
    registry: RegistryOption = None,
) -> None:
    """Revoke a key: all its evidence, or with --compromised-at what it signed from then on."""
    path = _registry_path(registry)
    at_us = _now_us()
    since = None if compromised_at is None else _time_option(compromised_at, "--compromised-at")
    try:
        reg = KeyRegistry.load(path)
        reg.revoke(key_id, at_us, reason, compromised_at_us=since)
        reg.save(path)
    except LineageError as exc:
        _fail(str(exc))
    if since is None:
        typer.echo(f"revoked {key_id} at {format_time_us(at_us)}: {reason}")
    else:
        typer.echo(
            f"revoked {key_id} at {format_time_us(at_us)} as compromised since "
            f"{format_time_us(since)}: {reason}"
        )


@keys_app.command("retire")
def retire(
    key_id: Annotated[str, typer.Argument(help="The key id to retire.")],
    at: Annotated[str, typer.Option("--at", help="RFC 3339 end of validity (not_after).")],
    registry: RegistryOption = None,
) -> None:
    """End a key's validity (rotation, no compromise): everything it signed stays valid."""
    path = _registry_path(registry)
    not_after = _time_option(at, "--at")
    try:
        reg = KeyRegistry.load(path)
        reg.retire(key_id, not_after)
        reg.save(path)
    except LineageError as exc:
        _fail(str(exc))
    typer.echo(f"retired {key_id}: valid until {format_time_us(not_after)}")


@keys_app.command("rotate")
def rotate(
    subject: Annotated[str, typer.Option("--subject", help="Whose key to rotate.")],
    role: Annotated[Role, typer.Option("--role", help="Which role's key to rotate.")],
    switch_at: Annotated[
        str | None,
        typer.Option("--switch-at", help="RFC 3339 time signers switch to the new key."),
    ] = None,
    switch_in: Annotated[
        float | None,
        typer.Option("--switch-in", min=0, help="Seconds from now to the switch (instead)."),
    ] = None,
    overlap: Annotated[
        float,
        typer.Option(
            "--overlap",
            min=0.001,
            help="Seconds both keys are valid on each side of the switch; longer than the "
            "longest a seal batch stays open and than clock skew between hosts.",
        ),
    ] = 60.0,
    valid_days: Annotated[
        int | None,
        typer.Option("--valid-days", min=1, help="Validity of the new key in days."),
    ] = None,
    keys_dir: KeysDirOption = None,
    registry: RegistryOption = None,
    pkcs11_uri: Pkcs11Option = None,
) -> None:
    """Schedule a key rotation without downtime: new key valid from switch - overlap, the
    current keys retired at switch + overlap; running signers move over at the switch."""
    if (switch_at is None) == (switch_in is None):
        _fail("give exactly one of --switch-at and --switch-in")
    now = _now_us()
    switch = (
        _time_option(switch_at, "--switch-at")
        if switch_at is not None
        else now + int((switch_in or 0.0) * 1_000_000)
    )
    default_keys_dir, default_registry = _defaults()
    keys_dir = keys_dir if keys_dir is not None else default_keys_dir
    registry = registry if registry is not None else default_registry
    overlap_us = int(overlap * 1_000_000)
    key_path: Path | None = None
    try:
        reg = KeyRegistry.load(registry)
        if switch - overlap_us <= now:
            _fail(
                f"the switch at {format_time_us(switch)} minus the overlap is not in the "
                "future; the new key must be registered before it becomes valid"
            )
        record, key_path = _new_key(subject, role, pkcs11_uri, keys_dir, valid_days, per_key=True)
        try:
            retired = plan_rotation(
                reg, record, switch_at_us=switch, overlap_us=overlap_us, now_us=now
            )
            reg.save(registry)
        except BaseException:
            if key_path is not None:
                key_path.unlink(missing_ok=True)
            raise
    except LineageError as exc:
        _fail(str(exc))
    new = reg.get(record.key_id)
    assert new is not None
    typer.echo(
        f"scheduled {new.key_id} role={role.value} subject={subject!r} valid from "
        f"{format_time_us(new.not_before_us)}; switch at {format_time_us(switch)}"
    )
    for old in retired:
        assert old.not_after_us is not None
        typer.echo(f"retiring {old.key_id} at {format_time_us(old.not_after_us)}")
    typer.echo(f"private key: {key_path if key_path is not None else record.key_uri}")
