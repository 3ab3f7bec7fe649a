"""Admission check: an event is chained only in its workflow's own partition (one workflow, one chain)."""

from __future__ import annotations

from functools import lru_cache

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
    home = _home(event.workflow_id, partitions)
    if home is None:
        return f"workflow id {event.workflow_id[:80]!r} is not UTF-8 text, so it has no partition"
    if home == partition:
        return None
    return (
        f"workflow {event.workflow_id} belongs in partition {home} of {partitions} "
        f"(murmur2 of its id), found in partition {partition}: a second chain is refused"
    )


@lru_cache(maxsize=16_384)
def _home(workflow_id: str, partitions: int) -> int | None:
    """The workflow's partition, or None for an id that is not UTF-8 text.

    Memoized: a workflow's ~25 events ask the same question, and murmur2 in pure Python was
    2–3 % of the live worker's CPU.
    """
    try:
        return workflow_partition(workflow_id, partitions)
    except UnicodeEncodeError:
        return None
