"""Domain-separated SHA-256 digests for events, chain entries and seals (layouts in docs/integrity.md)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import cast

from lineage.ids import EntryHash, EventDigest

EVENT_PREFIX = b"\x10"
ENTRY_PREFIX = b"\x11"
GENESIS_PREFIX = b"\x12"
SEAL_MESSAGE_PREFIX = b"\x13"
SEAL_HASH_PREFIX = b"\x14"
ZERO_HASH = bytes(32)
HASH_SIZE = 32
_LEAF_RECORD_FIELDS = "32s32sQ32s"
LEAF_RECORD = struct.Struct(">" + _LEAF_RECORD_FIELDS)
"""The one definition of an entry hash's preimage after its prefix, the *leaf record*:
prev_hash (32) ‖ event_digest (32) ‖ u64be(chain_seq) (8) ‖ policy_digest (32)."""
LEAF_RECORD_SIZE = LEAF_RECORD.size
_ENTRY_PREIMAGE = struct.Struct(">c" + _LEAF_RECORD_FIELDS)  # 0x11 ‖ leaf record, in one pack


def sha256(data: bytes) -> bytes:
    """Plain SHA-256."""
    return hashlib.sha256(data).digest()


def event_digest(record_bytes: bytes) -> EventDigest:
    """Digest of an event's exact single-object-encoded bytes: SHA-256(0x10 ‖ bytes)."""
    return EventDigest(hashlib.sha256(EVENT_PREFIX + record_bytes).digest())


def event_digests(records: Iterable[bytes]) -> list[EventDigest]:
    """``event_digest`` of each record, in one list (no call per event: whole columns)."""
    sha256, prefix = hashlib.sha256, EVENT_PREFIX
    return cast("list[EventDigest]", [sha256(prefix + r).digest() for r in records])


def genesis_hash(workflow_id: str) -> EntryHash:
    """The prev_hash of a workflow's first entry: SHA-256(0x12 ‖ UTF-8 workflow id)."""
    return EntryHash(hashlib.sha256(GENESIS_PREFIX + workflow_id.encode()).digest())


def _hash_sizes(prev: bytes, digest: bytes, policy_digest: bytes) -> ValueError:
    found = ", ".join(str(len(h)) for h in (prev, digest, policy_digest))
    return ValueError(f"leaf record hashes: expected {HASH_SIZE} bytes each, found {found}")


def leaf_record(prev: bytes, digest: bytes, chain_seq: int, policy_digest: bytes) -> bytes:
    """The 104-byte entry-hash preimage after its prefix (``LEAF_RECORD``)."""
    if len(prev) != HASH_SIZE or len(digest) != HASH_SIZE or len(policy_digest) != HASH_SIZE:
        raise _hash_sizes(prev, digest, policy_digest)  # struct would pad or cut them silently
    return LEAF_RECORD.pack(prev, digest, chain_seq, policy_digest)


def split_leaf_record(record: bytes) -> tuple[bytes, bytes, int, bytes]:
    """(prev_hash, event_digest, chain_seq, policy_digest) of a 104-byte leaf record."""
    if len(record) != LEAF_RECORD_SIZE:
        raise ValueError(f"leaf record: expected {LEAF_RECORD_SIZE} bytes, found {len(record)}")
    prev, digest, chain_seq, policy_digest = LEAF_RECORD.unpack(record)
    return prev, digest, chain_seq, policy_digest


def entry_hash_of_record(record: bytes) -> EntryHash:
    """The entry hash a leaf record commits to: SHA-256(0x11 ‖ record)."""
    return EntryHash(hashlib.sha256(ENTRY_PREFIX + record).digest())


def entry_hash(prev: bytes, digest: bytes, chain_seq: int, policy_digest: bytes) -> EntryHash:
    """SHA-256(0x11 ‖ prev_hash ‖ event_digest ‖ u64be(chain_seq) ‖ policy_digest).

    The same bytes as ``entry_hash_of_record(leaf_record(...))``, packed in one call: the column
    verifier calls it once per stored entry.
    """
    if len(prev) != HASH_SIZE or len(digest) != HASH_SIZE or len(policy_digest) != HASH_SIZE:
        raise _hash_sizes(prev, digest, policy_digest)
    preimage = _ENTRY_PREIMAGE.pack(ENTRY_PREFIX, prev, digest, chain_seq, policy_digest)
    return EntryHash(hashlib.sha256(preimage).digest())


def seal_hash(seal_record_bytes: bytes) -> bytes:
    """Hash that links an emitter's seals: SHA-256(0x14 ‖ exact seal record bytes)."""
    return hashlib.sha256(SEAL_HASH_PREFIX + seal_record_bytes).digest()


def _lp(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def seal_message(
    emitter_id: str,
    key_id: str,
    topic: str,
    partition: int,
    first_seq: int,
    last_seq: int,
    merkle_root: bytes,
    prev_seal_hash: bytes,
) -> bytes:
    """The bytes an emitter signs for a seal (fixed layout, length-prefixed strings)."""
    return (
        SEAL_MESSAGE_PREFIX
        + _lp(emitter_id)
        + _lp(key_id)
        + _lp(topic)
        + struct.pack(">IQQ", partition, first_seq, last_seq)
        + merkle_root
        + prev_seal_hash
    )


def policy_digest_of(policy_bytes: bytes) -> bytes:
    """A policy set's digest: plain SHA-256 of the policy file's exact bytes."""
    return hashlib.sha256(policy_bytes).digest()
