"""Bundle check stage for witness cosignatures (``lineage.witnessed``, docs/witness.md).

Runs only when the caller gave witness keys: ``verify_bundle(..., options={WITNESS_POLICY:
WitnessPolicy, WITNESS_REGISTRY: KeyRegistry | None})``. The newest checkpoint of every log must
carry cosignatures of the required number of trusted witnesses, dated inside the processor key's
validity window (WITNESS_COSIGNATURES, KEY_EXPIRED).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lineage.verify.checks import Fail

if TYPE_CHECKING:
    from lineage.verify.bundle import BundleRun

WITNESS_POLICY = "witness_policy"
"""``BundleRun.options`` key: the auditor's ``lineage.witnessed.WitnessPolicy``."""
WITNESS_REGISTRY = "witness_registry"
"""``BundleRun.options`` key: the registry giving processor key windows (None: not checked)."""


def check_witnesses(run: BundleRun) -> None:
    """Witness quorum and key windows on the bundle's logs; reports witnesses and freshness."""
    policy = run.options.get(WITNESS_POLICY)
    if policy is None:
        return
    from lineage import witnessed

    try:
        found = witnessed.check_bundle_logs(
            run.bundle.logs, policy, run.options.get(WITNESS_REGISTRY)
        )
    except witnessed.WitnessCheckFailed as exc:
        raise Fail(exc.failure) from None
    report = run.report
    report.witness = found.to_json()
    cosigned = sorted({c["witness"] for log in found.logs for c in log["cosignatures"]})
    report.trust.witnesses += cosigned
    report.warnings += found.notes
    newest = found.newest
    logs = ", ".join(f"{log['origin']} size {log['size']}" for log in found.logs)
    report.claims.append(
        f"the newest checkpoint of every log ({logs}) is cosigned by at least {found.required} "
        f"of the witnesses named ({', '.join(found.witnesses)}): they saw it consistent with "
        "every earlier checkpoint they cosigned"
    )
    if newest is not None:
        report.claims.append(
            f"the processor's log was shown to a witness as of {newest['time']} "
            f"({found.age_s} s before verification); entries chained later are not covered"
        )
    if WITNESS_REGISTRY in run.options and run.options[WITNESS_REGISTRY] is not None:
        report.claims.append(
            "the processor key was inside its validity window when the witnesses cosigned"
        )
    else:
        report.not_proven.append(
            "that the processor key was inside its validity window: no registry gave its window"
        )
