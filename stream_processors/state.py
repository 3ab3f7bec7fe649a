"""Per-partition processor state, serialized for the changelog-backed table."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lineage import hashing
from lineage.errors import LineageError
from lineage.model import ExecutionEvent
from stream_processors.policy_stage import WorkflowPolicyState, journal_op_json
from stream_processors.records import PendingEvent

log = logging.getLogger("lineage.processor")


class StateStore(Protocol):
    """Where state survives a restart (the faust table; a dict in tests)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...


class DictStore:
    """In-memory StateStore for tests and benchmarks."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


FENCE_PREFIX = b"fence|"


def fence_key(partition: int) -> bytes:
    """The changelog key of a partition's fence record (outside the partition's state keys)."""
    return FENCE_PREFIX + str(partition).encode()


class IncompleteRestore(LineageError):
    """The state table was restored from only part of its changelog."""


class StateCorrupt(LineageError):
    """A restored state record refers to a record the table does not hold."""


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
    PART_BYTES = 400_000
    """A larger value is split into parts of this size, each its own record: a record holds the
    value it replaced too, and Kafka refuses messages over 1 MB by default."""
    _SPLIT = b"\xffparts:"  # a split value's index record (a JSON value never starts with 0xff)
    _INDEX = struct.Struct(">IQ32s")  # parts, total length, SHA-256 of the value

    def __init__(
        self,
        table: Any,
        partition: int,
        fence: bytes | None = None,
        send: Callable[[int, bytes, bytes | None], None] | None = None,
    ) -> None:
        """``fence``: the value of the fence record written to this partition's changelog just
        before the table's recovery (``fence_key``). The undo log is sound only if the restored
        table holds every record written before the restore: records it missed would keep their
        batch numbers, which this owner reuses, so a later restore would take them as committed.
        A table without the fence record was restored from part of the changelog: refused.

        ``send(partition, key, value)`` writes a changelog record (default: faust's
        ``table.send_changelog``, which queues it in faust's producer buffer)."""
        self.table = table
        self.partition = partition
        # keys whose in-memory record still holds an undo value: their batch and new value
        self._undo_kept: dict[bytes, tuple[int, bytes | None]] = {}
        self.send = send or table.send_changelog
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
        data = self._pack(batch, prev, value)
        self.table.data[raw] = data
        self.send(self.partition, raw, data)
        if prev is not None:
            self._undo_kept[raw] = (batch, value)

    def _pack(self, batch: int, prev: bytes | None, value: bytes | None) -> bytes:
        flags = int(prev is not None) | int(value is not None) << 1
        head = self._HEAD.pack(self._FORMAT, batch, flags, len(prev or b""))
        return head + (prev or b"") + (value or b"")

    def _drop_committed_undo(self) -> None:
        """Once the meta record committed a batch, its records' replaced values are needed only
        by a restore, which reads the changelog (where they stay), never this process's memory:
        keep the in-memory copies without them. Otherwise every key keeps the last value it
        replaced, e.g. a completed workflow's whole state next to its ~90-byte shrunk record."""
        for raw, (batch, value) in self._undo_kept.items():
            self.table.data[raw] = self._pack(batch, None, value)
        self._undo_kept.clear()

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

    def _get_record(self, raw: bytes) -> bytes | None:
        rec = self._record(raw)
        if rec is None:
            return None
        batch, prev, value = rec
        return value if batch <= self.committed else prev

    def _part_key(self, raw: bytes, i: int) -> bytes:
        return self.prefix + f"x|{i}|".encode() + raw[len(self.prefix) :]

    def get(self, key: str) -> bytes | None:
        raw = key.encode()
        value = self._get_record(raw)
        if value is None or not value.startswith(self._SPLIT):
            return value
        n, total, digest = self._INDEX.unpack_from(value, len(self._SPLIT))
        parts = [self._get_record(self._part_key(raw, i)) for i in range(n)]
        missing = [i for i, part in enumerate(parts) if part is None]
        joined = b"".join(part for part in parts if part is not None)
        if missing or len(joined) != total or hashlib.sha256(joined).digest() != digest:
            raise StateCorrupt(
                f"state record {key!r}: expected {n} parts of {total} bytes in all, found parts "
                f"{[i for i in range(n) if i not in missing]} of {len(joined)} bytes"
                + ("" if missing or len(joined) != total else " with another digest")
            )
        return joined

    def put(self, key: str, value: bytes) -> None:
        raw = key.encode()
        if raw != self.meta_key:
            if len(value) > self.PART_BYTES:
                value = self._put_parts(raw, value)
            self._write(raw, self.batch, self._get_record(raw), value)
            return
        self._write(raw, self.batch, None, value)  # the pipeline writes its meta last: the commit
        self.committed = self.batch
        self.batch += 1
        self._drop_committed_undo()

    def _put_parts(self, raw: bytes, value: bytes) -> bytes:
        """Write ``value`` as part records of this batch; returns the index record's value.
        Parts of an earlier, longer split are left behind unreferenced."""
        size = self.PART_BYTES
        parts = [value[i : i + size] for i in range(0, len(value), size)]
        for i, part in enumerate(parts):
            part_key = self._part_key(raw, i)
            self._write(part_key, self.batch, self._get_record(part_key), part)
        index = self._INDEX.pack(len(parts), len(value), hashlib.sha256(value).digest())
        return self._SPLIT + index

    def delete(self, key: str) -> None:
        """Remove a key that no committed state refers to any more: a plain tombstone.

        The pipeline deletes only after the meta record committed the state that stopped
        referring to the key, so no undo is needed; a crash before the tombstone leaves an
        unreferenced record behind, nothing worse.
        """
        raw = key.encode()
        self._undo_kept.pop(raw, None)
        if self.table.data.pop(raw, None) is not None:
            self.send(self.partition, raw, None)


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
    redelivery from equivocation. It is stored as deltas (``records``): each state write adds one
    chunk record holding the digests released since the previous write, and a chunk is deleted
    once the newer chunks hold the whole window. The head record lists the chunks and how many
    digests the window holds, so a restore rebuilds exactly the same window whatever the write
    timing was. ``to_bytes`` is the earlier whole-record format, which ``from_bytes`` still reads.
    """

    expected_seq: int = 0
    prev_seal_hash: bytes = hashing.ZERO_HASH
    pending: dict[int, PendingEvent] = field(default_factory=dict)
    recent: dict[int, bytes] = field(default_factory=dict)
    seen: bool = False
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (chunk id, entries), oldest first
    fresh: list[int] = field(default_factory=list)  # seqs released since the last write
    dropped_chunks: list[int] = field(default_factory=list)  # chunk ids to delete

    def remember(self, seq: int, digest: bytes, window: int) -> None:
        """A released event's digest; the oldest leaves once ``window`` are held."""
        self.recent[seq] = digest
        self.fresh.append(seq)
        while len(self.recent) > window:
            del self.recent[next(iter(self.recent))]

    def take_chunk(self) -> tuple[int, bytes] | None:
        """The chunk to write now (id, ``seq ‖ digest`` entries); moves the chunks that left the
        window to ``dropped_chunks``."""
        fresh = [q for q in self.fresh if q in self.recent]
        self.fresh = []
        chunk: tuple[int, bytes] | None = None
        if fresh:
            cid = (self.chunks[-1][0] + 1) if self.chunks else 0
            self.chunks.append((cid, len(fresh)))
            chunk = (cid, b"".join(_RECENT.pack(q) + self.recent[q] for q in fresh))
        keep, newer = 0, 0  # the newest chunks that together hold the whole window
        for _, n in reversed(self.chunks):
            if newer >= len(self.recent):
                break
            newer += n
            keep += 1
        gone = self.chunks[: len(self.chunks) - keep]
        self.chunks = self.chunks[len(self.chunks) - keep :]
        self.dropped_chunks += [cid for cid, _ in gone]
        return chunk

    def records(self, key: str) -> tuple[list[tuple[str, bytes]], list[str]]:
        """The records to write now under ``key`` (a new digest chunk, then the head), and the
        chunk keys to delete once the state that no longer lists them is committed."""
        items: list[tuple[str, bytes]] = []
        chunk = self.take_chunk()
        if chunk is not None:
            items.append((chunk_key(key, chunk[0]), chunk[1]))
        items.append((key, self.head_bytes()))
        gone = [chunk_key(key, cid) for cid in self.dropped_chunks]
        self.dropped_chunks = []
        return items, gone

    def head_bytes(self) -> bytes:
        """The head record: everything but the digests (those are in the chunk records)."""
        return json.dumps(
            {
                "x": self.expected_seq,
                "h": _b(self.prev_seal_hash),
                "p": {str(k): pending_to_json(v) for k, v in self.pending.items()},
                "c": self.chunks,
                "n": len(self.recent),
                "s": self.seen,
            },
            separators=(",", ":"),
        ).encode()

    def to_bytes(self) -> bytes:
        """The whole record (the format before the deltas): seal state and the whole window."""
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
    def load(cls, store: StateStore, key: str, decode_event: Any) -> EmitterState:
        """The emitter state stored under ``key`` (a head and its chunks, or a whole record)."""
        raw = store.get(key)
        if not raw:
            return cls()
        return cls.from_bytes(raw, decode_event, lambda cid: store.get(chunk_key(key, cid)))

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        decode_event: Any,
        load_chunk: Callable[[int], bytes | None] = lambda cid: None,
    ) -> EmitterState:
        d = json.loads(data)
        st = cls(
            expected_seq=d["x"],
            prev_seal_hash=_ub(d["h"]),
            pending={int(k): pending_from_json(v, decode_event) for k, v in d["p"].items()},
            seen=d["s"],
        )
        if "r" in d:  # the whole-record format: its window goes into the next write's chunk
            st.recent = _unpack_recent(_ub(d["r"]))
            st.fresh = list(st.recent)
            return st
        entries: dict[int, bytes] = {}
        for cid, n in d["c"]:
            blob = load_chunk(cid)
            if blob is None or len(blob) != 40 * n:
                raise StateCorrupt(
                    f"emitter state chunk {cid}: expected {40 * n} bytes, "
                    f"found {None if blob is None else len(blob)}"
                )
            entries.update(_unpack_recent(blob))
            st.chunks.append((cid, n))
        held = d["n"]
        st.recent = dict(list(entries.items())[len(entries) - held :]) if held else {}
        return st


def chunk_key(key: str, cid: int) -> str:
    """Where chunk ``cid`` of the emitter record ``key`` is stored."""
    return f"{key}|r|{cid}"


WORKFLOW_FORMAT = 2
"""Workflow records: 2 writes a head and journal chunks; 1 (a whole JSON record) still loads."""
MAX_JOURNAL_CHUNKS = 8
"""A workflow whose head lists this many chunks writes one snapshot chunk instead of a delta."""


def journal_key(key: str, cid: int) -> str:
    """Where journal chunk ``cid`` of the workflow record ``key`` is stored."""
    return f"{key}|j|{cid}"


@dataclass
class WorkflowState:
    """Chain head, causal order bookkeeping and policy state of one workflow.

    Stored as deltas (``records``): a head record (chain head, sequence, waiting events,
    containment, the list of journal chunks) and, per state write, one chunk holding the changes
    to the maps since the previous write: ``["c", event id, digest prefix]`` for a chained event
    and the policy maps' operations (``policy_stage.JOURNAL_MAPS``). A restore replays the chunks
    in order, so the maps come back in the same insertion order, which the rules' eviction
    depends on. Once a head lists ``MAX_JOURNAL_CHUNKS`` chunks, or after a shrink, the write is
    a snapshot: one chunk that rebuilds the maps from empty, and the older chunks are deleted.
    """

    workflow_id: str
    head: bytes = b""
    next_seq: int = 0
    chained: dict[str, bytes] = field(default_factory=dict)  # event id -> 8-byte digest prefix
    waiting: list[PendingEvent] = field(default_factory=list)
    policy: bytes = b""  # format 1's whole policy state, decoded when first needed
    policy_state: WorkflowPolicyState | None = None
    journal: list[tuple[Any, ...]] = field(default_factory=list)  # changes since the last write
    chunks: list[int] = field(default_factory=list)  # journal chunk ids, oldest first
    next_chunk: int = 0
    dropped_chunks: list[int] = field(default_factory=list)  # chunk ids to delete
    snapshot_due: bool = False

    def __post_init__(self) -> None:
        if not self.head:
            self.head = hashing.genesis_hash(self.workflow_id)

    def rules(self) -> WorkflowPolicyState:
        """The policy state, decoded from format 1's bytes (or new) when first needed; its
        changes go to this workflow's journal."""
        if self.policy_state is None:
            ps = (
                WorkflowPolicyState.from_bytes(self.policy)
                if self.policy
                else WorkflowPolicyState()
            )
            ps.journal = self.journal
            self.policy_state = ps
        return self.policy_state

    def mark_chained(self, event_id: str, digest: bytes) -> None:
        self.chained[event_id] = digest[:8]
        self.journal.append(("c", event_id, digest[:8]))

    def reset(self, policy_state: WorkflowPolicyState) -> None:
        """Forget the maps (a shrink): the next write is a snapshot of what is left."""
        self.chained = {}
        self.journal.clear()
        policy_state.journal = self.journal
        self.policy_state = policy_state
        self.snapshot_due = True

    def records(self, key: str) -> tuple[list[tuple[str, bytes]], list[str]]:
        """The records to write now under ``key`` (a journal chunk when anything changed, then
        the head), and the chunk keys to delete once the head that no longer lists them is
        committed."""
        # format 1's policy state may never have been decoded since the load: it goes in too
        ps = self.rules() if self.policy else self.policy_state
        if self.snapshot_due or len(self.chunks) >= MAX_JOURNAL_CHUNKS:
            ops: list[list[Any]] = [["c", k, v.hex()] for k, v in self.chained.items()]
            if ps is not None:
                ops += ps.snapshot_ops()
            self.dropped_chunks += self.chunks
            self.chunks = []
            self.snapshot_due = False
            self.policy = b""
        else:
            ops = [
                ["c", op[1], op[2].hex()] if op[0] == "c" else journal_op_json(op)
                for op in self.journal
            ]
        self.journal.clear()
        items: list[tuple[str, bytes]] = []
        if ops:
            cid = self.next_chunk
            self.next_chunk += 1
            self.chunks.append(cid)
            items.append((journal_key(key, cid), json.dumps(ops, separators=(",", ":")).encode()))
        items.append((key, self.head_bytes()))
        gone = [journal_key(key, cid) for cid in self.dropped_chunks]
        self.dropped_chunks = []
        return items, gone

    def head_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "v": WORKFLOW_FORMAT,
            "w": self.workflow_id,
            "h": _b(self.head),
            "n": self.next_seq,
            "q": [pending_to_json(p) for p in self.waiting],
            "k": self.chunks,
            "i": self.next_chunk,
        }
        ps = self.policy_state
        if ps is not None and (ps.contained or ps.contained_by or ps.contained_at):
            doc["s"] = [ps.contained, ps.contained_by, ps.contained_at]
        return json.dumps(doc, separators=(",", ":")).encode()

    def to_bytes(self) -> bytes:
        """Format 1, one whole record (written before the deltas; ``load`` still reads it)."""
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
    def load(
        cls, store: StateStore, key: str, workflow_id: str, decode_event: Any
    ) -> WorkflowState:
        """The workflow stored under ``key`` (a head and its journal chunks, or a format 1
        record), or a new one."""
        raw = store.get(key)
        if not raw:
            return cls(workflow_id)
        d = json.loads(raw)
        if d.get("v") != WORKFLOW_FORMAT:  # format 1: rewritten as a snapshot at the next write
            st = cls.from_bytes(raw, decode_event)
            st.snapshot_due = True
            return st
        contained, contained_by, contained_at = d.get("s", (False, None, None))
        ps = WorkflowPolicyState(
            contained=contained, contained_by=contained_by, contained_at=contained_at
        )
        st = cls(
            workflow_id=d["w"],
            head=_ub(d["h"]),
            next_seq=d["n"],
            waiting=[pending_from_json(v, decode_event) for v in d["q"]],
            policy_state=ps,
            chunks=list(d["k"]),
            next_chunk=d["i"],
        )
        for cid in st.chunks:
            blob = store.get(journal_key(key, cid))
            if blob is None:
                raise StateCorrupt(
                    f"workflow {workflow_id}: its head lists journal chunk {cid}, "
                    "which the table does not hold"
                )
            ops = json.loads(blob)
            st.chained.update((op[1], bytes.fromhex(op[2])) for op in ops if op[0] == "c")
            ps.apply([op for op in ops if op[0] != "c"])
        ps.journal = st.journal
        return st

    @classmethod
    def from_bytes(cls, data: bytes, decode_event: Any) -> WorkflowState:
        """A format 1 record."""
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
