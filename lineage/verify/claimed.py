"""Bundle check stage for what signed evidence claims beyond the chain (``lineage.claims``).

Partition binding (PARTITION_BINDING), the workflow's findings against the signed findings log
(FINDINGS_MISMATCH) and the re-run of every recorded decision (POLICY_DECISION_MISMATCH,
POLICY_SET_MISSING). Runs after the chain, seals and logs verified: it reads checkpoint notes
whose signatures were checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lineage import claims
from lineage.verify.checks import Fail
from lineage.verify.report import Failure, FailureKind

if TYPE_CHECKING:
    from lineage.verify.bundle import BundleRun


def _failure(exc: claims.ClaimFailure) -> Fail:
    return Fail(Failure(FailureKind(exc.kind), str(exc), exc.where, exc.expected, exc.found))


def check_claims(run: BundleRun) -> None:
    """Partition binding, findings and decision re-runs; fills the report's findings fields."""
    wf = run.bundle.workflow_id
    try:
        claimed = claims.check_bundle(run.bundle, run.doc)
    except claims.ClaimFailure as exc:
        raise _failure(exc) from None
    report, proven = run.report, run.proven
    report.warnings += claimed.warnings
    proven.findings = claimed.findings_json()
    proven.decisions_rerun = len(claimed.replayed)
    cause = claimed.contained_by
    proven.contained_by = cause.violation_id if cause is not None else None
    if claimed.binding_signed:
        report.claims.append(
            f"the chain of {wf} sits in the partition its id maps to under the partition count "
            "the processor signed into its checkpoints"
        )
    else:
        report.not_proven.append(
            f"that the chain of {wf} sits in its own partition: the checkpoints predate the "
            "signed partition count"
        )
    if claimed.findings_committed:
        contained = f"; contained by {proven.contained_by}" if proven.contained_by else ""
        report.claims.append(
            f"the violations recorded for {wf} are exactly these {len(proven.findings)}, as "
            f"the processor's signed findings log of partition {claimed.findings_partition} "
            f"(size {claimed.findings_size}) holds them{contained}"
        )
    else:
        report.not_proven.append(
            f"violations and containments recorded for {wf}: the checkpoints commit to no "
            "findings log (older format)"
        )
    rerun, total = len(claimed.replayed), claimed.decisions
    if rerun:
        report.claims.append(
            f"{rerun} authorization decision(s) re-run under the policy set they name give the "
            "recorded decision, policy and determining policies"
        )
    if total > rerun:
        report.not_proven.append(
            f"that {total - rerun} authorization decision(s) follow from their policy: they "
            "were recorded before requests were kept, so the digest names which policy applied"
        )
