"""Evidence bundle verification as a list of check stages over one parsed bundle."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lineage import hashing, merkle, note
from lineage.bundle import Bundle, BundleEntry, BundleFormatError, LogSection, loads_bundle
from lineage.bundle import parse_bundle as _parse
from lineage.keys import KeyRegistry
from lineage.verify.checks import (
    Checker,
    Fail,
    chain_step,
    checkpoint_vkeys,
    fail,
    gc_paused,
    origin_partition,
    parse_vkeys,
)
from lineage.verify.claimed import check_claims
from lineage.verify.report import Failure, FailureKind, Proven, Report, Trust, Where
from lineage.verify.witnessing import check_witnesses

BUNDLE_KEYS = "keys inside the bundle (information, not trust)"
NO_KEYS = "none (no keys were read: the input is unusable)"


@dataclass(slots=True)
class VerifiedLog:
    """A log section whose checkpoints verified: sizes ascending, roots and path memos by size."""

    partition: int
    origin: str
    topic: str
    sizes: list[int]
    roots: dict[int, bytes]
    memos: dict[int, merkle.PathMemo]


@dataclass(slots=True)
class BundleRun:
    """What the stages of one bundle verification share; each stage reads and extends it."""

    bundle: Bundle
    checker: Checker
    report: Report
    options: Mapping[str, Any] = field(default_factory=dict)
    """Inputs for stages beyond the core ones (e.g. witness keys), from ``verify_bundle``."""
    doc: Mapping[str, Any] = field(default_factory=dict)
    """The bundle document as given: members the parsed ``bundle`` does not model (v2's
    ``policies`` and ``findings``) are read from here by their stages."""
    logs: dict[int, VerifiedLog] = field(default_factory=dict)
    head: bytes = b""
    last_record: dict[str, Any] = field(default_factory=dict)

    @property
    def proven(self) -> Proven:
        """The report's ``proven`` section."""
        return self.report.proven


Stage = Callable[[BundleRun], None]
"""One check stage: raises ``Fail`` on the first failure, appends to the report otherwise."""


def _trust(
    registry: KeyRegistry | None,
    vkeys: Sequence[str] | None,
    source: str,
    own: str = BUNDLE_KEYS,
) -> Trust:
    """Where the keys come from; ``own`` describes the bundle's own keys (NO_KEYS until the
    bundle parsed, since none were read from it)."""
    seals = source if registry is not None else own
    if vkeys is not None:
        cps = "checkpoint keys named by the caller"
    elif registry is not None:
        cps = f"processor keys of {source}"
    else:
        cps = own
    anchored = registry is not None
    return Trust(seals, cps, anchored, untrusted="" if anchored else "the bundle's own keys")


def verify_bundle(
    bundle: Mapping[str, Any],
    *,
    registry: KeyRegistry | None = None,
    trusted_checkpoint_vkeys: Sequence[str] | None = None,
    workflow_id: str | None = None,
    registry_source: str = "the registry given by the caller",
    size_bytes: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Report:
    """Verify an evidence bundle document (as returned by ``read_bundle``); never raises.

    ``registry`` is the key registry the caller trusts for seal keys and ``trusted_checkpoint_vkeys``
    the processor verifier keys they trust; without the latter, the registry's unrevoked
    processor keys are used, never the bundle's. Without a registry the bundle's own keys are
    used to check consistency only: the verdict is at best CONSISTENT_BUT_UNTRUSTED (exit 3).
    ``workflow_id``, when given, is the workflow the caller expects (UNEXPECTED_WORKFLOW if not).
    ``options`` reaches every stage as ``BundleRun.options`` (inputs of added checks).
    """
    started = time.perf_counter()
    report = Report(
        "bundle",
        _trust(registry, trusted_checkpoint_vkeys, registry_source, NO_KEYS),
        None,
        Proven(),
        expected_workflow=workflow_id,
        size_bytes=size_bytes,
    )
    try:
        try:
            parsed = _parse(bundle)
        except BundleFormatError as exc:
            raise fail(FailureKind.UNUSABLE_INPUT, str(exc)) from None
        report.trust = _trust(registry, trusted_checkpoint_vkeys, registry_source)
        if registry is not None:
            keys = registry
            vkeys = parse_vkeys(
                trusted_checkpoint_vkeys
                if trusted_checkpoint_vkeys is not None
                else checkpoint_vkeys(registry)
            )
        else:
            keys = parsed.keys
            vkeys = parse_vkeys(
                trusted_checkpoint_vkeys
                if trusted_checkpoint_vkeys is not None
                else [note.verifier_key(n, k) for n, k in parsed.checkpoint_keys]
            )
        report.proven.workflows.add(parsed.workflow_id)
        if workflow_id is not None and parsed.workflow_id != workflow_id:
            raise fail(
                FailureKind.UNEXPECTED_WORKFLOW,
                "the bundle proves another workflow than the one expected",
                {"workflow_id": parsed.workflow_id},
                workflow_id,
                parsed.workflow_id,
            )
        run = BundleRun(
            parsed, Checker(keys, vkeys, report.proven), report, dict(options or {}), bundle
        )
        with gc_paused():
            for stage in STAGES:
                stage(run)
    except Fail as exc:
        report.failure = exc.failure
    except RecursionError:
        report.failure = Failure(
            FailureKind.UNUSABLE_INPUT, "the bundle nests deeper than a verifier accepts", {}
        )
    if report.failure is not None:
        report.claims.clear()
    _describe(report)
    report.elapsed_s = time.perf_counter() - started
    return report


def verify_bundle_bytes(raw: bytes | str, **options: Any) -> Report:
    """Parse bundle JSON text and verify it (options as for ``verify_bundle``); never raises."""
    size = len(raw)
    try:
        doc = loads_bundle(raw)
    except BundleFormatError as exc:
        report = Report(
            "bundle",
            _trust(
                options.get("registry"),
                options.get("trusted_checkpoint_vkeys"),
                options.get("registry_source", "the registry given by the caller"),
                NO_KEYS,
            ),
            Failure(FailureKind.UNUSABLE_INPUT, str(exc), {}),
            Proven(),
            expected_workflow=options.get("workflow_id"),
            size_bytes=size,
        )
        _describe(report)
        return report
    return verify_bundle(doc, size_bytes=size, **options)


# -- stages ---------------------------------------------------------------------------------


def _verify_log(section: LogSection, run: BundleRun) -> VerifiedLog:
    located = origin_partition(section.origin)
    if located is None or located[1] != section.partition:
        raise fail(
            FailureKind.CHECKPOINT_ORIGIN,
            "the log origin names another partition",
            None,
            f"<base>/<topic>/{section.partition}",
            section.origin,
        )
    log = VerifiedLog(section.partition, section.origin, located[0], [], {}, {})
    for i, text in enumerate(section.checkpoints):
        try:
            cp = run.checker.open_checkpoint(text)
        except Fail as exc:
            raise exc.at({"checkpoint": i}) from None
        at: Where = {"tree_size": cp.size}
        if cp.origin != section.origin:
            raise fail(
                FailureKind.CHECKPOINT_ORIGIN,
                "a checkpoint of another log",
                at,
                section.origin,
                cp.origin,
            )
        if log.sizes and cp.size <= log.sizes[-1]:
            raise fail(
                FailureKind.UNUSABLE_INPUT,
                "checkpoints must be in ascending size",
                at,
                f"size > {log.sizes[-1]}",
                cp.size,
            )
        if log.sizes:
            proof = section.consistency[i - 1]
            old = log.sizes[-1]
            if (proof.old_size, proof.new_size) != (old, cp.size) or not merkle.verify_consistency(
                old, cp.size, log.roots[old], cp.root_hash, proof.path
            ):
                raise fail(
                    FailureKind.CHECKPOINT_INCONSISTENT,
                    "the log at this checkpoint does not extend the earlier one (fork or "
                    "rewritten history)",
                    at,
                    f"an append-only extension of size {old} root {log.roots[old].hex()}",
                    f"root {cp.root_hash.hex()} with no valid consistency proof",
                )
        log.sizes.append(cp.size)
        log.roots[cp.size] = cp.root_hash
        log.memos[cp.size] = merkle.PathMemo(cp.size, cp.root_hash)
        run.proven.checkpoints.append(f"{cp.origin} size {cp.size} root {cp.root_hash.hex()}")
        run.proven.note_log(cp.origin, cp.size, cp.root_hash)
    return log


def check_logs(run: BundleRun) -> None:
    """Every log section: origin, checkpoint signatures with trusted keys, consistency."""
    for section in run.bundle.logs:
        try:
            run.logs[section.partition] = _verify_log(section, run)
        except Fail as exc:
            raise exc.at({"partition": section.partition, "origin": section.origin}) from None


def _check_inclusion(e: BundleEntry, entry_hash: bytes, log: VerifiedLog) -> None:
    size = e.inclusion.tree_size
    memo = log.memos.get(size)
    if memo is None:
        raise fail(
            FailureKind.MISSING_CHECKPOINT,
            "the inclusion proof names a checkpoint the bundle does not hold",
            None,
            f"one of sizes {log.sizes}",
            size,
        )
    if size <= e.log_index:
        raise fail(
            FailureKind.STALE_CHECKPOINT,
            "the checkpoint predates the entry it should cover",
            None,
            f"tree size > {e.log_index}",
            f"tree size {size}",
        )
    if not memo.verify(merkle.leaf_hash(entry_hash), e.log_index, e.inclusion.path):
        raise fail(
            FailureKind.LOG_INCLUSION,
            "the entry is not in the signed partition log at this index",
            None,
            f"inclusion at index {e.log_index} under root {memo.root.hex()} (size {size})",
            f"path of {len(e.inclusion.path)} nodes that does not lead there",
        )


def check_entries(run: BundleRun) -> None:
    """Every entry: event bytes, binding, seal and key, chain link, log inclusion."""
    parsed, checker = run.bundle, run.checker
    wf = parsed.workflow_id
    head: bytes = hashing.genesis_hash(wf)
    record: dict[str, Any] = {}
    partition = parsed.entries[0].partition
    for k, e in enumerate(parsed.entries):
        try:
            if e.partition != partition:
                raise fail(
                    FailureKind.PARTITION_MISMATCH,
                    "a workflow lives in one partition; this entry names another",
                    None,
                    partition,
                    e.partition,
                )
            log = run.logs.get(e.partition)
            if log is None:
                raise fail(
                    FailureKind.MISSING_CHECKPOINT,
                    "the bundle has no log for the entry's partition",
                    None,
                    f"a log for partition {e.partition}",
                    "none",
                )
            digest, record = checker.event(e.event, e.event_digest)
            checker.bind(record, e.event_id, wf, e.partition)
            if record["topic"] != log.topic:
                raise fail(
                    FailureKind.PARTITION_MISMATCH,
                    "the event was written to another topic than its log's",
                    None,
                    log.topic,
                    record["topic"],
                )
            seal = e.seal
            checker.seal(
                record,
                digest,
                seal.record if seal else b"",
                seal.index if seal else 0,
                seal.path if seal else (),
            )
            head = chain_step(
                k, head, e.chain_seq, e.prev_hash, digest, e.policy_digest, e.entry_hash
            )
            _check_inclusion(e, head, log)
        except Fail as exc:
            raise exc.at({"entry": k, "chain_seq": e.chain_seq, "event_id": e.event_id}) from None
        checker.note_event(record)
        run.proven.policy_digests.add(e.policy_digest.hex())
    run.head = head
    run.last_record = record


def check_counts(run: BundleRun) -> None:
    """The stated policy digests and entry count match the entries."""
    parsed = run.bundle
    wf = parsed.workflow_id
    used = list(dict.fromkeys(e.policy_digest.hex() for e in parsed.entries))
    stated = [d.hex() for d in parsed.policy_digests]
    if stated != used:
        raise fail(
            FailureKind.POLICY_DIGESTS,
            "policy_digests is not the entries' distinct policy digests in first-use order",
            {"workflow_id": wf},
            used,
            stated,
        )
    if parsed.entry_count != len(parsed.entries):
        raise fail(
            FailureKind.CHAIN_TRUNCATED,
            "the bundle holds fewer or more entries than it was exported with",
            {"workflow_id": wf},
            f"{parsed.entry_count} entries",
            f"{len(parsed.entries)} entries",
        )


def check_tail(run: BundleRun) -> None:
    """No leaf of the signed log after the last entry, up to the newest checkpoint, extends it."""
    parsed, last_hash = run.bundle, run.head
    tail = parsed.tail
    last = parsed.entries[-1]
    where: Where = {
        "partition": tail.partition,
        "tree_size": tail.tree_size,
        "log_index": tail.log_index,
    }
    log = run.logs[last.partition]
    newest = log.sizes[-1]
    if (tail.partition, tail.log_index, tail.tree_size) != (last.partition, last.log_index, newest):
        raise fail(
            FailureKind.TAIL_PROOF_MISMATCH,
            "the tail proof does not start at the last "
            "entry or does not reach the newest checkpoint",
            where,
            f"partition {last.partition} log index {last.log_index} to size {newest}",
            f"partition {tail.partition} log index {tail.log_index} to size {tail.tree_size}",
        )
    cr = merkle.CompactRange.from_bytes(tail.log_index.to_bytes(8, "big") + b"".join(tail.prefix))
    cr.append(last_hash)
    successor: tuple[int, int] | None = None
    for j, rec in enumerate(tail.following):
        prev, _, seq, _ = hashing.split_leaf_record(rec)
        if successor is None and prev == last_hash:
            successor = (tail.log_index + 1 + j, seq)
        cr.append(hashing.entry_hash_of_record(rec))
    if cr.size != tail.tree_size or cr.root() != log.roots[tail.tree_size]:
        raise fail(
            FailureKind.TAIL_PROOF_MISMATCH,
            "the log after the last entry does not reproduce the signed checkpoint",
            where,
            f"size {tail.tree_size} root {log.roots[tail.tree_size].hex()}",
            f"size {cr.size} root {cr.root().hex()}",
        )
    if successor is not None:
        raise fail(
            FailureKind.CHAIN_TRUNCATED,
            "the signed log holds a later entry of this workflow that the bundle leaves out",
            {"partition": tail.partition, "log_index": successor[0]},
            f"no entry after chain_seq {last.chain_seq}",
            f"chain_seq {successor[1]} at log index {successor[0]}",
        )
    run.proven.complete_as_of.append(f"{log.origin} size {tail.tree_size}")
    if run.last_record.get("kind") == "WORKFLOW_COMPLETED":
        run.proven.completed_workflows.add(parsed.workflow_id)


STAGES: list[Stage] = [
    check_logs,
    check_entries,
    check_counts,
    check_tail,
    check_claims,
    check_witnesses,
]
"""The bundle check stages in order.

A new check is one module holding ``def check_x(run: BundleRun) -> None`` and one line adding it
here. It raises ``Fail`` (``checks.fail(kind, …)``) on its first failure, and otherwise appends
what it established to ``run.report.claims`` / ``run.report.trust.witnesses`` and what it could
not establish to ``run.report.not_proven``; its inputs come from ``run.options``.
"""


def _describe(report: Report) -> None:
    """Fill ``claims`` and ``not_proven`` from what the stages established."""
    p = report.proven
    wf = ", ".join(sorted(p.workflows)) or "-"
    if report.failure is not None and report.failure.kind is FailureKind.UNUSABLE_INPUT:
        return
    if report.failure is None:
        core = [
            f"workflow {wf}: {p.events} events, byte for byte, each sealed by an emitter key "
            "valid at its event time (authorization decisions by authorizer keys)",
            f"they are the complete chain of {wf} from its genesis, in order, "
            f"as of {', '.join(p.complete_as_of)}",
            "every entry is in the processor's signed, append-only partition log",
        ]
        if p.completed_workflows:
            core.append(f"{wf} ended with WORKFLOW_COMPLETED")
        report.claims[:0] = core
    if not report.trust.anchored:
        report.not_proven.append(
            f"who signed: seal keys are {report.trust.seal_keys}; pass --registry "
            "(or set LINEAGE_TRUST_FILE) with keys you trust"
        )
    if not report.trust.witnesses:
        report.not_proven += [
            "entries chained after the newest checkpoint in the bundle (freshness), and that the "
            "processor showed everyone the same log: no witness cosignature was checked",
            "that the processor key was inside its validity window when it signed: checkpoints "
            "carry no time (a witness cosignature's time will be used)",
        ]
