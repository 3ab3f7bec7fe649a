"""``lineage export`` and ``lineage verify``: evidence bundles, and verification of ClickHouse itself."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

try:  # typer 0.2x vendors click: its contexts and usage errors are not the installed click's
    from typer._click.core import Context
    from typer._click.exceptions import UsageError
except ImportError:  # older typer runs on click itself
    from click import Context, UsageError  # type: ignore[assignment]

from lineage import findings, note
from lineage.bundle import (
    MAX_BUNDLE_BYTES,
    BundleError,
    build_bundle,
    leaf_record,
    write_bundle,
)
from lineage.config import Settings
from lineage.errors import ConfigError, LineageError
from lineage.keys import KeyRegistry, Role
from lineage.model import ChainEntry, Checkpoint, Violation
from lineage.policy import PolicySet
from lineage.verify import (
    EXIT_INTEGRITY,
    EXIT_UNUSABLE,
    Failure,
    FailureKind,
    Proven,
    Report,
    Trust,
    Verdict,
    checkpoint_vkeys,
    verify_bundle_bytes,
    verify_entries,
)
from lineage.verify.columns import (
    DERIVED_COLUMNS,
    ColumnSource,
    LogColumns,
    check_stored_columns,
    default_jobs,
)
from lineage.verify.columns import StoredEntry as StoredEntry  # re-exported: the row type
from lineage.verify.columns import expected_columns as expected_columns  # re-exported
from lineage.verify.report import printable, time_text
from lineage.verify.witnessing import WITNESS_POLICY, WITNESS_REGISTRY
from lineage_cli import witness as witness_cli

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

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
_BYTES = {"event_bytes": "bytes", "seal_bytes": "bytes", "seal_path": "bytes"}


def _db(database: str) -> str:
    if not _IDENT.fullmatch(database):
        raise ConfigError(f"database name: expected an identifier, found {database!r}")
    return f"`{database}`"


def _entries_sql(database: str, workflow_id: str | None) -> str:
    wanted = "1" if workflow_id is None else "workflow_id = {wf:String}"
    return (
        f"SELECT workflow_id, chain_seq, event_id, event_digest, prev_hash, entry_hash, "
        f"policy_digest, if({wanted}, event_bytes, '') AS event_bytes, source_partition, "
        f"source_offset, log_index, if({wanted}, seal_bytes, '') AS seal_bytes, seal_index, "
        # unhex(hex(x)): toString of a FixedString drops its trailing zero bytes
        f"arrayStringConcat(arrayMap(x -> unhex(hex(x)), seal_path)) AS seal_path, "
        f"{_SELECT_DERIVED} FROM {_db(database)}.lineage_entries FINAL "
        f"WHERE source_partition = {{p:UInt16}} ORDER BY log_index"
    )


def _json_column(texts: Sequence[str]) -> list[Any]:
    """JSON texts parsed in one call; text by text when the store's texts do not join up."""
    try:
        values = json.loads("[" + ",".join(texts) + "]")
    except ValueError:
        values = None
    if not isinstance(values, list) or len(values) != len(texts):
        values = [json.loads(t) for t in texts]
    return values


def _fetch_partition(client: Any, sql: str, params: dict[str, Any]) -> LogColumns:
    """One partition's rows as columns (no Python object per row), with derived columns."""
    result = client.query(sql, parameters=params, column_formats=_BYTES)
    if hasattr(result, "result_columns"):  # clickhouse-connect: its native column blocks
        cols = [list(c) for c in result.result_columns]
    else:  # lineage_cli.remote (through `lineage up`) returns rows
        cols = [list(c) for c in zip(*result.result_rows, strict=True)]
    if not cols:
        cols = [[] for _ in range(14 + len(DERIVED_COLUMNS))]
    derived = cols[14:]
    derived[_POLICIES] = _json_column(derived[_POLICIES])
    derived[_ATTRIBUTES] = _json_column(derived[_ATTRIBUTES])
    wf, seq, eid, digest, prev, entry, policy, body, part, offset, index, seal, at, path = cols[:14]
    return LogColumns(
        params["p"],
        wf,
        seq,
        eid,
        digest,
        prev,
        entry,
        policy,
        body,
        part,
        offset,
        index,
        seal,
        at,
        path,
        derived,
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
    registry_source: str = "the registry given by the caller",
    independent: bool = True,
    jobs: int | None = None,
) -> Report:
    """Verify the lineage tables of ``database``, trusting only ``registry`` and the vkeys.

    ``registry_source`` names where the registry came from; ``independent=False`` (the
    operator's own registry) makes the verdict at best CONSISTENT_BUT_UNTRUSTED.

    Every partition log (only those of ``workflow_id`` when given) is rebuilt from recomputed
    entry hashes and compared with every signed checkpoint; all chains are checked; the entries
    verified in full (the workflow's, or all) have their event digest, decoding, seal and every
    derived column checked against the exact event bytes.

    Rows are fetched as columns, partition by partition, and verified on ``jobs`` worker
    processes (default: one per core; 1 verifies in this process).
    """
    partitions = _partitions(client, database, workflow_id)
    if workflow_id is not None and not partitions:
        everything = verify_clickhouse(
            client,
            database,
            registry=registry,
            trusted_checkpoint_vkeys=trusted_checkpoint_vkeys,
            registry_source=registry_source,
            independent=independent,
        )
        if not everything.consistent:
            return everything
        everything.failure = Failure(
            FailureKind.UNUSABLE_INPUT,
            f"no entries for workflow {workflow_id!r} in {database}",
            {"workflow_id": workflow_id},
        )
        return everything
    sql = _entries_sql(database, workflow_id)
    logs: dict[int, ColumnSource] = {
        p: functools.partial(_fetch_partition, client, sql, {"p": p, "wf": workflow_id})
        for p in partitions
    }
    checkpoints = _checkpoints(client, database, partitions)
    report = verify_entries(
        logs,
        checkpoints,
        registry=registry,
        trusted_checkpoint_vkeys=trusted_checkpoint_vkeys,
        workflow_id=workflow_id,
        check_columns=check_stored_columns,
        source=f"clickhouse {database}",
        registry_source=registry_source,
        independent=independent,
        jobs=default_jobs() if jobs is None else jobs,
    )
    if report.consistent:
        check_stored_findings(report, checkpoints, _violations(client, database, partitions))
    return report


def check_stored_findings(
    report: Report, checkpoints: Sequence[Checkpoint], violations: Sequence[Violation]
) -> None:
    """The violations table against each partition's signed findings log (docs/findings.md).

    Runs after the checkpoints verified: their notes are trusted here.
    """
    total = 0
    for p in sorted({c.partition for c in checkpoints}):
        notes = [c.note for c in sorted(checkpoints, key=lambda c: c.tree_size) if c.partition == p]
        try:
            proven, after = findings.check_stored(p, violations, notes)
        except findings.FindingsError as exc:
            report.failure = Failure(
                FailureKind.FINDINGS_MISMATCH, str(exc), exc.where, exc.expected, exc.found
            )
            report.claims.clear()
            return
        total += proven
        if proven == 0 and after:
            report.warnings.append(
                f"{findings.NOT_COMMITTED}: partition {p}'s {after} stored violations "
                "are not covered by a signed findings log"
            )
            report.not_proven.append(
                f"the {after} stored violations of partition {p}: no signed findings log covers them"
            )
        elif after:
            report.warnings.append(
                f"partition {p}: {after} violations after the newest signed findings log"
            )
    report.claims.append(
        f"the violations table rebuilds every signed findings root ({total} findings proven)"
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


def _violations(client: Any, database: str, partitions: Sequence[int]) -> list[Violation]:
    """Every stored violation of ``partitions``: the findings logs are rebuilt from them."""
    columns = ", ".join(
        "toUnixTimestamp64Micro(event_time)" if c == "event_time" else c
        for c in findings.STORED_COLUMNS
    )
    result = client.query(
        f"SELECT {columns} FROM {_db(database)}.violations FINAL "
        "WHERE source_partition IN {ps:Array(UInt16)}",
        parameters={"ps": list(partitions)},
    )
    return [findings.violation_from_row(row) for row in result.result_rows]


def findings_behind(client: Any, database: str) -> int:
    """Findings the newest stored checkpoints sign that the violations table does not hold yet.

    The sink writes violations and checkpoints as they arrive; wait for 0 before exporting or
    verifying right after a run, or verification reports the missing rows.
    """
    partitions = _partitions(client, database, None)
    violations = _violations(client, database, partitions)
    newest: dict[int, Checkpoint] = {}
    for c in _checkpoints(client, database, partitions):
        if c.partition not in newest or c.tree_size > newest[c.partition].tree_size:
            newest[c.partition] = c
    behind = 0
    for p, c in newest.items():
        behind += max(0, findings.signed_size(c.note) - findings.stored_prefix(p, violations))
    return behind


def export_bundle(
    client: Any,
    database: str,
    workflow_id: str,
    registry: KeyRegistry,
    *,
    policy_sets: Sequence[tuple[bytes, bytes]] = (),
) -> dict[str, Any]:
    """Build the evidence bundle of one workflow from the ClickHouse tables.

    ``policy_sets`` are the (TOML, Cedar) files of the policy sets its decisions were made under.
    """
    partitions = _partitions(client, database, workflow_id)
    if not partitions:
        raise BundleError(f"no entries for workflow {workflow_id!r} in {database}")
    entries: list[ChainEntry] = []
    leaves: dict[int, list[bytes]] = {}
    sql = _entries_sql(database, workflow_id)
    for p in partitions:
        records: list[bytes] = []
        for e in _fetch_partition(client, sql, {"p": p, "wf": workflow_id}).entries():
            if e.log_index != len(records):
                raise BundleError(
                    f"partition {p}: expected log index {len(records)}, found "
                    f"{e.log_index}; run `lineage verify --clickhouse`"
                )
            records.append(leaf_record(e))
            if e.workflow_id == workflow_id:
                entries.append(e)
        leaves[p] = records
    violations = _violations(client, database, partitions)
    stored = {p: findings.stored_prefix(p, violations) for p in partitions}
    checkpoints = [
        c
        for c in _checkpoints(client, database, partitions)
        if findings.within(c.note, stored.get(c.partition, 0))
    ]
    if not checkpoints:
        raise BundleError(f"no signed checkpoint yet for partitions {partitions}")
    checkpoints = _witnessed(client, database, partitions, checkpoints, entries)  # witness hook
    return build_bundle(
        workflow_id,
        entries,
        leaves,
        checkpoints,
        registry,
        _export_vkey(registry, checkpoints),
        policy_sets=policy_sets,
        violations=violations,
    )


def _witnessed(
    client: Any,
    database: str,
    partitions: list[int],
    checkpoints: list[Checkpoint],
    entries: list[ChainEntry],
) -> list[Checkpoint]:
    """Witness hook (docs/witness.md): add stored cosignatures to the checkpoint notes."""
    from lineage.witnessed import attach_cosignatures
    from sinks.witness_feeder import load_cosignatures

    needed: dict[int, int] = {}
    for e in entries:
        needed[e.source_partition] = max(needed.get(e.source_partition, 0), e.log_index)
    cosigs = load_cosignatures(client, database, partitions)
    return attach_cosignatures(checkpoints, cosigs, needed)


# -- commands -------------------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_UNUSABLE) -> NoReturn:
    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {_t(message, 2000)}")
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
    """A ClickHouse client; _Unusable when none can be opened."""
    from lineage_cli.remote import open_client  # through a running `lineage up`, if any

    try:
        return open_client(settings)
    except Exception as exc:
        raise _Unusable(f"cannot open ClickHouse at {settings.clickhouse_dsn}: {exc}") from None


DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="data directory of the embedded stack (env LINEAGE_DATA_DIR)"),
]


def export_cmd(
    workflow: Annotated[str, typer.Option("--workflow", help="workflow id to export")],
    out: Annotated[Path, typer.Option("--out", help="where to write the bundle (JSON)")],
    policy: Annotated[
        list[Path] | None,
        typer.Option(
            "--policy",
            help="policy TOML whose set (with its Cedar file) decisions name; repeatable "
            "(default: LINEAGE_POLICY_FILE or policies/default.toml)",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Export one workflow's evidence bundle from ClickHouse for offline verification."""
    settings = _settings(data_dir)
    registry = _registry(settings.resolved_keys_file)
    try:
        policy_sets = [PolicySet.files(p) for p in policy or [settings.resolved_policy_file]]
    except ConfigError as exc:
        _fail(str(exc))
    try:
        client = _client(settings)
    except _Unusable as exc:
        _fail(str(exc))
    try:
        bundle = export_bundle(
            client, settings.clickhouse_database, workflow, registry, policy_sets=policy_sets
        )
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


def _trust_registry(
    registry: Path | None, settings: Settings | None
) -> tuple[KeyRegistry | None, str]:
    """The registry the auditor named (--registry, else LINEAGE_TRUST_FILE) and how to call it."""
    if registry is not None:
        return _load_registry(registry), f"auditor registry {registry}"
    if settings is not None and settings.trust_file is not None:
        path = settings.trust_file
        return _load_registry(path), f"trust file {path} (LINEAGE_TRUST_FILE)"
    return None, ""


class _Unusable(Exception):
    """Input the verifier cannot use: reported as UNUSABLE_INPUT (exit 2), in JSON too."""


def _load_registry(path: Path) -> KeyRegistry:
    try:
        return KeyRegistry.load(path)
    except (ConfigError, ValueError, RecursionError) as exc:
        raise _Unusable(f"registry {path}: {exc}") from None


NO_INPUT = "none"
"""The report's ``source`` when the command was not given exactly one input to verify."""


def _unusable_report(message: str, source: str, workflow: str | None) -> Report:
    report = Report(
        source,
        Trust("none (input unusable)", "none (input unusable)", anchored=False),
        Failure(FailureKind.UNUSABLE_INPUT, message, {}),
        Proven(),
        expected_workflow=workflow,
    )
    return report


class _VerifyCommand(TyperCommand):
    """``lineage verify``: with ``--json``, an option error is the JSON report too (exit 2).

    Typer and click check option values (a non-integer ``--jobs``, an unknown option, a missing
    value) before the command runs and print a usage box; a caller that asked for JSON gets
    the UNUSABLE_INPUT report instead.
    """

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        """Parse as click does; on a usage error under ``--json``, print the JSON report."""
        wants_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:
            if not wants_json:
                raise
            report = _unusable_report(exc.format_message(), NO_INPUT, None)
            typer.echo(json.dumps(report.to_json(), indent=2))
            ctx.exit(report.exit_code)


def verify_cmd(
    file: Annotated[Path | None, typer.Argument(help="evidence bundle to verify")] = None,
    clickhouse: Annotated[
        bool, typer.Option("--clickhouse", help="verify the ClickHouse tables instead of a file")
    ] = False,
    workflow: Annotated[
        str | None,
        typer.Option(
            "--workflow",
            help="the workflow you expect: a bundle of another one fails (UNEXPECTED_WORKFLOW); "
            "with --clickhouse, only this workflow (and its partition logs)",
        ),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            "--registry",
            help="key registry you trust (default: LINEAGE_TRUST_FILE). Without one, a bundle "
            "is checked with its own keys and a store with the operator's registry: "
            "at best CONSISTENT_BUT_UNTRUSTED, exit 3",
        ),
    ] = None,
    checkpoint_key: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint-key",
            help="trusted processor verifier key "
            "<name>+<key id>+<base64>; repeatable (default: the trusted registry's processor keys)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    data_dir: DataDir = None,
    # -- witness options (docs/witness.md) --
    witness_key: Annotated[
        list[str] | None,
        typer.Option("--witness-key", help="trusted witness verifier key; repeatable"),
    ] = None,
    witnesses_required: Annotated[
        int | None,
        typer.Option("--witnesses-required", help="cosignatures needed (default 1)"),
    ] = None,
    trusted_checkpoints: Annotated[
        Path | None,
        typer.Option("--trusted-checkpoints", help="with --clickhouse: checkpoints you trust"),
    ] = None,
    witness_url: Annotated[
        str | None,
        typer.Option("--witness-url", help="with --clickhouse: fetch trusted checkpoints"),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            help="with --clickhouse: processes verifying partition logs, at least 1 "
            "(default: one per core)",
        ),
    ] = None,
) -> None:
    """Verify an evidence bundle, or the ClickHouse tables, trusting only keys you name.

    Exit code 0: verified with keys you named; 1: an integrity check failed; 2: unusable input;
    3: consistent, but signed by keys you did not name (the bundle's own, or the operator's).
    """
    if file is not None and not clickhouse:
        title, source = f"evidence bundle {file}", f"bundle {file}"
    elif clickhouse and file is None:
        title, source = "ClickHouse", "clickhouse"
    else:
        title, source = "(no single input)", NO_INPUT
    vkeys = list(checkpoint_key) if checkpoint_key else None
    try:
        if source == NO_INPUT:
            raise _Unusable("give either a bundle FILE or --clickhouse")
        if jobs is not None and jobs < 1:
            raise _Unusable(f"--jobs: expected at least 1 process, found {jobs}")
        try:
            policy = witness_cli.policy_for(
                witness_key, witnesses_required, clickhouse, trusted_checkpoints, witness_url
            )
        except witness_cli.OptionError as exc:
            raise _Unusable(str(exc)) from None
        try:
            settings: Settings | None = (
                Settings() if data_dir is None else Settings(data_dir=data_dir)
            )
        except ValidationError as exc:
            if clickhouse:
                raise _Unusable(f"invalid LINEAGE_ settings: {exc.errors()[0]['msg']}") from None
            settings = None
        keys, keys_source = _trust_registry(registry, settings)
        if file is not None:
            try:
                with file.open("rb") as f:
                    raw = f.read(MAX_BUNDLE_BYTES + 1)
            except OSError as exc:
                raise _Unusable(f"{file}: cannot read: {exc.strerror or exc}") from None
            options: dict[str, Any] = {
                "registry": keys,
                "trusted_checkpoint_vkeys": vkeys,
                "workflow_id": workflow,
            }
            if keys_source:
                options["registry_source"] = keys_source
            if policy is not None:
                options["options"] = {WITNESS_POLICY: policy, WITNESS_REGISTRY: keys}
            report = verify_bundle_bytes(raw, **options)
            report.source = source
        else:
            assert settings is not None
            title = f"ClickHouse database {settings.clickhouse_database}"
            source = f"clickhouse {settings.clickhouse_database}"
            independent = keys is not None
            if keys is None:
                path = settings.resolved_keys_file
                keys = _load_registry(path)
                keys_source = f"operator's own registry (not independent) {path}"
            client = _client(settings)
            try:
                report = verify_clickhouse(
                    client,
                    settings.clickhouse_database,
                    registry=keys,
                    trusted_checkpoint_vkeys=vkeys,
                    workflow_id=workflow,
                    registry_source=keys_source,
                    independent=independent,
                    jobs=jobs,
                )
            except LineageError as exc:
                raise _Unusable(str(exc)) from None
            except Exception as exc:
                raise _Unusable(f"ClickHouse query failed: {exc}") from None
            try:
                witness_cli.store_findings(
                    report,
                    client,
                    settings.clickhouse_database,
                    trusted_file=trusted_checkpoints,
                    witness_url=witness_url,
                    policy=policy,
                    registry=keys,
                    vkeys=vkeys,
                )
            except witness_cli.OptionError as exc:
                raise _Unusable(str(exc)) from None
    except _Unusable as exc:
        report = _unusable_report(str(exc), source, workflow)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, title, Console(highlight=False))
    raise typer.Exit(report.exit_code)


def _t(value: object, limit: int = 400) -> str:
    """Evidence-derived text made safe for the terminal and for rich markup."""
    return escape(printable(value, limit))


def _span(proven: Proven) -> str:
    if proven.first_event_us is None or proven.last_event_us is None:
        return "-"
    return f"{time_text(proven.first_event_us)} … {time_text(proven.last_event_us)}"


def _listing(values: set[str] | list[str], limit: int = 6) -> str:
    items = sorted(values) if isinstance(values, set) else list(values)
    shown = ", ".join(printable(i, 200) for i in items[:limit])
    return escape(shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "") or "-")


_VERDICT_STYLE = {
    Verdict.VERIFIED: "[bold green]VERIFIED[/]",
    Verdict.UNTRUSTED: "[bold yellow]CONSISTENT BUT UNTRUSTED[/]",
    Verdict.FAILED: "[bold red]FAILED[/]",
    Verdict.UNUSABLE: "[bold red]UNUSABLE INPUT[/]",
}


def _print_failure(f: Failure, console: Console) -> None:
    console.print(f"[bold red]{f.kind.value}[/]: {_t(f.message, 1000)}")
    if f.where:
        console.print(
            "  where:    " + ", ".join(f"{_t(k, 80)}={_t(v, 200)}" for k, v in f.where.items())
        )
    if f.expected or f.found:
        console.print(f"  expected: {_t(f.expected, 1000)}")
        console.print(f"  found:    {_t(f.found, 1000)}")


def _findings(p: Proven) -> str:
    """The workflow's findings, one per line, and what contained it."""
    if not p.findings:
        return "none"
    lines = [
        f"{_t(f['severity'])} {_t(f['type'])} at {_t(f['event_id'] or '-')}: "
        f"{_t(f['explanation'], 80)}"
        for f in p.findings[:12]
    ]
    if len(p.findings) > 12:
        lines.append(f"(+{len(p.findings) - 12} more)")
    if p.contained_by:
        lines.append(f"contained by {_t(p.contained_by)}")
    return "\n".join(lines)


def _witness_lines(w: Mapping[str, Any] | None) -> list[str]:
    """The witness section of a report (``Report.witness``), escaped for the terminal."""
    if w is None:
        return []
    names = ", ".join(printable(n, 200) for n in w["witnesses"]) or "-"
    out = [escape(f"witnesses: {names} ({w['required']} required)")]
    for log in w["logs"]:
        cos = ", ".join(
            f"{printable(c['witness'], 200)} at {c['time']}" for c in log["cosignatures"]
        )
        out.append(
            escape(
                f"  {printable(log['origin'], 200)} size {log['size']}: {cos or 'no cosignature'}"
            )
        )
    n = w.get("newest_cosigned")
    if n is not None:
        out.append(
            escape(
                f"newest cosigned checkpoint: {printable(n['origin'], 200)} size {n['size']}, "
                f"cosigned {n['time']} by {printable(n['witness'], 200)} "
                f"({w['newest_age_s']} s before verification)"
            )
        )
    return out


def print_report(report: Report, title: str, console: Console) -> None:
    """Human report: verdict, what was proven and not, and on failure the first failing item.

    Only a VERIFIED report says "proven"; a consistent one whose keys nobody named lists the same
    statements under "consistent under <those keys> (not trusted)".

    Every string that comes from evidence is escaped (``printable`` then rich markup escaping),
    so no field can move the cursor, recolour the screen or break the printer.
    """
    p = report.proven
    head = f"{_VERDICT_STYLE[report.verdict]} {_t(title)}"
    if report.failure is not None:
        head += f": [bold]{report.failure.kind.value}[/]"
    console.print(head)
    console.print(f"exit code {report.exit_code}; trust: {_t(report.trust.describe())}")
    if report.verdict is Verdict.UNUSABLE:
        assert report.failure is not None
        _print_failure(report.failure, console)
        return
    table = Table(
        title="what was proven"
        if report.ok
        else "checked (nothing here is proven unless VERIFIED)",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "workflows", _listing(p.workflows, 8) + f" ({len(p.completed_workflows)} completed)"
    )
    if report.expected_workflow is not None:
        table.add_row("expected workflow", _t(report.expected_workflow))
    detail = ""
    if report.ok:
        detail = " (exact bytes, sealed, chained, in the signed log)"
    elif report.consistent:
        detail = f" (consistent under {report.trust.untrusted}, not trusted)"
    table.add_row("events", f"{p.events}{detail}")
    table.add_row("time span", _t(_span(p)))
    table.add_row("principals", _listing(p.principals))
    table.add_row("agents", _listing(p.agents))
    table.add_row("emitters", _listing(p.emitters))
    table.add_row("keys", _listing(p.keys))
    table.add_row("policy digests", _listing(p.policy_digests, 3))
    logs = [f"{o} size {s}" for o, (s, _) in sorted(p.logs.items())]
    table.add_row("logs", _listing(logs, 8))
    table.add_row("checkpoints", f"{len(p.checkpoints)} signed and consistent")
    table.add_row(
        "witnesses", _listing(report.trust.witnesses) if report.trust.witnesses else "none checked"
    )
    if p.log_entries:
        table.add_row(
            "log entries", f"{p.log_entries} recomputed ({p.unanchored} not yet checkpointed)"
        )
    table.add_row("complete as of", _listing(p.complete_as_of, 8))
    table.add_row("findings", _findings(p))
    table.add_row("decisions re-run", f"{p.decisions_rerun} (same outcome under their policy set)")
    if report.size_bytes is not None:
        table.add_row("input", f"{report.size_bytes:,} bytes")
    speed = f"{report.entries_per_s:,.0f} entries/s ({report.elapsed_s:.3f} s)"
    if report.cpu_s > 0:
        speed += (
            f"; {report.entries_per_cpu_s:,.0f} per CPU s ({report.cpu_s:.3f} s CPU, "
            f"{report.jobs} process{'es' if report.jobs > 1 else ''})"
        )
    table.add_row("speed", speed)
    console.print(table)
    if report.failure is not None:
        _print_failure(report.failure, console)
    for line in _witness_lines(report.witness):
        console.print(line)
    for claim in report.proven_claims:
        console.print(f"[green]proven:[/] {_t(claim, 1000)}")
    consistent = report.consistent_claims
    if consistent:
        console.print(f"[yellow]consistent under {report.trust.untrusted} (not trusted):[/]")
        for claim in consistent:
            console.print(f"  {_t(claim, 1000)}")
    for gap in report.not_proven:
        console.print(f"[yellow]not proven:[/] {_t(gap, 1000)}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {_t(warning, 1000)}")


def register(app: typer.Typer) -> None:
    """Add the ``export`` and ``verify`` commands to ``app``."""
    app.command("export")(export_cmd)
    app.command("verify", cls=_VerifyCommand)(verify_cmd)
