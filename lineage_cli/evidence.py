"""``lineage export`` and ``lineage verify``: evidence bundles, and verification of ClickHouse itself."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from lineage import note
from lineage.bundle import BundleError, BundleFormatError, build_bundle, read_bundle, write_bundle
from lineage.config import Settings
from lineage.errors import ConfigError, LineageError
from lineage.keys import KeyRegistry, Role, format_time_us
from lineage.model import ChainEntry, Checkpoint
from lineage.verify import (
    EXIT_INTEGRITY,
    EXIT_UNUSABLE,
    Failure,
    FailureKind,
    Proven,
    Report,
    checkpoint_vkeys,
    verify_bundle,
    verify_entries,
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

DERIVED_COLUMNS: tuple[str, ...] = (
    "kind",
    "event_time",
    "principal",
    "agent_id",
    "model_id",
    "model_version",
    "action",
    "resource",
    "authorization_id",
    "decision",
    "auth_policy_id",
    "auth_policy_digest",
    "determining_policies",
    "expires_at",
    "attestation_type",
    "measurement",
    "host",
    "image_digest",
    "parent_event_id",
    "parent_workflow_id",
    "trace_id",
    "span_id",
    "emitter_id",
    "emitter_seq",
    "attributes",
)
"""``lineage_entries`` columns the sink derives from the event bytes; each is checked against them."""

_AS_SELECTED = {
    "event_time": "toUnixTimestamp64Micro(event_time)",
    "expires_at": "toUnixTimestamp64Micro(expires_at)",
    # Maps and arrays are slow to parse in clickhouse-connect; JSON text is not, and is exact.
    "determining_policies": "toJSONString(determining_policies)",
    "attributes": "toJSONString(attributes)",
}
_SELECT_DERIVED = ", ".join(_AS_SELECTED.get(c, c) for c in DERIVED_COLUMNS)
_POLICIES = DERIVED_COLUMNS.index("determining_policies")
_ATTRIBUTES = DERIVED_COLUMNS.index("attributes")
_NO_AUTH: dict[str, Any] = {
    "decision": "",
    "policy_id": "",
    "policy_digest": "",
    "determining_policies": [],
    "expires_at": None,
}
_NO_RUNTIME: dict[str, Any] = {
    "host": "",
    "image_digest": None,
    "attestation_type": None,
    "measurement": None,
}
_BYTES = {"event_bytes": "bytes", "seal_bytes": "bytes"}


def _db(database: str) -> str:
    if not _IDENT.fullmatch(database):
        raise ConfigError(f"database name: expected an identifier, found {database!r}")
    return f"`{database}`"


def expected_columns(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The DERIVED_COLUMNS values the sink writes for a decoded event (as sinks.rows does)."""
    auth = record["authorization"] or _NO_AUTH
    rt = record["runtime"] or _NO_RUNTIME
    return (
        record["kind"],
        record["event_time"],
        record["principal"],
        record["agent_id"] or "",
        record["model_id"] or "",
        record["model_version"] or "",
        record["action"],
        record["resource"] or "",
        record["authorization_id"] or "",
        auth["decision"],
        auth["policy_id"],
        auth["policy_digest"],
        list(auth["determining_policies"]),
        auth["expires_at"],
        rt["attestation_type"] or "",
        rt["measurement"] or "",
        rt["host"],
        rt["image_digest"] or "",
        record["parent_event_id"] or "",
        record["parent_workflow_id"] or "",
        record["trace_id"] or "",
        record["span_id"] or "",
        record["emitter_id"],
        record["emitter_seq"],
        dict(record["attributes"]),
    )


@dataclass(frozen=True, slots=True)
class StoredEntry(ChainEntry):
    """A ``lineage_entries`` row: the chain entry plus its stored DERIVED_COLUMNS values."""

    columns: tuple[Any, ...] = ()


def check_stored_columns(
    entry: ChainEntry, record: Mapping[str, Any]
) -> tuple[str, object, object] | None:
    """The first stored derived column that differs from the decoded event, as (name, want, got)."""
    if not isinstance(entry, StoredEntry):
        return None
    found = entry.columns
    expected = expected_columns(record)
    if expected == found:
        return None
    for name, want, got in zip(DERIVED_COLUMNS, expected, found, strict=True):
        if want != got:
            return name, want, got
    return None


def _entries_sql(database: str, workflow_id: str | None) -> str:
    wanted = "1" if workflow_id is None else "workflow_id = {wf:String}"
    return (
        f"SELECT workflow_id, chain_seq, event_id, event_digest, prev_hash, entry_hash, "
        f"policy_digest, if({wanted}, event_bytes, '') AS event_bytes, source_partition, "
        f"source_offset, log_index, if({wanted}, seal_bytes, '') AS seal_bytes, seal_index, "
        f"arrayStringConcat(arrayMap(x -> hex(x), seal_path)) AS seal_path, "
        f"{_SELECT_DERIVED} FROM {_db(database)}.lineage_entries FINAL "
        f"WHERE source_partition = {{p:UInt16}} ORDER BY log_index"
    )


def _stream_partition(client: Any, sql: str, params: dict[str, Any]) -> Iterator[ChainEntry]:
    """One partition's rows as chain entries carrying their stored derived columns."""
    with client.query_row_block_stream(sql, parameters=params, column_formats=_BYTES) as stream:
        for block in stream:
            for r in block:
                path = bytes.fromhex(r[13])
                columns = list(r[14:])
                columns[_POLICIES] = json.loads(columns[_POLICIES])
                columns[_ATTRIBUTES] = json.loads(columns[_ATTRIBUTES])
                yield StoredEntry(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    r[7],
                    r[8],
                    r[9],
                    r[10],
                    r[11],
                    r[12],
                    tuple(path[i : i + 32] for i in range(0, len(path), 32)),
                    (),
                    tuple(columns),
                )


def _checkpoints(client: Any, database: str, partitions: Sequence[int] | None) -> list[Checkpoint]:
    where = "" if partitions is None else "WHERE partition IN {ps:Array(UInt16)}"
    result = client.query(
        f"SELECT origin, partition, tree_size, root_hash, note, key_name, source_offset "
        f"FROM {_db(database)}.checkpoints FINAL {where} ORDER BY partition, tree_size",
        parameters={"ps": list(partitions or [])},
    )
    return [Checkpoint(*row) for row in result.result_rows]


def _partitions(client: Any, database: str, workflow_id: str | None) -> list[int]:
    if workflow_id is None:
        sql = (
            f"SELECT DISTINCT source_partition FROM {_db(database)}.lineage_entries "
            f"UNION DISTINCT SELECT DISTINCT partition FROM {_db(database)}.checkpoints"
        )
    else:
        sql = (
            f"SELECT DISTINCT source_partition FROM {_db(database)}.lineage_entries FINAL "
            f"WHERE workflow_id = {{wf:String}}"
        )
    return sorted(int(r[0]) for r in client.query(sql, parameters={"wf": workflow_id}).result_rows)


def verify_clickhouse(
    client: Any,
    database: str,
    *,
    registry: KeyRegistry,
    trusted_checkpoint_vkeys: Sequence[str] | None = None,
    workflow_id: str | None = None,
) -> Report:
    """Verify the lineage tables of ``database``, trusting only ``registry`` and the vkeys.

    Every partition log (only those of ``workflow_id`` when given) is rebuilt from recomputed
    entry hashes and compared with every signed checkpoint; all chains are checked; the entries
    verified in full (the workflow's, or all) have their event digest, decoding, seal and every
    derived column checked against the exact event bytes.
    """
    partitions = _partitions(client, database, workflow_id)
    if workflow_id is not None and not partitions:
        everything = verify_clickhouse(
            client, database, registry=registry, trusted_checkpoint_vkeys=trusted_checkpoint_vkeys
        )
        if not everything.ok:
            return everything
        everything.failure = Failure(
            FailureKind.UNUSABLE_INPUT,
            f"no entries for workflow {workflow_id!r} in {database}",
            {"workflow_id": workflow_id},
        )
        return everything
    sql = _entries_sql(database, workflow_id)
    logs = {p: _stream_partition(client, sql, {"p": p, "wf": workflow_id}) for p in partitions}
    return verify_entries(
        logs,
        _checkpoints(client, database, partitions),
        registry=registry,
        trusted_checkpoint_vkeys=trusted_checkpoint_vkeys,
        workflow_id=workflow_id,
        check_columns=check_stored_columns,
        source=f"clickhouse {database}",
    )


def _export_vkey(registry: KeyRegistry, checkpoints: Sequence[Checkpoint]) -> str:
    """The registry's processor verifier key that signed the newest checkpoint."""
    newest = max(checkpoints, key=lambda c: c.tree_size)
    for vkey in checkpoint_vkeys(registry):
        try:
            note.open_note(newest.note, [note.parse_verifier_key(vkey)])
        except note.NoteError:
            continue
        return vkey
    raise BundleError(
        f"no unrevoked {Role.PROCESSOR.value} key in the registry signed checkpoint "
        f"{newest.origin} size {newest.tree_size}"
    )


def export_bundle(
    client: Any, database: str, workflow_id: str, registry: KeyRegistry
) -> dict[str, Any]:
    """Build the evidence bundle of one workflow from the ClickHouse tables."""
    partitions = _partitions(client, database, workflow_id)
    if not partitions:
        raise BundleError(f"no entries for workflow {workflow_id!r} in {database}")
    entries: list[ChainEntry] = []
    leaves: dict[int, list[bytes]] = {}
    sql = _entries_sql(database, workflow_id)
    for p in partitions:
        records: list[bytes] = []
        for e in _stream_partition(client, sql, {"p": p, "wf": workflow_id}):
            if e.log_index != len(records):
                raise BundleError(
                    f"partition {p}: expected log index {len(records)}, found "
                    f"{e.log_index}; run `lineage verify --clickhouse`"
                )
            records.append(
                e.prev_hash + e.event_digest + e.chain_seq.to_bytes(8, "big") + e.policy_digest
            )
            if e.workflow_id == workflow_id:
                entries.append(e)
        leaves[p] = records
    checkpoints = _checkpoints(client, database, partitions)
    if not checkpoints:
        raise BundleError(f"no signed checkpoint yet for partitions {partitions}")
    return build_bundle(
        workflow_id, entries, leaves, checkpoints, registry, _export_vkey(registry, checkpoints)
    )


# -- commands -------------------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_UNUSABLE) -> NoReturn:
    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _settings(data_dir: Path | None) -> Settings:
    try:
        return Settings() if data_dir is None else Settings(data_dir=data_dir)
    except ValidationError as exc:
        _fail(f"invalid LINEAGE_ settings: {exc.errors()[0]['msg']}")


def _registry(path: Path) -> KeyRegistry:
    try:
        return KeyRegistry.load(path)
    except ConfigError as exc:
        _fail(str(exc))


def _client(settings: Settings) -> Any:
    from lineage_cli.remote import open_client  # through a running `lineage up`, if any

    try:
        return open_client(settings)
    except Exception as exc:
        _fail(f"cannot open ClickHouse at {settings.clickhouse_dsn}: {exc}")


DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="data directory of the embedded stack (env LINEAGE_DATA_DIR)"),
]


def export_cmd(
    workflow: Annotated[str, typer.Option("--workflow", help="workflow id to export")],
    out: Annotated[Path, typer.Option("--out", help="where to write the bundle (JSON)")],
    data_dir: DataDir = None,
) -> None:
    """Export one workflow's evidence bundle from ClickHouse for offline verification."""
    settings = _settings(data_dir)
    registry = _registry(settings.resolved_keys_file)
    client = _client(settings)
    try:
        bundle = export_bundle(client, settings.clickhouse_database, workflow, registry)
        write_bundle(bundle, out)
    except BundleError as exc:
        _fail(f"cannot export {workflow}: {exc}", EXIT_INTEGRITY)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}")
    except LineageError as exc:
        _fail(str(exc))
    logs = ", ".join(
        f"partition {s['partition']} ({len(s['checkpoints'])} checkpoints)" for s in bundle["logs"]
    )
    Console(highlight=False).print(
        f"wrote {out}: workflow {workflow}, {bundle['entry_count']} entries, {logs}; "
        f"verify with `lineage verify {out} --registry <registry you trust>`"
    )


def verify_cmd(
    file: Annotated[Path | None, typer.Argument(help="evidence bundle to verify")] = None,
    clickhouse: Annotated[
        bool, typer.Option("--clickhouse", help="verify the ClickHouse tables instead of a file")
    ] = False,
    workflow: Annotated[
        str | None, typer.Option("--workflow", help="only this workflow (and its partition logs)")
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            "--registry",
            help="key registry you trust (default for --clickhouse: "
            "LINEAGE_KEYS_FILE or <data dir>/keys/registry.json; for a bundle: its own "
            "keys, reported as self-asserted)",
        ),
    ] = None,
    checkpoint_key: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint-key",
            help="trusted processor verifier key "
            "<name>+<key id>+<base64>; repeatable (default: the registry's processor keys)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    data_dir: DataDir = None,
) -> None:
    """Verify an evidence bundle, or the ClickHouse tables, trusting only key material.

    Exit code 0: verified; 1: an integrity check failed; 2: unusable input.
    """
    if (file is None) == (not clickhouse):
        _fail("give either a bundle FILE or --clickhouse")
    vkeys = list(checkpoint_key) if checkpoint_key else None
    keys_file = registry
    if file is not None:
        keys = _registry(registry) if registry is not None else None
        try:
            doc = read_bundle(file)
        except BundleFormatError as exc:
            report = Report(
                "bundle",
                "",
                Failure(FailureKind.UNUSABLE_INPUT, str(exc), {"file": str(file)}),
                Proven(),
            )
        else:
            report = verify_bundle(
                doc, registry=keys, trusted_checkpoint_vkeys=vkeys, workflow_id=workflow
            )
        title = f"evidence bundle {file}"
    else:
        settings = _settings(data_dir)
        keys_file = registry or settings.resolved_keys_file
        keys = _registry(keys_file)
        client = _client(settings)
        try:
            report = verify_clickhouse(
                client,
                settings.clickhouse_database,
                registry=keys,
                trusted_checkpoint_vkeys=vkeys,
                workflow_id=workflow,
            )
        except LineageError as exc:
            _fail(str(exc))
        except Exception as exc:
            _fail(f"ClickHouse query failed: {exc}")
        title = f"ClickHouse database {settings.clickhouse_database}"
    if keys_file is not None and report.trust:
        report.trust += f" (registry {keys_file})"
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, title, Console(highlight=False))
    raise typer.Exit(report.exit_code)


def _span(proven: Proven) -> str:
    if proven.first_event_us is None or proven.last_event_us is None:
        return "-"
    return f"{format_time_us(proven.first_event_us)} … {format_time_us(proven.last_event_us)}"


def _listing(values: set[str] | list[str], limit: int = 6) -> str:
    items = sorted(values) if isinstance(values, set) else list(values)
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "") or "-"


def print_report(report: Report, title: str, console: Console) -> None:
    """Human report: verdict, what was proven, and on failure the first failing item."""
    p = report.proven
    if report.ok:
        console.print(f"[bold green]VERIFIED[/] {title}")
    else:
        assert report.failure is not None
        console.print(f"[bold red]FAILED[/] {title}: [bold]{report.failure.kind.value}[/]")
    if report.trust:
        console.print(f"trust: {report.trust}")
    table = Table(
        title="what was proven" if report.ok else "verified before the failure",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column()
    detail = " (exact bytes, sealed, chained, in the signed log)" if report.ok else ""
    table.add_row("events", f"{p.events}{detail}")
    table.add_row("workflows", f"{len(p.workflows)} ({len(p.completed_workflows)} completed)")
    table.add_row("time span", _span(p))
    table.add_row("principals", _listing(p.principals))
    table.add_row("agents", _listing(p.agents))
    table.add_row("emitters", _listing(p.emitters))
    table.add_row("keys", _listing(p.keys))
    table.add_row("policy digests", _listing(p.policy_digests, 3))
    table.add_row("checkpoints", f"{len(p.checkpoints)} signed and consistent")
    if p.log_entries:
        table.add_row(
            "log entries", f"{p.log_entries} recomputed ({p.unanchored} not yet checkpointed)"
        )
    table.add_row("complete as of", _listing(p.complete_as_of, 8))
    table.add_row("speed", f"{report.entries_per_s:,.0f} entries/s ({report.elapsed_s:.3f} s)")
    console.print(table)
    if report.failure is not None:
        f = report.failure
        console.print(f"[bold red]{f.kind.value}[/]: {f.message}")
        if f.where:
            console.print("  where:    " + ", ".join(f"{k}={v}" for k, v in f.where.items()))
        if f.expected or f.found:
            console.print(f"  expected: {f.expected}")
            console.print(f"  found:    {f.found}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


def register(app: typer.Typer) -> None:
    """Add the ``export`` and ``verify`` commands to ``app``."""
    app.command("export")(export_cmd)
    app.command("verify")(verify_cmd)
