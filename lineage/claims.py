"""Checks of what signed evidence claims beyond the chain itself, run after the chain verified.

Today: the partition binding (lineage.binding), the workflow's findings (lineage.findings) and the
re-run of every authorization decision (lineage.policy_replay). Each raises ``ClaimFailure`` naming
a ``lineage.verify.FailureKind`` value, and returns warnings for evidence too old to carry it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lineage import binding, bundle_v2, findings, note
from lineage.bundle import FORMAT, Bundle
from lineage.errors import CheckFailure
from lineage.findings import FindingsError
from lineage.model import Checkpoint, Severity, Violation, ViolationType
from lineage.policy import digest_hex
from lineage.policy_replay import Replayed, ReplayError, load_policy_sets, replay_bundle


class ClaimFailure(CheckFailure):
    """A claim failed; ``kind`` is the name of the verifier's failure kind."""


PARTITION_BINDING = "PARTITION_BINDING"


def _binding_failure(exc: binding.BindingError) -> ClaimFailure:
    return ClaimFailure(
        PARTITION_BINDING, str(exc), where=exc.where, expected=exc.expected, found=exc.found
    )


def check_bundle_binding(
    workflow_id: str, logs: Iterable[tuple[int, Sequence[str]]], entry_partitions: Iterable[int]
) -> list[str]:
    """The partition binding of a verified bundle: every log holding entries must be the workflow's.

    ``logs`` are (partition, checkpoint notes) of the bundle, whose signatures were verified.
    """
    used = set(entry_partitions)
    try:
        return binding.bundle_bindings(((p, notes) for p, notes in logs if p in used), workflow_id)
    except binding.BindingError as exc:
        raise _binding_failure(exc) from None


def stored_binding(partition: int, notes: Sequence[str]) -> tuple[Callable[[str], None], list[str]]:
    """For a stored partition log: a check to call once per workflow, and warnings.

    ``notes`` are the partition's verified checkpoint notes, oldest first.
    """
    try:
        parsed = [note.parse_checkpoint(binding.note_text(n)) for n in notes]
        bound = binding.log_binding(partition, parsed)
    except (binding.BindingError, note.NoteError) as exc:
        if isinstance(exc, binding.BindingError):
            raise _binding_failure(exc) from None
        raise ClaimFailure(PARTITION_BINDING, str(exc), where={"partition": partition}) from None

    def check(workflow_id: str) -> None:
        try:
            binding.check_workflow(workflow_id, bound)
        except binding.BindingError as exc:
            raise _binding_failure(exc) from None

    warnings = (
        [f"{binding.NOT_SIGNED}: partition {partition}'s checkpoints name no count"]
        if bound.partitions is None and notes
        else []
    )
    return check, warnings


def stored_bindings(
    checkpoints: Iterable[Checkpoint], partitions: Iterable[int]
) -> tuple[dict[int, Callable[[str], None]], list[str]]:
    """Per partition, the workflow check of its verified stored checkpoints; and warnings."""
    notes: dict[int, list[tuple[int, str]]] = {p: [] for p in partitions}
    for cp in checkpoints:
        if cp.partition in notes:
            notes[cp.partition].append((cp.tree_size, cp.note))
    checks: dict[int, Callable[[str], None]] = {}
    warnings: list[str] = []
    for p, items in notes.items():
        checks[p], warned = stored_binding(p, [n for _, n in sorted(items)])
        warnings += warned
    return checks, warnings


@dataclass(slots=True)
class ClaimsResult:
    """What the claim checks established beyond the chain."""

    warnings: list[str] = field(default_factory=list)
    findings: list[Violation] = field(default_factory=list)
    findings_committed: bool = False
    findings_partition: int = 0
    findings_size: int = 0
    """Size of the signed findings log the findings were checked against."""
    binding_signed: bool = False
    """True when every log holding the workflow's entries signs the partition count."""
    decisions: int = 0
    """Authorization decisions in the bundle (re-run or not)."""
    replayed: list[Replayed] = field(default_factory=list)
    critical_contains: bool | None = None
    """The processor's policy set's ``critical_contains``; None when the bundle lacks the set."""

    def findings_json(self) -> list[dict[str, Any]]:
        """The workflow's findings as the report lists them."""
        return [
            {
                "violation_id": v.violation_id,
                "type": v.violation_type.value,
                "severity": v.severity.value,
                "rule": v.rule,
                "event_id": v.event_id,
                "explanation": v.explanation,
            }
            for v in self.findings
        ]

    @property
    def contained_by(self) -> Violation | None:
        """The finding that contained the workflow, if it was contained.

        The processor contains a workflow at its first CRITICAL finding when its policy set says
        ``critical_contains``; when the bundle does not carry that set, a CONTAINED_WORKFLOW
        finding shows the containment instead.
        """
        critical = [v for v in self.findings if v.severity is Severity.CRITICAL]
        marked = any(v.violation_type is ViolationType.CONTAINED_WORKFLOW for v in self.findings)
        contains = self.critical_contains if self.critical_contains is not None else marked
        return critical[0] if contains and critical else None


def _critical_contains(parsed: Bundle, member: object) -> bool | None:
    """``critical_contains`` of the policy set the processor applied to the last entry."""
    if member is None:
        return None
    try:
        sets = load_policy_sets(member)
    except ReplayError as exc:
        raise _claim(exc) from None
    policy = sets.get(digest_hex(parsed.entries[-1].policy_digest))
    return None if policy is None else policy.critical_contains


def _newest_checkpoint(parsed: Bundle, partition: int) -> note.Checkpoint | None:
    for section in parsed.logs:
        if section.partition == partition and section.checkpoints:
            return note.parse_checkpoint(binding.note_text(section.checkpoints[-1]))
    return None


def _claim(exc: FindingsError | ReplayError) -> ClaimFailure:
    return ClaimFailure(exc.kind, str(exc), where=exc.where, expected=exc.expected, found=exc.found)


def check_bundle(parsed: Bundle, doc: Mapping[str, Any]) -> ClaimsResult:
    """Every claim check of a bundle whose chain, seals and logs already verified.

    Partition binding, findings (against the newest checkpoint of the tail's partition) and
    the re-run of every decision that records its request. Raises ClaimFailure.
    """
    result = ClaimsResult()
    if doc.get("format") == FORMAT:
        absent = [m for m in ("policies", "findings") if m not in doc]
        if absent:
            raise ClaimFailure(
                "UNUSABLE_INPUT",
                f"bundle.{absent[0]}: expected a value in a {FORMAT} bundle, found none",
            )
    unbound = check_bundle_binding(
        parsed.workflow_id,
        ((s.partition, s.checkpoints) for s in parsed.logs),
        (e.partition for e in parsed.entries),
    )
    result.warnings += unbound
    result.binding_signed = not unbound
    partition = parsed.tail.partition
    try:
        newest = _newest_checkpoint(parsed, partition)
        signed = findings.signed_findings(newest) if newest is not None else None
        result.findings = findings.verify_member(
            doc.get("findings"), parsed.workflow_id, partition, signed
        )
    except FindingsError as exc:
        raise _claim(exc) from None
    except note.NoteError as exc:
        raise ClaimFailure(findings.FINDINGS_MISMATCH, str(exc)) from None
    result.findings_committed = signed is not None
    result.findings_partition = partition
    result.findings_size = signed[0] if signed is not None else 0
    if signed is None:
        result.warnings.append(
            f"{findings.NOT_COMMITTED}: the checkpoints name no findings log, so findings "
            "that were raised cannot be shown or ruled out"
        )
    result.critical_contains = _critical_contains(parsed, doc.get("policies"))
    decisions = bundle_v2.decision_records(e.event for e in parsed.entries)
    result.decisions = len(decisions)
    try:
        replayed = replay_bundle(decisions, doc.get("policies"))
    except ReplayError as exc:
        raise _claim(exc) from None
    result.replayed = replayed.replayed
    result.warnings += replayed.warnings
    return result
