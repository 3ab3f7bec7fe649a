"""Verification speed: evidence bundles and ClickHouse-style stored logs (``python -m bench.verify_bench``).

Builds real data with the processor (``tests/support/lineage_builder.py``: sealed events from two
emitters, a PartitionPipeline run, signed checkpoints), then times ``verify_bundle`` on one long
workflow's bundle, ``verify_entries`` over every stored partition log (with and without the
derived-column check the ClickHouse verifier runs), and, with ``--chdb``, ``verify_clickhouse`` end
to end on an in-process chDB engine (query and row parsing included): the old path (rows streamed
into one ``StoredEntry`` each, verified by the reference loop) and the column path with 1 and with
``--jobs`` worker processes, in the same run. Each run is repeated and the best is kept; rates are
given per wall-clock second and per CPU second (this process and its finished worker processes:
the one-core figure). Run from the repository root.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

from lineage.keys import KeyRegistry
from lineage.model import ChainEntry
from lineage.verify import Report, stored, verify_bundle, verify_entries
from lineage.verify.columns import DERIVED_COLUMNS, StoredEntry, check_stored_columns, default_jobs
from lineage_cli import evidence
from lineage_cli.evidence import verify_clickhouse
from sinks import rows
from tests.support.lineage_builder import Dataset, build_dataset


def _stored(d: Dataset, p: int) -> list[ChainEntry]:
    """Entries as the ClickHouse reader yields them: with their stored derived columns."""
    index = {c: i for i, c in enumerate(rows.ENTRY_COLUMNS)}
    out: list[ChainEntry] = []
    for e in d.partition_entries(p):
        row = rows.entry_row(e)
        cols = tuple(row[index[c]] for c in DERIVED_COLUMNS)
        values = {f.name: getattr(e, f.name) for f in fields(ChainEntry)}
        out.append(StoredEntry(**values, columns=cols))
    return out


_OLD_SQL = (
    "SELECT workflow_id, chain_seq, event_id, event_digest, prev_hash, entry_hash, "
    "policy_digest, event_bytes, source_partition, source_offset, log_index, seal_bytes, "
    "seal_index, arrayStringConcat(arrayMap(x -> hex(x), seal_path)) AS seal_path, {derived} "
    "FROM {db}.lineage_entries FINAL WHERE source_partition = {{p:UInt16}} ORDER BY log_index"
)


def _old_rows(client: Any, sql: str, p: int) -> Iterator[ChainEntry]:
    """The verifier before the column path: rows streamed into one StoredEntry each."""
    fmt = {"event_bytes": "bytes", "seal_bytes": "bytes"}
    with client.query_row_block_stream(sql, parameters={"p": p}, column_formats=fmt) as stream:
        for block in stream:
            for r in block:
                path = bytes.fromhex(r[13])
                columns = list(r[14:])
                columns[evidence._POLICIES] = json.loads(columns[evidence._POLICIES])
                columns[evidence._ATTRIBUTES] = json.loads(columns[evidence._ATTRIBUTES])
                yield StoredEntry(
                    *(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]),
                    r[11],
                    r[12],
                    tuple(path[i : i + 32] for i in range(0, len(path), 32)),
                    (),
                    tuple(columns),
                )


def _old_clickhouse(client: Any, db: str, registry: KeyRegistry) -> Report:
    """``verify_clickhouse`` as it was at 36d8cb8 (all partitions, no workflow filter)."""
    partitions = evidence._partitions(client, db, None)
    sql = _OLD_SQL.format(derived=evidence._SELECT_DERIVED, db=db)
    logs = {p: _old_rows(client, sql, p) for p in partitions}
    return verify_entries(
        logs,
        evidence._checkpoints(client, db, partitions),
        registry=registry,
        check_columns=check_stored_columns,
    )


def _baseline_columns(ref: str) -> types.ModuleType:
    """``lineage.verify.columns`` (with its ``strict_avro``) as it was at git ``ref``, loaded
    beside the current one, to measure the column path before and after in one run."""

    def load(path: str, name: str, extra: dict[str, Any]) -> types.ModuleType:
        source = subprocess.run(
            ["git", "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
        ).stdout
        for line in extra.pop("_drop", ()):
            source = source.replace(line, "")
        module = types.ModuleType(name)
        module.__dict__.update(extra)
        sys.modules[name] = module  # dataclasses look their module up
        exec(compile(source, f"{ref}:{path}", "exec"), module.__dict__)  # our own git history
        return module

    strict = load("lineage/verify/strict_avro.py", "_baseline_strict_avro", {})
    return load(
        "lineage/verify/columns.py",
        "_baseline_columns",
        {"strict_avro": strict, "_drop": ["from lineage.verify import strict_avro\n"]},
    )


def _with_columns(module: types.ModuleType, verify: Callable[[], Report]) -> Callable[[], Report]:
    """``verify`` run with ``module`` as the column path ``verify_entries`` calls (one process)."""

    def run() -> Report:
        names = vars(stored)
        saved = names["columns"]
        names["columns"] = module
        try:
            return verify()
        finally:
            names["columns"] = saved

    return run


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (worker processes)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ru.ru_utime + ru.ru_stime


def _run(name: str, verify: Callable[[], Report], repeat: int) -> dict[str, Any]:
    """Best of ``repeat`` runs: wall and CPU seconds, entries per second of each."""
    best: tuple[float, float, int] | None = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), _cpu()
        report = verify()
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        if not report.ok:
            raise SystemExit(f"{name}: verification failed: {report.failure}")
        n = max(report.proven.events, report.proven.log_entries)
        if best is None or wall < best[0]:
            best = (wall, cpu, n)
    assert best is not None
    wall, cpu, n = best
    print(
        f"{name:<36} {n:>7} entries  {wall:6.3f} s wall {n / wall:>9,.0f}/s  "
        f"{cpu:6.3f} s CPU {n / cpu:>9,.0f}/s"
    )
    return {
        "name": name,
        "entries": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "entries_per_s_wall": n / wall,
        "entries_per_s_cpu": n / cpu,
    }


def main() -> None:
    """Build, verify, print entries/s."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=20_000, help="about how many entries to build")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--seal-every", type=int, default=100, help="events per emitter seal")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    ap.add_argument("--chdb", action="store_true", help="also verify through chDB (query included)")
    ap.add_argument(
        "--jobs", type=int, default=default_jobs(), help="worker processes for the column path"
    )
    ap.add_argument(
        "--baseline",
        metavar="REF",
        help="with --chdb, also time the column path as it was at this git commit (--jobs 1)",
    )
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    args = ap.parse_args()

    t = time.perf_counter()
    long_steps = args.entries // 8
    workflows = max((args.entries - 4 * long_steps) // 98, 1)
    d = build_dataset(
        workflows=workflows,
        steps=24,
        partitions=args.partitions,
        seal_every=args.seal_every,
        checkpoint_every=2_000,
        long_workflow_steps=long_steps,
    )
    print(
        f"built {len(d.entries)} entries, {len(d.checkpoints)} checkpoints, "
        f"{len(d.workflows)} workflows in {time.perf_counter() - t:.1f} s"
    )
    parts = range(args.partitions)
    doc = json.loads(json.dumps(d.bundle(d.workflows[-1])))
    plain = {p: d.partition_entries(p) for p in parts}
    stored = {p: _stored(d, p) for p in parts}
    vkeys = [d.checkpoint_vkey]
    results = [
        _run(
            "bundle (one long workflow)",
            lambda: verify_bundle(doc, registry=d.registry, trusted_checkpoint_vkeys=vkeys),
            args.repeat,
        ),
        _run(
            "stored logs, chains + seals",
            lambda: verify_entries(plain, d.checkpoints, registry=d.registry),
            args.repeat,
        ),
        _run(
            "stored logs, + derived columns",
            lambda: verify_entries(
                stored, d.checkpoints, registry=d.registry, check_columns=check_stored_columns
            ),
            args.repeat,
        ),
    ]
    if args.chdb:
        import clickhouse_connect

        from sinks import schema

        client: Any = clickhouse_connect.get_client(dsn=f"chdb://{tempfile.mkdtemp()}")
        client.command("CREATE DATABASE bench")
        schema.migrate(client, "bench")
        client.insert(
            "lineage_entries",
            [rows.entry_row(e) for e in d.entries],
            column_names=list(rows.ENTRY_COLUMNS),
            database="bench",
        )
        client.insert(
            "checkpoints",
            [rows.checkpoint_row(c) for c in d.checkpoints],
            column_names=list(rows.CHECKPOINT_COLUMNS),
            database="bench",
        )
        client.command("OPTIMIZE TABLE bench.lineage_entries FINAL")
        old = _run(
            "clickhouse, old path (rows)",
            lambda: _old_clickhouse(client, "bench", d.registry),
            args.repeat,
        )
        results.append(old)
        before: dict[str, Any] | None = None
        if args.baseline:
            before = _run(
                f"clickhouse, columns at {args.baseline}",
                _with_columns(
                    _baseline_columns(args.baseline),
                    functools.partial(
                        verify_clickhouse, client, "bench", registry=d.registry, jobs=1
                    ),
                ),
                args.repeat,
            )
            before["baseline"] = args.baseline
            results.append(before)
        for jobs in sorted({1, args.jobs}):
            new = _run(
                f"clickhouse, columns, --jobs {jobs}",
                functools.partial(
                    verify_clickhouse, client, "bench", registry=d.registry, jobs=jobs
                ),
                args.repeat,
            )
            new["jobs"] = jobs
            new["speedup_wall"] = old["wall_s"] / new["wall_s"]
            new["speedup_cpu"] = old["cpu_s"] / new["cpu_s"]
            print(
                f"{'':<36} speed-up against the old path: {new['speedup_wall']:.1f}x wall, "
                f"{new['speedup_cpu']:.1f}x per CPU s"
            )
            if before is not None:
                new["vs_baseline_wall"] = before["wall_s"] / new["wall_s"]
                new["vs_baseline_cpu"] = before["cpu_s"] / new["cpu_s"]
                print(
                    f"{'':<36} against the columns at {args.baseline}: "
                    f"{new['vs_baseline_wall']:.2f}x wall, {new['vs_baseline_cpu']:.2f}x per CPU s"
                )
            results.append(new)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
