"""Findings as evidence: each partition's violations in a signed Merkle log (docs/findings.md).

The processor appends every violation it publishes to its partition's *findings log*, an RFC 6962
log whose leaf data is ``workflow_tag ‖ record_digest`` (64 bytes), and signs the log's size and
root into every checkpoint as the extension line ``findings <size> <base64 root>``. A bundle
carries all leaves of the workflow's partition up to the signed size plus the exact records of
the workflow's own leaves, so a verifier can tell that none of the workflow's findings is missing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from lineage import codec, merkle, note
from lineage.binding import note_text
from lineage.errors import LineageError, SchemaViolation
from lineage.model import Violation

RECORD_PREFIX = b"\x15"
"""Domain separation of a finding record's digest."""
WORKFLOW_TAG_PREFIX = b"\x16"
"""Domain separation of a workflow's tag in the findings log."""
LEAF_SIZE = 64
FINDINGS_KEYWORD = "findings"
_FINDINGS_LINE = re.compile(r"findings (0|[1-9][0-9]{0,19}) ([A-Za-z0-9+/]{43}=)", re.ASCII)
MAX_FINDINGS = 1_000_000
"""Most leaves a bundle's findings member may carry (64 MB); larger logs cannot be exported yet."""

FINDINGS_MISMATCH = "FINDINGS_MISMATCH"
NOT_COMMITTED = "findings not committed (older format)"


class FindingsError(LineageError):
    """Findings evidence does not match the signed findings log; ``kind`` is the failure kind."""

    def __init__(
        self,
        message: str,
        *,
        kind: str = FINDINGS_MISMATCH,
        where: Mapping[str, str | int] | None = None,
        expected: object = "",
        found: object = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.where: dict[str, str | int] = dict(where or {})
        self.expected = str(expected)
        self.found = str(found)


def workflow_tag(workflow_id: str) -> bytes:
    """H(0x16 ‖ UTF-8 workflow id): which workflow a findings-log leaf is about."""
    return hashlib.sha256(WORKFLOW_TAG_PREFIX + workflow_id.encode("utf-8")).digest()


def finding_record(v: Violation) -> bytes:
    """The exact bytes a finding commits to: the single-object ``Violation`` record.

    An empty ``event_id`` is encoded as null (event ids are never empty), so the record is the
    same whether it comes from the processor or from a stored row that keeps null as ''.
    """
    record = v.to_record()
    if not record["event_id"]:
        record["event_id"] = None
    return codec.load("violation").encode(record)


def record_digest(record: bytes) -> bytes:
    """H(0x15 ‖ exact finding record bytes)."""
    return hashlib.sha256(RECORD_PREFIX + record).digest()


def leaf(v: Violation) -> bytes:
    """The 64-byte findings-log leaf data of a violation."""
    return workflow_tag(v.workflow_id) + record_digest(finding_record(v))


def indexed_id(base_id: str, index: int) -> str:
    """A violation id that names the finding's position in its partition's findings log."""
    return f"{base_id}-{index}"


def index_of(violation_id: str) -> int | None:
    """The findings-log index an id names, or None for ids from before findings were logged."""
    _, sep, tail = violation_id.rpartition("-")
    if not sep or not tail.isdigit() or not tail.isascii() or (len(tail) > 1 and tail[0] == "0"):
        return None
    return int(tail)


STORED_COLUMNS = (
    "violation_id",
    "violation_type",
    "rule",
    "severity",
    "workflow_id",
    "event_id",
    "related_event_ids",
    "policy_digest",
    "explanation",
    "source_partition",
    "source_offset",
    "event_time",
)
"""The ``violations`` table columns a finding record is rebuilt from (event_time in µs)."""


def violation_from_row(row: Sequence[Any]) -> Violation:
    """A stored ``violations`` row (STORED_COLUMNS order) as the violation the processor logged."""
    values = dict(zip(STORED_COLUMNS, row, strict=True))
    values["event_id"] = values["event_id"] or None
    values["related_event_ids"] = list(values["related_event_ids"])
    return Violation.from_record(values)


def findings_line(size: int, root: bytes) -> str:
    """The checkpoint extension line that signs the findings log's size and root."""
    return f"{FINDINGS_KEYWORD} {size} {base64.b64encode(root).decode('ascii')}"


def signed_findings(checkpoint: note.Checkpoint) -> tuple[int, bytes] | None:
    """The (size, root) a checkpoint's ``findings`` line signs, or None when it has none."""
    found: tuple[int, bytes] | None = None
    for line in checkpoint.extensions:
        if line.split(" ", 1)[0] != FINDINGS_KEYWORD:
            continue
        m = _FINDINGS_LINE.fullmatch(line)
        if m is None or found is not None:
            raise FindingsError(
                "malformed or repeated findings line in a signed checkpoint",
                where={"origin": checkpoint.origin, "tree_size": checkpoint.size},
                expected="one 'findings <size> <base64 root>' line",
                found=repr(line[:80]),
            )
        root = base64.b64decode(m.group(2))
        found = (int(m.group(1)), root)
    return found


def root_of(leaves: Iterable[bytes]) -> tuple[int, bytes]:
    """(size, RFC 6962 root) of a findings log with these leaves."""
    cr = merkle.CompactRange()
    for item in leaves:
        cr.append(item)
    return cr.size, cr.root()


# -- the bundle member ---------------------------------------------------------------------


def bundle_member(
    workflow_id: str,
    partition: int,
    violations: Iterable[Violation],
    signed: tuple[int, bytes] | None,
) -> dict[str, Any] | None:
    """The bundle's ``findings`` member from the partition's stored violations.

    ``violations`` are all stored violations of the partition (any order; ids carry their log
    index); ``signed`` is the (size, root) of the newest checkpoint in the bundle, None when it
    commits to no findings (then the member is None). Raises FindingsError when the stored
    violations do not rebuild the signed log (the store is behind, or was changed).
    """
    if signed is None:
        return None
    size, root = signed
    by_index: dict[int, Violation] = {}
    for v in violations:
        i = index_of(v.violation_id)
        if v.source_partition == partition and i is not None and i < size:
            by_index[i] = v
    missing = [i for i in range(size) if i not in by_index]
    if missing:
        raise FindingsError(
            f"partition {partition}: the store lacks findings the signed log holds; "
            "wait for the sink, or run `lineage verify --clickhouse`",
            where={"partition": partition},
            expected=f"findings 0..{size - 1}",
            found=f"{len(missing)} missing, first {missing[0]}",
        )
    leaves = [leaf(by_index[i]) for i in range(size)]
    rebuilt = root_of(leaves)
    if rebuilt != (size, root):
        raise FindingsError(
            f"partition {partition}: the stored findings do not rebuild the signed findings log",
            where={"partition": partition},
            expected=f"size {size} root {root.hex()}",
            found=f"size {rebuilt[0]} root {rebuilt[1].hex()}",
        )
    tag = workflow_tag(workflow_id)
    return {
        "partition": partition,
        "tree_size": size,
        "leaves": base64.b64encode(b"".join(leaves)).decode("ascii"),
        "records": [
            {
                "index": i,
                "record": base64.b64encode(finding_record(by_index[i])).decode("ascii"),
            }
            for i in range(size)
            if leaves[i][:32] == tag
        ],
    }


def _int(doc: Mapping[str, Any], name: str, where: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise FindingsError(
            f"{where}.{name}: expected a non-negative integer", kind="UNUSABLE_INPUT"
        )
    return value


def _b64(value: object, where: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > (limit + 2) // 3 * 4:
        raise FindingsError(
            f"{where}: expected base64 of at most {limit} bytes", kind="UNUSABLE_INPUT"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FindingsError(f"{where}: expected standard base64", kind="UNUSABLE_INPUT") from None


def verify_member(
    member: object, workflow_id: str, partition: int, signed: tuple[int, bytes] | None
) -> list[Violation]:
    """Check a bundle's ``findings`` member against the signed (size, root); the workflow's findings.

    With ``signed`` None (the checkpoint commits to no findings) the member must be null. Else:
    the leaves rebuild the signed root at the signed size; the records are exactly the leaves
    tagged with the workflow, each hashing to its leaf and decoding to a violation of the workflow.
    """
    if signed is None:
        if member is not None:
            raise FindingsError(
                "the bundle carries findings its checkpoint does not commit to",
                where={"partition": partition},
                expected="findings: null",
                found="a findings member",
            )
        return []
    where: dict[str, str | int] = {"workflow_id": workflow_id, "partition": partition}
    if not isinstance(member, dict):
        raise FindingsError(
            "the signed checkpoint commits to findings but the bundle carries none",
            where=where,
            expected=f"the findings log of size {signed[0]}",
            found="no findings member",
        )
    if (
        member.get("partition") != partition
        or _int(member, "tree_size", "bundle.findings") != signed[0]
    ):
        raise FindingsError(
            "the findings member is not the signed findings log of the workflow's partition",
            where=where,
            expected=f"partition {partition} size {signed[0]}",
            found=f"partition {member.get('partition')!r} size {member.get('tree_size')!r}",
        )
    raw = _b64(member.get("leaves"), "bundle.findings.leaves", MAX_FINDINGS * LEAF_SIZE)
    if len(raw) != signed[0] * LEAF_SIZE:
        raise FindingsError(
            "the findings leaves are not the signed log's size",
            where=where,
            expected=f"{signed[0]} leaves of {LEAF_SIZE} bytes",
            found=f"{len(raw)} bytes",
        )
    leaves = [raw[i : i + LEAF_SIZE] for i in range(0, len(raw), LEAF_SIZE)]
    rebuilt = root_of(leaves)
    if rebuilt[1] != signed[1]:
        raise FindingsError(
            "the findings leaves do not rebuild the signed findings root",
            where=where,
            expected=signed[1].hex(),
            found=rebuilt[1].hex(),
        )
    records = member.get("records")
    if not isinstance(records, list) or len(records) > len(leaves):
        raise FindingsError("bundle.findings.records: expected a list", kind="UNUSABLE_INPUT")
    tag = workflow_tag(workflow_id)
    tagged = [i for i, lf in enumerate(leaves) if lf[:32] == tag]
    given: dict[int, bytes] = {}
    for k, item in enumerate(records):
        at = f"bundle.findings.records[{k}]"
        if not isinstance(item, dict):
            raise FindingsError(f"{at}: expected an object", kind="UNUSABLE_INPUT")
        index = _int(item, "index", at)
        if index in given:
            raise FindingsError(f"{at}: index {index} given twice", kind="UNUSABLE_INPUT")
        given[index] = _b64(item.get("record"), f"{at}.record", 1024 * 1024)
    if sorted(given) != tagged:
        missing = sorted(set(tagged) - set(given))
        extra = sorted(set(given) - set(tagged))
        raise FindingsError(
            "the bundle omits findings of the workflow that its signed findings log holds"
            if missing
            else "the bundle presents records at positions that are not the workflow's findings",
            where={**where, "findings_index": (missing or extra)[0]},
            expected=f"records at {tagged}",
            found=f"records at {sorted(given)}",
        )
    out: list[Violation] = []
    schema = codec.load("violation")
    for index in tagged:
        record = given[index]
        loc: dict[str, str | int] = {**where, "findings_index": index}
        if tag + record_digest(record) != leaves[index]:
            raise FindingsError(
                "a finding record does not hash to its leaf in the signed findings log",
                where=loc,
                expected=leaves[index][32:].hex(),
                found=record_digest(record).hex(),
            )
        try:
            if record[: codec.HEADER_LEN] != schema.header:
                raise SchemaViolation("not a single-object Violation record")
            v = Violation.from_record(schema.decode_body(record))
        except (LineageError, ValueError, TypeError, KeyError) as exc:
            raise FindingsError(f"a finding record does not decode: {exc}", where=loc) from None
        if v.workflow_id != workflow_id or index_of(v.violation_id) != index:
            raise FindingsError(
                "a finding record names another workflow or log position",
                where=loc,
                expected=f"{workflow_id} at {index}",
                found=f"{v.workflow_id} id {v.violation_id}",
            )
        out.append(v)
    return out


def with_index(v: Violation, index: int) -> Violation:
    """The violation as logged at ``index``: its id names the position."""
    return replace(v, violation_id=indexed_id(v.violation_id, index))


def check_stored(
    partition: int, violations: Iterable[Violation], notes: Iterable[str]
) -> tuple[int, int]:
    """Rebuild a partition's findings log from its stored violations and check every signed root.

    ``notes`` are the partition's checkpoint notes, already verified. Returns (leaves proven by
    the newest signed findings line, stored findings after it). Raises FindingsError when a
    signed root is not reproduced (a violation row deleted, edited or inserted) or rows are
    missing below a signed size.
    """
    signed: list[tuple[int, bytes]] = []
    for text in notes:
        body = note.parse_checkpoint(note_text(text))
        line = signed_findings(body)
        if line is not None:
            signed.append(line)
    by_index: dict[int, Violation] = {}
    for v in violations:
        i = index_of(v.violation_id)
        if v.source_partition == partition and i is not None:
            by_index[i] = v
    if not signed:
        return 0, len(by_index)
    signed.sort()
    cr = merkle.CompactRange()
    where: dict[str, str | int] = {"partition": partition}
    for size, root in signed:
        while cr.size < size:
            found = by_index.get(cr.size)
            if found is None:
                raise FindingsError(
                    "the violations table lacks a finding the signed findings log holds",
                    where={**where, "findings_index": cr.size},
                    expected=f"findings 0..{size - 1} (signed size {size})",
                    found=f"no violation with index {cr.size}",
                )
            cr.append(leaf(found))
        if cr.root() != root:
            raise FindingsError(
                "the stored violations do not reproduce the signed findings root "
                "(a violation row was edited, or replaced)",
                where={**where, "findings_size": size},
                expected=root.hex(),
                found=cr.root().hex(),
            )
    newest = signed[-1][0]
    return newest, sum(1 for i in by_index if i >= newest)


def stored_prefix(partition: int, violations: Iterable[Violation]) -> int:
    """How many findings of the partition's log are stored without a gap, from index 0."""
    have = {
        i
        for v in violations
        if v.source_partition == partition and (i := index_of(v.violation_id)) is not None
    }
    n = 0
    while n in have:
        n += 1
    return n


def signed_size(checkpoint_note: str) -> int:
    """The findings-log size a checkpoint note signs (0 without a findings line or unparsable)."""
    try:
        line = signed_findings(note.parse_checkpoint(note_text(checkpoint_note)))
    except (note.NoteError, FindingsError):
        return 0
    return 0 if line is None else line[0]


def within(checkpoint_note: str, stored: int) -> bool:
    """Whether a checkpoint's signed findings log is no larger than ``stored`` findings.

    The exporter only proves against checkpoints whose findings the store already holds (the
    sink writes violations and checkpoints independently); unparsable notes are left to the
    verifier.
    """
    try:
        line = signed_findings(note.parse_checkpoint(note_text(checkpoint_note)))
    except (note.NoteError, FindingsError):
        return True
    return line is None or line[0] <= stored
