"""The column path of stored-log verification gives the reference path's report, failures included.

Each case tampers real column values of a processor run; the column path (in this process and on
two worker processes) must report exactly the failure the reference path (one ``StoredEntry``
per row through ``stored._verify_partition``) reports for the same rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import pytest

from lineage.model import ChainEntry
from lineage.verify import FailureKind, Report, columns, verify_entries
from lineage.verify.columns import (
    DERIVED_COLUMNS,
    LogColumns,
    StoredEntry,
    check_stored_columns,
    verify_log,
)
from sinks import rows
from tests.support.lineage_builder import Dataset, build_dataset

pytestmark = pytest.mark.timeout(300)

_TIMING = ("elapsed_s", "entries_per_s", "cpu_s", "entries_per_cpu_s", "jobs")


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(workflows=6, steps=3, checkpoint_every=10)


def _stored(data: Dataset) -> dict[int, list[StoredEntry]]:
    index = {c: i for i, c in enumerate(rows.ENTRY_COLUMNS)}
    out: dict[int, list[StoredEntry]] = {}
    for p in range(2):
        out[p] = []
        for e in data.partition_entries(p):
            row = rows.entry_row(e)
            values = {f.name: getattr(e, f.name) for f in fields(ChainEntry)}
            cols = tuple(row[index[c]] for c in DERIVED_COLUMNS)
            out[p].append(StoredEntry(**values, columns=cols))
    return out


def _columns(p: int, entries: list[StoredEntry]) -> LogColumns:
    def col(name: str) -> list[Any]:
        return [getattr(e, name) for e in entries]

    return LogColumns(
        p,
        col("workflow_id"),
        col("chain_seq"),
        col("event_id"),
        col("event_digest"),
        col("prev_hash"),
        col("entry_hash"),
        col("policy_digest"),
        col("event_bytes"),
        col("source_partition"),
        col("source_offset"),
        col("log_index"),
        col("seal_bytes"),
        col("seal_index"),
        [b"".join(e.seal_path) for e in entries],
        [list(c) for c in zip(*(e.columns for e in entries), strict=True)]
        if entries
        else [[] for _ in DERIVED_COLUMNS],
    )


def _reference(data: Dataset, logs: dict[int, list[StoredEntry]]) -> Report:
    return verify_entries(
        {p: list(v) for p, v in logs.items()},
        data.checkpoints,
        registry=data.registry,
        check_columns=check_stored_columns,
    )


def _by_columns(data: Dataset, logs: dict[int, list[StoredEntry]], jobs: int) -> Report:
    sources = {p: functools.partial(_columns, p, v) for p, v in logs.items()}
    return verify_entries(sources, data.checkpoints, registry=data.registry, jobs=jobs)


def _comparable(report: Report) -> dict[str, Any]:
    doc = report.to_json()
    for key in _TIMING:
        doc.pop(key)
    return doc


@pytest.fixture(autouse=True)
def _workers_for_small_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send even these small partitions to the worker processes when jobs > 1."""
    monkeypatch.setattr(columns, "WORKER_MIN_ROWS", 0)


@pytest.mark.parametrize("jobs", [1, 2])
def test_clean_logs_give_the_reference_report(data: Dataset, jobs: int) -> None:
    logs = _stored(data)
    reference = _reference(data, logs)
    assert reference.ok
    report = _by_columns(data, logs, jobs)
    assert _comparable(report) == _comparable(reference)
    assert report.jobs == jobs
    assert report.cpu_s > 0 and report.entries_per_cpu_s > 0
    assert report.to_json()["entries_per_cpu_s"] > 0


def test_clean_logs_take_the_fast_path(data: Dataset) -> None:
    from lineage.verify.checks import Checker, parse_vkeys
    from lineage.verify.report import Proven
    from lineage.verify.stored import _stored_checkpoints

    checker = Checker(data.registry, parse_vkeys([data.checkpoint_vkey]), Proven())
    signed = _stored_checkpoints(data.checkpoints, [0, 1], checker)
    for p, entries in _stored(data).items():
        notes = [n for _, n in sorted((c.tree_size, c.note) for c in data.partition_checkpoints(p))]
        out = verify_log(_columns(p, entries), signed[p], notes, data.registry, None)
        assert out.failure is None and out.fast
        assert out.proven.log_entries == len(entries)


def _set(i: int, **changes: Any) -> Callable[[list[StoredEntry]], list[StoredEntry]]:
    def edit(entries: list[StoredEntry]) -> list[StoredEntry]:
        entries[i] = replace(entries[i], **changes)
        return entries

    return edit


def _flip_event(entries: list[StoredEntry]) -> list[StoredEntry]:
    e = entries[5]
    body = bytearray(e.event_bytes)
    body[-3] ^= 1
    entries[5] = replace(e, event_bytes=bytes(body))
    return entries


def _column(name: str, value: Any) -> Callable[[list[StoredEntry]], list[StoredEntry]]:
    def edit(entries: list[StoredEntry]) -> list[StoredEntry]:
        e = entries[6]
        cols = list(e.columns)
        cols[DERIVED_COLUMNS.index(name)] = value
        entries[6] = replace(e, columns=tuple(cols))
        return entries

    return edit


def _path(entries: list[StoredEntry]) -> list[StoredEntry]:
    for i, e in enumerate(entries):
        if e.seal_path:
            entries[i] = replace(e, seal_path=(bytes(32), *e.seal_path[1:]))
            return entries
    raise AssertionError("no entry with a seal path")


CASES: dict[str, tuple[Callable[[list[StoredEntry]], list[StoredEntry]], FailureKind]] = {
    "entry hash": (_set(4, entry_hash=bytes(32)), FailureKind.ENTRY_HASH_MISMATCH),
    "prev hash": (_set(7, prev_hash=b"\x01" * 32), FailureKind.CHAIN_LINK),
    "chain seq": (_set(7, chain_seq=9), FailureKind.CHAIN_SEQUENCE),
    "event bytes": (_flip_event, FailureKind.EVENT_DIGEST_MISMATCH),
    "seal path": (_path, FailureKind.SEAL_INCLUSION),
    "event id": (
        _set(3, event_id="01959999-0000-7000-8000-000000000000"),
        FailureKind.EVENT_ID_MISMATCH,
    ),
    "principal column": (_column("principal", "user:mallory"), FailureKind.COLUMN_MISMATCH),
    "attributes column": (_column("attributes", {"approved": "yes"}), FailureKind.COLUMN_MISMATCH),
    "deleted row": (lambda es: es[:4] + es[5:], FailureKind.LOG_INDEX),
    "duplicated row": (lambda es: [*es[:4], es[4], *es[4:]], FailureKind.LOG_INDEX),
    "truncated log": (lambda es: es[:-1], FailureKind.LOG_TRUNCATED),
    "no seal": (_set(2, seal_bytes=b""), FailureKind.MISSING_SEAL),
    "other partition": (_set(2, source_partition=0), FailureKind.LOG_INDEX),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_columns_fail_as_the_reference_does(data: Dataset, case: str) -> None:
    edit, kind = CASES[case]
    logs = _stored(data)
    logs[1] = edit(logs[1])
    reference = _reference(data, logs)
    assert reference.failure is not None
    assert reference.failure.kind is kind
    report = _by_columns(data, logs, 1)
    assert report.failure == reference.failure
    assert _comparable(report) == _comparable(reference)


def test_a_failure_on_workers_reads_as_in_one_process(data: Dataset) -> None:
    logs = _stored(data)
    logs[0] = _set(3, entry_hash=bytes(32))(logs[0])
    logs[1] = _set(2, chain_seq=5)(logs[1])
    reference = _reference(data, logs)
    assert reference.failure is not None
    assert reference.failure.kind is FailureKind.ENTRY_HASH_MISMATCH
    assert reference.failure.where["partition"] == 0
    report = _by_columns(data, logs, 2)
    assert report.failure == reference.failure
    assert _comparable(report) == _comparable(reference)


def test_cli_reports_jobs_and_entries_per_cpu_second(
    chdb_client: Any,
    ch_database: str,
    data: Dataset,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from typer.testing import CliRunner

    from lineage_cli import evidence
    from lineage_cli.main import app
    from sinks import schema

    schema.migrate(chdb_client, ch_database)
    chdb_client.insert(
        "lineage_entries",
        [rows.entry_row(e) for e in data.entries],
        column_names=list(rows.ENTRY_COLUMNS),
        database=ch_database,
    )
    chdb_client.insert(
        "checkpoints",
        [rows.checkpoint_row(c) for c in data.checkpoints],
        column_names=list(rows.CHECKPOINT_COLUMNS),
        database=ch_database,
    )
    registry = tmp_path / "auditor.json"
    data.registry.save(registry)
    monkeypatch.setenv("LINEAGE_CLICKHOUSE_DATABASE", ch_database)
    monkeypatch.setattr(evidence, "_client", lambda settings: chdb_client)
    base = ["verify", "--clickhouse", "--data-dir", str(tmp_path), "--registry", str(registry)]
    for jobs in ("1", "2"):
        result = CliRunner().invoke(app, [*base, "--jobs", jobs, "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        assert out["jobs"] == int(jobs)
        assert out["proven"]["log_entries"] == len(data.entries)
        assert out["entries_per_cpu_s"] > 0 and out["cpu_s"] > 0
    result = CliRunner().invoke(app, [*base, "--jobs", "0"])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 0, result.output
    assert "per CPU s" in result.output


def test_without_worker_processes_it_verifies_in_this_one(
    data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_processes(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no semaphores here")

    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", no_processes)
    logs = _stored(data)
    report = _by_columns(data, logs, 2)
    assert report.ok and report.jobs == 1
    assert _comparable(report) == _comparable(_reference(data, logs))


def test_logs_with_derived_columns_are_checked_row_by_projection(
    data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lineage.verify.checks import Checker, parse_vkeys
    from lineage.verify.report import Proven
    from lineage.verify.stored import _stored_checkpoints

    calls: list[int] = []
    rows_loop = columns._fast_rows

    def counted(cols: LogColumns, *args: Any) -> Any:
        calls.append(cols.partition)
        return rows_loop(cols, *args)

    monkeypatch.setattr(columns, "_fast_rows", counted)
    checker = Checker(data.registry, parse_vkeys([data.checkpoint_vkey]), Proven())
    signed = _stored_checkpoints(data.checkpoints, [0, 1], checker)
    for p, entries in _stored(data).items():
        notes = [n for _, n in sorted((c.tree_size, c.note) for c in data.partition_checkpoints(p))]
        out = verify_log(_columns(p, entries), signed[p], notes, data.registry, None)
        assert out.failure is None and out.fast
    assert calls == [0, 1]
