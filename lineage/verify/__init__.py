"""Offline verification of evidence bundles and stored chain entries, trusting only named keys.

Everything is recomputed from exact bytes: event digests, seal signatures and seal paths, entry
hashes and chain links, log inclusion, checkpoint signatures and consistency. The first thing that
fails is reported with where it is and what was expected versus found (docs/evidence-bundle.md).

Trust is fail-closed: a report is VERIFIED (exit 0) only when every key it rests on was named by
the caller. Keys carried by the evidence, or the operator's own registry, give at best
CONSISTENT_BUT_UNTRUSTED (exit 3).

Modules: ``report`` (failure kinds, verdicts, the report), ``checks`` (per-item checks),
``bundle`` (bundle check stages), ``claimed`` (stage: partition binding, findings, decisions
re-run), ``witnessing`` (stage: witness cosignatures, with witness keys), ``stored`` (stored
partition logs).
"""

from lineage.merkle import PathMemo
from lineage.verify.bundle import STAGES, BundleRun, Stage, verify_bundle, verify_bundle_bytes
from lineage.verify.checks import (
    MAX_CACHED_SEALS,
    MAX_TIME_US,
    ColumnCheck,
    checkpoint_vkeys,
    emitter_subject,
)
from lineage.verify.report import (
    EXIT_INTEGRITY,
    EXIT_OK,
    EXIT_UNTRUSTED,
    EXIT_UNUSABLE,
    Failure,
    FailureKind,
    Proven,
    Report,
    Trust,
    Verdict,
    Where,
)
from lineage.verify.stored import verify_entries

__all__ = [
    "EXIT_INTEGRITY",
    "EXIT_OK",
    "EXIT_UNTRUSTED",
    "EXIT_UNUSABLE",
    "MAX_CACHED_SEALS",
    "MAX_TIME_US",
    "STAGES",
    "BundleRun",
    "ColumnCheck",
    "Failure",
    "FailureKind",
    "PathMemo",
    "Proven",
    "Report",
    "Stage",
    "Trust",
    "Verdict",
    "Where",
    "checkpoint_vkeys",
    "emitter_subject",
    "verify_bundle",
    "verify_bundle_bytes",
    "verify_entries",
]
