"""Typed identifiers and digests, and UUIDv7 generation."""

from __future__ import annotations

import os
import time
import uuid
from typing import NewType

WorkflowId = NewType("WorkflowId", str)
EventId = NewType("EventId", str)
EmitterId = NewType("EmitterId", str)
KeyId = NewType("KeyId", str)
EventDigest = NewType("EventDigest", bytes)
EntryHash = NewType("EntryHash", bytes)
PolicyDigest = NewType("PolicyDigest", bytes)


def uuid7(unix_ms: int | None = None) -> str:
    """Return a new RFC 9562 UUIDv7 string (time-ordered)."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
