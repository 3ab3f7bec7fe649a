"""Admission check: an event is chained only in its workflow's own partition (one workflow, one chain)."""

from __future__ import annotations

from lineage.model import ExecutionEvent, QuarantineReason, ViolationType
from lineage.partitioning import workflow_partition

RULE = "partition-binding"
VIOLATION = ViolationType.DUPLICATE_CONFLICT
"""A misplaced event would start a second chain of its workflow: recorded as equivocation (CRITICAL).

A dedicated violation type would change schemas/violation.avsc, and so the violation record's
fingerprint; the rule name ``partition-binding`` tells the two apart instead.
"""
REASON = QuarantineReason.WRONG_PARTITION


def misplaced(event: ExecutionEvent, partition: int, partitions: int | None) -> str | None:
    """Why ``event`` may not be chained in ``partition``, or None when it may.

    ``partitions`` is the input topic's partition count, signed into every checkpoint; None (no
    count configured) admits everything, as before the binding existed.
    """
    if partitions is None:
        return None
    try:
        home = workflow_partition(event.workflow_id, partitions)
    except UnicodeEncodeError:
        return f"workflow id {event.workflow_id[:80]!r} is not UTF-8 text, so it has no partition"
    if home == partition:
        return None
    return (
        f"workflow {event.workflow_id} belongs in partition {home} of {partitions} "
        f"(murmur2 of its id), found in partition {partition}: a second chain is refused"
    )
