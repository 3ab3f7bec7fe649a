"""Verification of stored partition logs (ClickHouse rows): every leaf, chain and signed root."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from lineage import claims, hashing, merkle
from lineage.keys import KeyRegistry
from lineage.model import ChainEntry, Checkpoint
from lineage.verify import columns
from lineage.verify.checks import (
    Checker,
    ColumnCheck,
    Fail,
    chain_step,
    checkpoint_vkeys,
    fail,
    gc_paused,
    origin_partition,
    parse_vkeys,
)
from lineage.verify.report import Failure, FailureKind, Proven, Report, Trust, Where


def _stored_checkpoints(
    checkpoints: Iterable[Checkpoint], partitions: Iterable[int], checker: Checker
) -> dict[int, list[tuple[int, bytes, str]]]:
    """Verified (size, root, origin) per partition, ascending; rows must match their notes."""
    out: dict[int, dict[int, tuple[bytes, str]]] = {p: {} for p in partitions}
    for cp in checkpoints:
        if cp.partition not in out:
            continue
        where: Where = {"partition": cp.partition, "origin": cp.origin, "tree_size": cp.tree_size}
        try:
            signed = checker.open_checkpoint(cp.note)
        except Fail as exc:
            raise exc.at(where) from None
        if (signed.origin, signed.size, signed.root_hash) != (
            cp.origin,
            cp.tree_size,
            cp.root_hash,
        ):
            raise fail(
                FailureKind.CHECKPOINT_ROW_MISMATCH,
                "the stored checkpoint columns differ from its signed note",
                where,
                f"{signed.origin} size {signed.size} root {signed.root_hash.hex()}",
                f"{cp.origin} size {cp.tree_size} root {cp.root_hash.hex()}",
            )
        located = origin_partition(signed.origin)
        if located is None or located[1] != cp.partition:
            raise fail(
                FailureKind.CHECKPOINT_ORIGIN,
                "the checkpoint's origin names another partition",
                where,
                f"<base>/<topic>/{cp.partition}",
                signed.origin,
            )
        seen = out[cp.partition].get(cp.tree_size)
        if seen is not None and seen[0] != cp.root_hash:
            raise fail(
                FailureKind.CHECKPOINT_INCONSISTENT,
                "two signed checkpoints of one size with different roots (fork)",
                where,
                seen[0].hex(),
                cp.root_hash.hex(),
            )
        origins = {o for _, o in out[cp.partition].values()}
        if origins and signed.origin not in origins:
            raise fail(
                FailureKind.CHECKPOINT_ORIGIN,
                "checkpoints of two logs for one partition",
                where,
                sorted(origins)[0],
                signed.origin,
            )
        out[cp.partition][cp.tree_size] = (cp.root_hash, signed.origin)
    return {p: [(s, r, o) for s, (r, o) in sorted(v.items())] for p, v in out.items()}


def verify_entries(
    logs: Mapping[int, Iterable[ChainEntry] | columns.ColumnSource],
    checkpoints: Iterable[Checkpoint],
    *,
    registry: KeyRegistry,
    trusted_checkpoint_vkeys: Sequence[str] | None = None,
    workflow_id: str | None = None,
    check_columns: ColumnCheck | None = None,
    source: str = "entries",
    registry_source: str = "the registry given by the caller",
    independent: bool = True,
    jobs: int = 1,
) -> Report:
    """Verify stored partition logs: every leaf, every chain, every signed checkpoint root.

    ``logs`` maps each partition to *all* its entries in log order (a lazy iterable is fine),
    or to a ``columns.ColumnSource`` that fetches them as columns: those take the fast path
    (``lineage.verify.columns``, derived columns checked when fetched), on ``jobs`` worker
    processes when more than one. Checkpoints of partitions not in ``logs`` are ignored. Each partition's log is rebuilt from
    recomputed entry hashes and its root compared with every signed checkpoint; all workflow
    chains are checked link by link. Entries of ``workflow_id`` (all when None) are verified in
    full: event digest from the exact bytes, decoding, the seal, and ``check_columns`` (stored
    derived columns against the decoded event). Entries past the newest checkpoint are checked
    the same way but counted as ``unanchored``: no signature covers them yet.

    ``registry_source`` says where ``registry`` came from; ``independent=False`` (the operator's
    own registry) makes the verdict at best CONSISTENT_BUT_UNTRUSTED. Authorization decisions
    sealed by non-authorizer keys are listed in ``not_proven``, not failed: a stored log also
    holds the attacks the processor recorded as violations.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    children_started = _children_cpu()
    usage = columns.Usage()
    proven = Proven()
    report = Report(
        source,
        Trust(
            registry_source,
            "checkpoint keys named by the caller"
            if trusted_checkpoint_vkeys is not None
            else f"processor keys of {registry_source}",
            anchored=independent,
            untrusted="" if independent else "the operator's own registry",
        ),
        None,
        proven,
        expected_workflow=workflow_id,
    )
    checker_findings: list[str] = []
    unbound: list[str] = []
    try:
        vkeys = parse_vkeys(
            trusted_checkpoint_vkeys
            if trusted_checkpoint_vkeys is not None
            else checkpoint_vkeys(registry)
        )
        checker = Checker(registry, vkeys, proven, decisions_fail=False)
        checkpoints = list(checkpoints)
        signed = _stored_checkpoints(checkpoints, logs, checker)
        binds, unbound = claims.stored_bindings(checkpoints, logs)
        report.warnings += unbound
        found: list[str] = []
        sources = {p: s for p, s in logs.items() if callable(s)}
        if sources:
            notes: dict[int, list[tuple[int, str]]] = {p: [] for p in sources}
            for cp in checkpoints:
                if cp.partition in notes:
                    notes[cp.partition].append((cp.tree_size, cp.note))
            with gc_paused():  # the fetched columns are millions of acyclic objects
                for out in columns.outcomes(
                    sources,
                    signed,
                    {p: [n for _, n in sorted(v)] for p, v in notes.items()},
                    registry,
                    workflow_id,
                    jobs,
                    usage,
                ):
                    columns.merge(proven, out.proven)
                    found += out.unauthorized_decisions
                    if out.failure is not None:
                        raise Fail(out.failure)
        with gc_paused():
            for p, entries in logs.items():
                if callable(entries):
                    continue
                _verify_partition(
                    p, entries, signed[p], checker, workflow_id, check_columns, binds[p]
                )
                checker.seals.clear()
        checker_findings = found + checker.unauthorized_decisions
    except Fail as exc:
        report.failure = exc.failure
    except claims.ClaimFailure as exc:
        report.failure = Failure(
            FailureKind(exc.kind), str(exc), exc.where, exc.expected, exc.found
        )
    report.elapsed_s = time.perf_counter() - started
    report.cpu_s = time.process_time() - cpu_started + _children_cpu() - children_started
    report.jobs = usage.jobs
    if report.failure is None:
        report.claims += [
            f"{proven.log_entries} stored entries rebuild every signed checkpoint root of "
            f"{len(proven.logs)} partition logs ({', '.join(proven.complete_as_of) or 'none'})",
            f"every chain is linked from genesis; {proven.events} entries"
            + (f" of workflow {workflow_id}" if workflow_id else "")
            + " are checked against their exact bytes, seals and derived columns",
        ]
        if not unbound:
            report.claims.append(
                "every chain sits in the partition its workflow id maps to under the partition "
                "count the processor signed"
            )
    if unbound:
        report.not_proven.append(
            "that every chain sits in its workflow's own partition: "
            f"{len(unbound)} partition log(s) predate the signed partition count"
        )
    if not independent:
        report.not_proven.append(
            f"who signed: the keys are {registry_source}, which the store's operator controls; "
            "name keys you trust with --registry or LINEAGE_TRUST_FILE"
        )
    report.not_proven += checker_findings
    report.not_proven.append(
        "rows deleted together with the checkpoints that covered them (rollback): no trusted "
        "checkpoint or witness outside the store was checked"
    )
    if proven.unanchored:
        report.warnings.append(
            f"{proven.unanchored} entries after the newest checkpoint are "
            "sealed and chained but not yet covered by a signed checkpoint"
        )
    return report


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the worker processes, once joined)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _verify_partition(
    p: int,
    entries: Iterable[ChainEntry],
    signed: list[tuple[int, bytes, str]],
    checker: Checker,
    workflow_id: str | None,
    check_columns: ColumnCheck | None,
    bind: Callable[[str], None] = lambda _wf: None,
) -> None:
    heads: dict[str, tuple[int, bytes]] = {}
    last_kind: dict[str, str] = {}
    policies: set[bytes] = set()
    proven = checker.proven
    cr = merkle.CompactRange()
    pending = iter(signed)
    nxt = next(pending, None)
    genesis = hashing.genesis_hash
    rows = iter(entries)
    following = next(rows, None)
    i = -1
    while following is not None:
        e, following = following, next(rows, None)
        i += 1
        wf = e.workflow_id
        if following is not None and following.log_index == e.log_index:
            raise fail(
                FailureKind.LOG_INDEX,
                "two stored entries claim one log position",
                {"partition": p, "log_index": e.log_index},
                f"one entry at log index {e.log_index}",
                "two or more",
            )
        try:
            if e.log_index != i or e.source_partition != p:
                raise fail(
                    FailureKind.LOG_INDEX,
                    "log entries are missing, duplicated or out of place",
                    None,
                    f"partition {p} log index {i}",
                    f"partition {e.source_partition} log index {e.log_index}",
                )
            if workflow_id is None or wf == workflow_id:
                digest, record = checker.event(e.event_bytes, e.event_digest)
                checker.bind(record, e.event_id, wf, p)
                if check_columns is not None:
                    mismatch = check_columns(e, record)
                    if mismatch is not None:
                        column, expected, found = mismatch
                        raise fail(
                            FailureKind.COLUMN_MISMATCH,
                            f"stored column {column} differs from the signed event bytes",
                            {"column": column},
                            expected,
                            found,
                        )
                checker.seal(record, digest, e.seal_bytes, e.seal_index, e.seal_path)
                checker.note_event(record)
                policies.add(e.policy_digest)
                last_kind[wf] = record["kind"]
            if wf not in heads:
                bind(wf)
            seq, head = heads.get(wf) or (0, genesis(wf))
            entry = chain_step(
                seq, head, e.chain_seq, e.prev_hash, e.event_digest, e.policy_digest, e.entry_hash
            )
        except Fail as exc:
            raise exc.at(
                {
                    "partition": p,
                    "log_index": e.log_index,
                    "workflow_id": wf,
                    "chain_seq": e.chain_seq,
                    "event_id": e.event_id,
                }
            ) from None
        heads[wf] = (seq + 1, entry)
        cr.append_hash(merkle.leaf_hash(entry))
        while nxt is not None and nxt[0] == cr.size:
            size, root, origin = nxt
            if cr.root() != root:
                raise fail(
                    FailureKind.LOG_ROOT_MISMATCH,
                    "the stored log does not reproduce the signed checkpoint",
                    {"partition": p, "origin": origin, "tree_size": size},
                    root.hex(),
                    cr.root().hex(),
                )
            proven.checkpoints.append(f"{origin} size {size} root {root.hex()}")
            proven.note_log(origin, size, root)
            nxt = next(pending, None)
    if nxt is not None:
        size, root, origin = nxt
        raise fail(
            FailureKind.LOG_TRUNCATED,
            "a signed checkpoint covers entries the store no longer holds",
            {"partition": p, "origin": origin, "tree_size": size},
            f"at least {size} entries",
            f"{cr.size} entries",
        )
    proven.log_entries += cr.size
    proven.policy_digests.update(d.hex() for d in policies)
    if signed:
        proven.unanchored += cr.size - signed[-1][0]
        proven.complete_as_of.append(f"{signed[-1][2]} size {signed[-1][0]}")
    else:
        proven.unanchored += cr.size
    for wf, kind in last_kind.items():
        if kind == "WORKFLOW_COMPLETED":
            proven.completed_workflows.add(wf)
