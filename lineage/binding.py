"""The signed partition binding: one workflow, one partition, one chain (docs/integrity.md).

The processor writes the input topic's partition count into every checkpoint it signs, as a
C2SP tlog-checkpoint extension line ``partitions <N>``. Since a workflow's events are keyed by its
id, they all belong in ``murmur2(workflow_id) mod N``; a verifier holding a checkpoint signed by a
key it trusts can check that a chain sits in that partition's log without trusting the exporter.
Checkpoints signed before the line existed carry no binding: the check is then skipped with a
warning, never silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lineage import note
from lineage.errors import LineageError
from lineage.partitioning import MAX_PARTITIONS, workflow_partition

PARTITIONS_KEYWORD = "partitions"
_PARTITIONS_LINE = re.compile(r"partitions ([1-9][0-9]{0,9})", re.ASCII)

NOT_SIGNED = "partition binding not signed (older format)"
"""The warning text for checkpoints that predate the binding (no ``partitions`` line)."""


class BindingError(LineageError):
    """A signed partition binding is malformed, inconsistent, or not met by a chain."""

    def __init__(
        self,
        message: str,
        *,
        where: Mapping[str, str | int] | None = None,
        expected: object = "",
        found: object = "",
    ) -> None:
        super().__init__(message)
        self.where: dict[str, str | int] = dict(where or {})
        self.expected = str(expected)
        self.found = str(found)


def partitions_line(partitions: int) -> str:
    """The checkpoint extension line that signs the input topic's partition count."""
    if isinstance(partitions, bool) or not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partition count: expected 1..{MAX_PARTITIONS}, found {partitions!r}")
    return f"{PARTITIONS_KEYWORD} {partitions}"


def signed_partitions(checkpoint: note.Checkpoint) -> int | None:
    """The partition count a checkpoint's extension lines sign, or None when it carries none.

    Other extension lines are opaque (c2sp.org/tlog-checkpoint) and ignored; a line starting with
    ``partitions`` that is not ``partitions <1..2^31-1>``, or two such lines, is an error.
    """
    found: int | None = None
    for line in checkpoint.extensions:
        if line.split(" ", 1)[0] != PARTITIONS_KEYWORD:
            continue
        m = _PARTITIONS_LINE.fullmatch(line)
        if m is None or int(m.group(1)) > MAX_PARTITIONS:
            raise BindingError(
                "malformed partition binding in a signed checkpoint",
                where={"origin": checkpoint.origin, "tree_size": checkpoint.size},
                expected=f"'partitions <1..{MAX_PARTITIONS}>'",
                found=repr(line[:80]),
            )
        if found is not None:
            raise BindingError(
                "two partition bindings in one signed checkpoint",
                where={"origin": checkpoint.origin, "tree_size": checkpoint.size},
                expected="one 'partitions' line",
                found="two or more",
            )
        found = int(m.group(1))
    return found


@dataclass(frozen=True, slots=True)
class LogBinding:
    """What a partition log's signed checkpoints say about the topic's partition count."""

    partition: int
    partitions: int | None
    """None: no checkpoint of the log carries a binding (older format)."""


def log_binding(partition: int, checkpoints: Sequence[note.Checkpoint]) -> LogBinding:
    """The binding of one log from its signed checkpoints, oldest first.

    Every checkpoint that carries a count must carry the same one, the partition must be below it,
    and once a checkpoint carries it every later one must too (a processor never drops it).
    """
    count: int | None = None
    for cp in checkpoints:
        n = signed_partitions(cp)
        where: dict[str, str | int] = {"origin": cp.origin, "tree_size": cp.size}
        if n is None:
            if count is not None:
                raise BindingError(
                    "a later checkpoint drops the partition binding an earlier one signed",
                    where=where,
                    expected=partitions_line(count),
                    found="no partitions line",
                )
            continue
        if count is not None and n != count:
            raise BindingError(
                "checkpoints of one log sign different partition counts",
                where=where,
                expected=partitions_line(count),
                found=partitions_line(n),
            )
        if partition >= n:
            raise BindingError(
                "the log's partition is outside the partition count its checkpoint signs",
                where=where,
                expected=f"partition < {n}",
                found=f"partition {partition}",
            )
        count = n
    return LogBinding(partition, count)


def check_workflow(workflow_id: str, binding: LogBinding) -> bool:
    """Whether the workflow belongs in the bound log; False when the binding is not signed.

    Raises BindingError when the log is bound and the workflow belongs in another partition.
    """
    if binding.partitions is None:
        return False
    try:
        home = workflow_partition(workflow_id, binding.partitions)
    except UnicodeEncodeError:
        raise BindingError(
            "the workflow id is not valid UTF-8 text, so it has no partition",
            where={"workflow_id": repr(workflow_id[:80])},
            expected="a UTF-8 encodable workflow id",
            found="a lone surrogate",
        ) from None
    if home != binding.partition:
        raise BindingError(
            "the workflow's chain is in a partition its id does not map to: "
            "only its own partition's chain counts",
            where={"workflow_id": workflow_id, "partition": binding.partition},
            expected=f"partition {home} of {binding.partitions} (murmur2 of the workflow id)",
            found=f"partition {binding.partition}",
        )
    return True


def note_text(signed_note: str) -> str:
    """The text of a signed note (everything up to the blank line), without checking signatures.

    Only for notes whose signatures the caller has already verified.
    """
    split = signed_note.rfind("\n\n")
    return signed_note[: split + 1] if split >= 0 else signed_note


def bundle_bindings(sections: Iterable[tuple[int, Sequence[str]]], workflow_id: str) -> list[str]:
    """Check a workflow against each (partition, verified checkpoint notes) log of a bundle.

    Returns warnings for logs whose checkpoints carry no binding; raises BindingError otherwise.
    """
    warnings: list[str] = []
    for partition, notes in sections:
        try:
            parsed = [note.parse_checkpoint(note_text(n)) for n in notes]
        except note.NoteError as exc:
            raise BindingError(
                f"signed checkpoint does not parse: {exc}", where={"partition": partition}
            ) from None
        binding = log_binding(partition, parsed)
        if not check_workflow(workflow_id, binding):
            warnings.append(f"{NOT_SIGNED}: partition {partition}'s checkpoints name no count")
    return warnings
