"""Plain records passed between the processor's stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lineage.model import (
    ChainEntry,
    Checkpoint,
    Containment,
    ExecutionEvent,
    QuarantineRecord,
    Seal,
    Violation,
)


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as the consumer saw it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


@dataclass(slots=True)
class PendingEvent:
    """A decoded event travelling through the stages, with its exact bytes and digest."""

    offset: int
    data: bytes
    digest: bytes
    event: ExecutionEvent
    seal_bytes: bytes = b""
    seal_index: int = 0
    seal_path: tuple[bytes, ...] = ()
    authorizer: bool = False

    @property
    def size(self) -> int:
        return len(self.data) + len(self.seal_bytes) + 32 * len(self.seal_path)


@dataclass(slots=True)
class DecodedSeal:
    offset: int
    data: bytes
    seal: Seal


@dataclass(slots=True)
class DecodedBatch:
    """A sealed-batch record: its seal and the events it carries (decoded, with exact bytes).

    ``rejected`` holds the events that did not decode: (exact bytes, reason code, reason).
    """

    offset: int
    seal: DecodedSeal
    events: list[PendingEvent]
    rejected: list[tuple[bytes, str, str]] = field(default_factory=list)


@dataclass
class Outputs:
    """Everything one batch produced, in the order it must be published."""

    entries: list[ChainEntry] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # entries as lineage_entries rows
    violations: list[Violation] = field(default_factory=list)
    quarantine: list[QuarantineRecord] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    containments: list[Containment] = field(default_factory=list)

    def extend(self, other: Outputs) -> None:
        self.containments += other.containments
        self.entries += other.entries
        self.rows += other.rows
        self.violations += other.violations
        self.quarantine += other.quarantine
        self.checkpoints += other.checkpoints
