"""The emitter's partitioner must pick the partition Kafka's Java default partitioner picks."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.partitioner import murmur2, partition_for

# Kafka clients/src/test/.../utils/UtilsTest.java testMurmur2.
KAFKA_UTILS_TEST = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]

# librdkafka src/rdmurmur2.c unit test (Java-compatible murmur2), as signed 32-bit values.
LIBRDKAFKA = [
    (b"kafka", -798503068),
    (b"giberish123456789", -1890243828),
    (b"1234", -1614185708),
    (b"234", -406844982),
    (b"34", -2026295078),
    (b"4", 1514888353),
    (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 2017611548),
    (b"reAmbleWillBeRemoved,ThePrePartThatIs", 1247982455),
    (b"eAmbleWillBeRemoved,ThePrePartThatIs", -521871202),
    (b"AmbleWillBeRemoved,ThePrePartThatIs", 1656271935),
    (b"", 275646681),
]


@pytest.mark.parametrize(("key", "expected"), KAFKA_UTILS_TEST + LIBRDKAFKA)
def test_murmur2_matches_kafka_java_values(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@pytest.mark.parametrize(("key", "expected"), KAFKA_UTILS_TEST + LIBRDKAFKA)
def test_partition_is_the_positive_hash_modulo_partitions(key: bytes, expected: int) -> None:
    # Utils.toPositive(murmur2(key)) % numPartitions
    for partitions in (1, 3, 12, 100):
        assert partition_for(key, partitions) == (expected & 0x7FFFFFFF) % partitions


def _i32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _java_murmur2(data: bytes) -> int:
    """Utils.murmur2 transcribed with Java semantics: signed bytes, int overflow, >>> shifts."""
    signed = [b - 256 if b > 127 else b for b in data]
    length = len(signed)
    m, r = 0x5BD1E995, 24
    h = _i32(0x9747B28C ^ length)
    for i in range(length // 4):
        i4 = i * 4
        k = _i32(
            (signed[i4] & 0xFF)
            + ((signed[i4 + 1] & 0xFF) << 8)
            + ((signed[i4 + 2] & 0xFF) << 16)
            + ((signed[i4 + 3] & 0xFF) << 24)
        )
        k = _i32(k * m)
        k ^= (k & 0xFFFFFFFF) >> r
        k = _i32(k * m)
        h = _i32(h * m)
        h = _i32(h ^ k)
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h = _i32(h ^ ((signed[tail + 2] & 0xFF) << 16))
    if rest >= 2:
        h = _i32(h ^ ((signed[tail + 1] & 0xFF) << 8))
    if rest >= 1:
        h = _i32(h ^ (signed[tail] & 0xFF))
        h = _i32(h * m)
    h = _i32(h ^ ((h & 0xFFFFFFFF) >> 13))
    h = _i32(h * m)
    h = _i32(h ^ ((h & 0xFFFFFFFF) >> 15))
    return h


def test_the_java_transcription_agrees_with_the_published_vectors() -> None:
    for key, expected in KAFKA_UTILS_TEST + LIBRDKAFKA:
        assert _java_murmur2(key) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=40).map(lambda b: bytes(x | 0x80 if i % 2 else x for i, x in enumerate(b)))
)
def test_bytes_above_0x7f_hash_like_java_signed_bytes(key: bytes) -> None:
    assert murmur2(key) == _java_murmur2(key)


def test_utf8_workflow_ids_hash_like_java() -> None:
    for text in ("wf-ü", "ワークフロー", "wf-\U0001f600-end"):
        key = text.encode()
        assert murmur2(key) == _java_murmur2(key)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=1, max_value=1000))
def test_partition_is_in_range_and_stable(key: bytes, partitions: int) -> None:
    p = partition_for(key, partitions)
    assert 0 <= p < partitions
    assert partition_for(key, partitions) == p
    assert -(2**31) <= murmur2(key) < 2**31


def test_workflow_ids_spread_evenly_over_partitions() -> None:
    partitions = 12
    n = 12_000
    counts = Counter(partition_for(f"wf-{i:06d}".encode(), partitions) for i in range(n))
    assert sorted(counts) == list(range(partitions))
    expected = n / partitions
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    # 11 degrees of freedom: p = 0.001 at 31.3; a broken hash lands far above.
    assert chi2 < 31.3, counts
    assert max(counts.values()) < 1.15 * expected
