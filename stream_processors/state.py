"""Per-partition processor state, serialized for the changelog-backed table."""

from __future__ import annotations

import base64
import json
import logging
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol

from lineage import hashing
from lineage.errors import LineageError
from lineage.model import ExecutionEvent
from stream_processors.records import PendingEvent

log = logging.getLogger("lineage.processor")


class StateStore(Protocol):
    """Where state survives a restart (the faust table; a dict in tests)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


class DictStore:
    """In-memory StateStore for tests and benchmarks."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value


FENCE_PREFIX = b"fence|"


def fence_key(partition: int) -> bytes:
    """The changelog key of a partition's fence record (outside the partition's state keys)."""
    return FENCE_PREFIX + str(partition).encode()


class IncompleteRestore(LineageError):
    """The state table was restored from only part of its changelog."""


class TableStore:
    """StateStore over a faust table, writing each change to the source partition's changelog.

    The pipeline writes one batch of keys and then the partition's meta key; a crash can leave
    any prefix of those writes in the changelog, and a restore from a half-written batch mixes
    two states (an emitter already past events whose workflows never saw them: those events are
    then dropped as duplicates and never chained). So the meta record commits the batch: every
    record carries its batch number and the value it replaces, and on restore the records of a
    batch the meta never committed are rolled back to that value (an undo log, one record per key).
    """

    _HEAD = struct.Struct(">BQBI")  # format, batch, has_prev | has_value << 1, len(prev)
    _FORMAT = 0  # an old plain value starts with "{", never with this byte

    def __init__(self, table: Any, partition: int, fence: bytes | None = None) -> None:
        """``fence``: the value of the fence record written to this partition's changelog just
        before the table's recovery (``fence_key``). The undo log is sound only if the restored
        table holds every record written before the restore: records it missed would keep their
        batch numbers, which this owner reuses, so a later restore would take them as committed.
        A table without the fence record was restored from part of the changelog: refused."""
        self.table = table
        self.partition = partition
        if fence is not None:
            found = table.data.get(fence_key(partition))
            if found is None or bytes(found) != fence:
                raise IncompleteRestore(
                    f"partition {partition}: expected the restored state table to end with fence "
                    f"{fence.hex()}, found {None if found is None else bytes(found).hex()}: the "
                    "table's recovery stopped before the end of the changelog"
                )
        self.prefix = f"{partition}|".encode()
        self.meta_key = self.prefix + b"meta"
        meta = self._record(self.meta_key)
        self.committed = meta[0] if meta else 0
        self.batch = self.committed + 1
        self._roll_back()

    def _record(self, raw: bytes) -> tuple[int, bytes | None, bytes | None] | None:
        """(batch, replaced value, value) of a key, or None when there is no record."""
        stored = self.table.data.get(raw)
        if stored is None:
            return None
        data = bytes(stored)
        if not data or data[0] != self._FORMAT:
            return 0, None, data
        _, batch, flags, n = self._HEAD.unpack_from(data)
        body = data[self._HEAD.size :]
        return batch, body[:n] if flags & 1 else None, body[n:] if flags & 2 else None

    def _write(self, raw: bytes, batch: int, prev: bytes | None, value: bytes | None) -> None:
        flags = int(prev is not None) | int(value is not None) << 1
        head = self._HEAD.pack(self._FORMAT, batch, flags, len(prev or b""))
        data = head + (prev or b"") + (value or b"")
        self.table.data[raw] = data
        # faust's own changelog path (as before issue 12): writing these records with a separate
        # producer was backed out after a crash run restored an inconsistent state
        # (docs/performance.md, "State writes").
        self.table.send_changelog(self.partition, raw, data)

    def _roll_back(self) -> None:
        undone = 0
        for raw in [k for k in list(self.table.data.keys()) if bytes(k).startswith(self.prefix)]:
            rec = self._record(bytes(raw))
            if rec is not None and rec[0] > self.committed:
                self._write(bytes(raw), self.committed, None, rec[1])
                undone += 1
        if undone:
            log.warning(
                "partition %d: rolled back %d state records of a batch that was never committed "
                "(the previous owner stopped while writing it)",
                self.partition,
                undone,
            )

    def get(self, key: str) -> bytes | None:
        rec = self._record(key.encode())
        if rec is None:
            return None
        batch, prev, value = rec
        return value if batch <= self.committed else prev

    def put(self, key: str, value: bytes) -> None:
        raw = key.encode()
        if raw != self.meta_key:
            self._write(raw, self.batch, self.get(key), value)
            return
        self._write(raw, self.batch, None, value)  # the pipeline writes its meta last: the commit
        self.committed = self.batch
        self.batch += 1


def _b(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _ub(text: str) -> bytes:
    return base64.b64decode(text)


def pending_to_json(p: PendingEvent) -> list[Any]:
    return [
        p.offset,
        _b(p.data),
        _b(p.seal_bytes),
        p.seal_index,
        [_b(x) for x in p.seal_path],
        p.authorizer,
    ]


def pending_from_json(v: list[Any], decode_event: Any) -> PendingEvent:
    data = _ub(v[1])
    event: ExecutionEvent = decode_event(data)
    return PendingEvent(
        offset=v[0],
        data=data,
        digest=hashing.event_digest(data),
        event=event,
        seal_bytes=_ub(v[2]),
        seal_index=v[3],
        seal_path=tuple(_ub(x) for x in v[4]),
        authorizer=v[5],
    )


_RECENT = struct.Struct(">Q")


def _unpack_recent(blob: bytes) -> dict[int, bytes]:
    """Recent (seq, digest) pairs stored as one blob of 40-byte records, oldest first."""
    return {_RECENT.unpack_from(blob, i)[0]: blob[i + 8 : i + 40] for i in range(0, len(blob), 40)}


@dataclass
class EmitterState:
    """What the authenticator knows about one emitter in one partition.

    ``recent`` holds the digests of the last ``window`` released events, oldest first, to tell a
    redelivery from equivocation. It is written whole with the rest of the record: the delta
    format (one chunk record per write) was backed out, see docs/performance.md.
    """

    expected_seq: int = 0
    prev_seal_hash: bytes = hashing.ZERO_HASH
    pending: dict[int, PendingEvent] = field(default_factory=dict)
    recent: dict[int, bytes] = field(default_factory=dict)
    seen: bool = False

    def remember(self, seq: int, digest: bytes, window: int) -> None:
        """A released event's digest; the oldest leaves once ``window`` are held."""
        self.recent[seq] = digest
        while len(self.recent) > window:
            del self.recent[next(iter(self.recent))]

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "x": self.expected_seq,
                "h": _b(self.prev_seal_hash),
                "p": {str(k): pending_to_json(v) for k, v in self.pending.items()},
                "r": _b(b"".join(_RECENT.pack(k) + v for k, v in self.recent.items())),
                "s": self.seen,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes, decode_event: Any) -> EmitterState:
        d = json.loads(data)
        return cls(
            expected_seq=d["x"],
            prev_seal_hash=_ub(d["h"]),
            pending={int(k): pending_from_json(v, decode_event) for k, v in d["p"].items()},
            recent=_unpack_recent(_ub(d["r"])),
            seen=d["s"],
        )


@dataclass
class WorkflowState:
    """Chain head, causal order bookkeeping and policy state of one workflow."""

    workflow_id: str
    head: bytes = b""
    next_seq: int = 0
    chained: dict[str, bytes] = field(default_factory=dict)  # event id -> 8-byte digest prefix
    waiting: list[PendingEvent] = field(default_factory=list)
    policy: bytes = b""

    def __post_init__(self) -> None:
        if not self.head:
            self.head = hashing.genesis_hash(self.workflow_id)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "w": self.workflow_id,
                "h": _b(self.head),
                "n": self.next_seq,
                "c": {k: v.hex() for k, v in self.chained.items()},
                "q": [pending_to_json(p) for p in self.waiting],
                "p": _b(self.policy),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes, decode_event: Any) -> WorkflowState:
        d = json.loads(data)
        return cls(
            workflow_id=d["w"],
            head=_ub(d["h"]),
            next_seq=d["n"],
            chained={k: bytes.fromhex(v) for k, v in d["c"].items()},
            waiting=[pending_from_json(v, decode_event) for v in d["q"]],
            policy=_ub(d["p"]),
        )


@dataclass
class PartitionMeta:
    """Offsets, the partition Merkle log and indexes of what is waiting."""

    next_offset: int = -1
    log: bytes = b""
    checkpoint_size: int = 0
    pending_emitters: list[str] = field(default_factory=list)
    waiting_workflows: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    completed: list[tuple[int, str]] = field(default_factory=list)  # (offset, workflow) to shrink

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "o": self.next_offset,
                "l": _b(self.log),
                "c": self.checkpoint_size,
                "e": sorted(self.pending_emitters),
                "w": sorted(self.waiting_workflows),
                "k": self.counters,
                "d": self.completed,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PartitionMeta:
        d = json.loads(data)
        completed = [(int(o), str(w)) for o, w in d.get("d", [])]
        return cls(d["o"], _ub(d["l"]), d["c"], d["e"], d["w"], d["k"], completed)
