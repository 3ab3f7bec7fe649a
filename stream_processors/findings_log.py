"""The processor's findings log: every published violation, in order, in a signed Merkle log.

Each violation gets the next index of its partition's findings log, its id names that index
(``<hash>-<index>``), and its 64-byte leaf is appended (lineage.findings). Checkpoints sign the
log's size and root, so a bundle cannot leave out a workflow's findings (docs/findings.md).
"""

from __future__ import annotations

from dataclasses import replace

from lineage import findings, merkle
from lineage.model import Containment, Violation

STATE_KEY = "findings"
"""Per-partition state key (after the partition prefix) of the log's compact range."""


class FindingsLog:
    """Incremental RFC 6962 log over findings-log leaves (workflow tag ‖ record digest)."""

    def __init__(self, state: bytes = b"") -> None:
        self.range = merkle.CompactRange.from_bytes(state) if state else merkle.CompactRange()

    @property
    def size(self) -> int:
        return int(self.range.size)

    def root(self) -> bytes:
        return bytes(self.range.root())

    def to_bytes(self) -> bytes:
        return bytes(self.range.to_bytes())

    def checkpoint_line(self) -> str:
        """The ``findings <size> <root>`` extension line for the next checkpoint."""
        return findings.findings_line(self.size, self.root())

    def record(
        self, violations: list[Violation], containments: list[Containment]
    ) -> tuple[list[Violation], list[Containment]]:
        """Log ``violations`` in order; returns them with indexed ids, and the containments
        re-pointed at the indexed ids of the violations that caused them."""
        logged: list[Violation] = []
        renamed: dict[str, str] = {}
        for v in violations:
            indexed = findings.with_index(v, self.size)
            self.range.append(findings.leaf(indexed))
            renamed.setdefault(v.violation_id, indexed.violation_id)
            logged.append(indexed)
        pointed = [
            replace(c, violation_id=renamed.get(c.violation_id, c.violation_id))
            for c in containments
        ]
        return logged, pointed
