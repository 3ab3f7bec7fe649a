"""Domain-separated SHA-256 digests for events, chain entries and seals (layouts in docs/integrity.md)."""

from __future__ import annotations

import hashlib
import struct

from lineage.ids import EntryHash, EventDigest

EVENT_PREFIX = b"\x10"
ENTRY_PREFIX = b"\x11"
GENESIS_PREFIX = b"\x12"
SEAL_MESSAGE_PREFIX = b"\x13"
SEAL_HASH_PREFIX = b"\x14"
ZERO_HASH = bytes(32)

_u64 = struct.Struct(">Q")


def sha256(data: bytes) -> bytes:
    """Plain SHA-256."""
    return hashlib.sha256(data).digest()


def event_digest(record_bytes: bytes) -> EventDigest:
    """Digest of an event's exact single-object-encoded bytes: SHA-256(0x10 ‖ bytes)."""
    return EventDigest(hashlib.sha256(EVENT_PREFIX + record_bytes).digest())


def genesis_hash(workflow_id: str) -> EntryHash:
    """The prev_hash of a workflow's first entry: SHA-256(0x12 ‖ UTF-8 workflow id)."""
    return EntryHash(hashlib.sha256(GENESIS_PREFIX + workflow_id.encode()).digest())


def entry_hash(prev: bytes, digest: bytes, chain_seq: int, policy_digest: bytes) -> EntryHash:
    """SHA-256(0x11 ‖ prev_hash ‖ event_digest ‖ u64be(chain_seq) ‖ policy_digest)."""
    return EntryHash(
        hashlib.sha256(ENTRY_PREFIX + prev + digest + _u64.pack(chain_seq) + policy_digest).digest()
    )


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
