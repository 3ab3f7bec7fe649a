"""Per-partition processor state, serialized for the changelog-backed table."""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol

from lineage import hashing
from lineage.model import ExecutionEvent
from stream_processors.records import PendingEvent


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
    """What the authenticator knows about one emitter in one partition."""

    expected_seq: int = 0
    prev_seal_hash: bytes = hashing.ZERO_HASH
    pending: dict[int, PendingEvent] = field(default_factory=dict)
    recent: dict[int, bytes] = field(default_factory=dict)
    seen: bool = False

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

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "o": self.next_offset,
                "l": _b(self.log),
                "c": self.checkpoint_size,
                "e": sorted(self.pending_emitters),
                "w": sorted(self.waiting_workflows),
                "k": self.counters,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PartitionMeta:
        d = json.loads(data)
        return cls(d["o"], _ub(d["l"]), d["c"], d["e"], d["w"], d["k"])
