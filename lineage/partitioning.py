"""Kafka's default (Java-compatible) murmur2 partitioner: which partition a workflow's events belong to.

The emitter uses it to address records, the processor to reject events outside their workflow's
partition, and the verifier to check that binding from signed checkpoints (docs/integrity.md).
"""

from __future__ import annotations

MAX_PARTITIONS = 2**31 - 1
"""Kafka counts partitions in a signed 32-bit integer."""


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (seed 0x9747b28c), as a signed 32-bit value."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[i * 4 : i * 4 + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length & 3
    tail = n4 * 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    if isinstance(partitions, bool) or not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partition count: expected 1..{MAX_PARTITIONS}, found {partitions!r}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def workflow_partition(workflow_id: str, partitions: int) -> int:
    """The one partition whose log may hold ``workflow_id``'s chain: its key is the UTF-8 id."""
    return partition_for(workflow_id.encode("utf-8"), partitions)
