"""The entry-hash and Merkle node preimages, pinned to the spec, and the column verifier's trees.

The known answers come from the spec (docs/integrity.md, docs/evidence-bundle.md) and from the
RFC 6962 vectors of google/certificate-transparency, not from this code's output. The column path
(``lineage.verify.columns``) folds whole levels of a seal's or a log's tree; the property tests
check those folds give the trees of ``lineage.merkle`` on random leaves.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage import hashing, merkle
from lineage.model import Seal
from lineage.verify import columns

hash32 = st.binary(min_size=32, max_size=32)
u64 = st.integers(min_value=0, max_value=2**64 - 1)

# docs/integrity.md, "Workflow chains": the published test vectors.
EVENT_DIGEST_OF_EVENT = "6a4388df6c5d3ed00a988579e5c8526544fce4c9807bb7ae6d57cb1f3ff5b5ca"
GENESIS_WF1 = "d906a7aa578cfadc1d774a32c53a030422300916f2edf9c6378048625e0133bf"
ENTRY_WF1_SEQ0 = "dd3c561ba60d6885990faef469efbaa57063330009f0b218b90fb0921213856f"

# google/certificate-transparency merkle_tree_test.cc: leaf hash of the empty leaf, and the roots
# of the trees over the leaves "", 00 and "", 00, 10 (each an interior node).
LEAF_EMPTY = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
ROOT_2 = "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
ROOT_3 = "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"


def _spec_entry_hash(prev: bytes, digest: bytes, seq: int, policy: bytes) -> bytes:
    """H(0x11 ‖ prev_hash ‖ event_digest ‖ u64be(chain_seq) ‖ policy_digest), as the spec writes it."""
    return hashlib.sha256(b"\x11" + prev + digest + seq.to_bytes(8, "big") + policy).digest()


def test_entry_hash_matches_the_spec_vector() -> None:
    digest = hashing.event_digest(b"event")
    genesis = hashing.genesis_hash("wf-1")
    assert digest.hex() == EVENT_DIGEST_OF_EVENT
    assert genesis.hex() == GENESIS_WF1
    assert hashing.entry_hash(genesis, digest, 0, bytes(32)).hex() == ENTRY_WF1_SEQ0


def test_leaf_record_is_the_spec_layout() -> None:
    prev, digest, policy = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96))
    record = hashing.leaf_record(prev, digest, 0x0102030405060708, policy)
    # prev_hash (32) ‖ event_digest (32) ‖ u64be(chain_seq) (8) ‖ policy_digest (32)
    assert record == bytes(range(64)) + bytes.fromhex("0102030405060708") + bytes(range(64, 96))
    assert len(record) == hashing.LEAF_RECORD_SIZE == 104
    assert hashing.split_leaf_record(record) == (prev, digest, 0x0102030405060708, policy)


def test_the_chain_sequence_number_is_eight_bytes_big_endian() -> None:
    # the spec vector has chain_seq 0, which any integer encoding hashes alike; 1 tells them apart
    digest, genesis = hashing.event_digest(b"event"), hashing.genesis_hash("wf-1")
    expected = "850d686c1d509e3b8213628fac644448621fa34fa16e35811ddbcf2384dba7ec"
    assert hashing.entry_hash(genesis, digest, 1, bytes(32)).hex() == expected
    assert hashing.entry_hash(genesis, digest, 1, bytes(32)) != hashing.entry_hash(
        genesis, digest, 1 << 56, bytes(32)
    )


def test_node_hash_matches_the_rfc6962_vectors() -> None:
    empty, zero, ten = merkle.leaf_hash(b""), merkle.leaf_hash(b"\x00"), merkle.leaf_hash(b"\x10")
    assert empty.hex() == LEAF_EMPTY
    assert merkle.node_hash(empty, zero).hex() == ROOT_2
    assert merkle.node_hash(bytes.fromhex(ROOT_2), ten).hex() == ROOT_3
    assert merkle.node_hash(zero, empty) != merkle.node_hash(empty, zero)


def test_every_domain_prefix_is_distinct() -> None:
    prefixes = [
        merkle.LEAF_PREFIX,
        merkle.NODE_PREFIX,
        hashing.EVENT_PREFIX,
        hashing.ENTRY_PREFIX,
        hashing.GENESIS_PREFIX,
        hashing.SEAL_MESSAGE_PREFIX,
        hashing.SEAL_HASH_PREFIX,
    ]
    assert all(len(p) == 1 for p in prefixes)
    assert len(set(prefixes)) == len(prefixes)


@given(prev=hash32, digest=hash32, seq=u64, policy=hash32)
def test_entry_hash_is_the_spec_preimage(
    prev: bytes, digest: bytes, seq: int, policy: bytes
) -> None:
    record = hashing.leaf_record(prev, digest, seq, policy)
    assert hashing.entry_hash(prev, digest, seq, policy) == _spec_entry_hash(
        prev, digest, seq, policy
    )
    assert hashing.entry_hash_of_record(record) == _spec_entry_hash(prev, digest, seq, policy)
    assert hashing.split_leaf_record(record) == (prev, digest, seq, policy)


@given(left=hash32, right=hash32)
def test_node_hash_is_the_spec_preimage(left: bytes, right: bytes) -> None:
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


@settings(max_examples=60, deadline=None)
@given(entries=st.lists(hash32, min_size=1, max_size=70))
def test_the_column_log_tree_gives_every_signed_root(entries: list[bytes]) -> None:
    levels = columns._log_levels(entries)
    cr = merkle.CompactRange()
    for size, entry in enumerate(entries, 1):
        cr.append(entry)
        expected = merkle.root([*entries[:size]])
        assert columns._log_root(levels, size) == expected == cr.root()


def _seal(leaves: list[bytes], root: bytes) -> Seal:
    return Seal("emitter", "key", "topic", 0, 0, len(leaves) - 1, root, bytes(32), bytes(64))


def _group(seal: Seal, leaves: list[bytes], order: list[int]) -> columns._SealLeaves:
    paths = [b"".join(merkle.inclusion_proof_from_hashes(j, leaves)) for j in order]
    return columns._SealLeaves(seal, list(order), [leaves[j] for j in order], paths)


@settings(max_examples=60, deadline=None)
@given(
    digests=st.lists(hash32, min_size=1, max_size=40, unique=True),
    shuffle=st.randoms(use_true_random=False),
)
def test_the_column_seal_tree_is_the_merkle_tree(
    digests: list[bytes], shuffle: random.Random
) -> None:
    leaves = [merkle.leaf_hash(d) for d in digests]
    seal = _seal(leaves, merkle.root(digests))
    order = list(range(len(leaves)))
    columns._seal_tree(_group(seal, leaves, order))  # in order: the level-by-level fold
    shuffle.shuffle(order)
    columns._seal_tree(_group(seal, leaves, order))  # placed by index first
    columns._seal_paths(_group(seal, leaves, order[: max(1, len(order) // 2)]))  # PathMemo

    other = _seal(leaves, merkle.node_hash(seal.merkle_root, seal.merkle_root))
    with pytest.raises(ValueError, match="do not give its root"):
        columns._seal_tree(_group(other, leaves, list(range(len(leaves)))))
    if len(leaves) > 1:
        group = _group(seal, leaves, list(range(len(leaves))))
        first = bytearray(group.paths[0])
        first[0] ^= 1
        group.paths[0] = bytes(first)
        with pytest.raises(ValueError, match="a seal path differs"):
            columns._seal_tree(group)
        with pytest.raises(ValueError, match="does not lead to the seal's root"):
            columns._seal_paths(group)


@pytest.mark.parametrize("field", [0, 1, 3])
@pytest.mark.parametrize("size", [31, 33])
def test_a_hash_of_another_size_is_refused_not_padded(field: int, size: int) -> None:
    args: list[Any] = [bytes(32), bytes(32), 7, bytes(32)]
    args[field] = bytes(size)
    with pytest.raises(ValueError, match=f"expected 32 bytes each, found .*{size}"):
        hashing.entry_hash(*args)
    with pytest.raises(ValueError, match=f"expected 32 bytes each, found .*{size}"):
        hashing.leaf_record(*args)


@given(
    data=st.lists(st.binary(max_size=80), max_size=20),
    pairs=st.lists(st.tuples(hash32, hash32), max_size=20),
)
def test_the_column_forms_hash_as_the_scalar_ones(
    data: list[bytes], pairs: list[tuple[bytes, bytes]]
) -> None:
    assert merkle.leaf_hashes(data) == [merkle.leaf_hash(d) for d in data]
    assert hashing.event_digests(data) == [hashing.event_digest(d) for d in data]
    lefts, rights = [left for left, _ in pairs], [right for _, right in pairs]
    assert merkle.node_hashes(lefts, rights) == [merkle.node_hash(a, b) for a, b in pairs]
    assert merkle.node_hashes(lefts, rights) == [
        hashlib.sha256(b"\x01" + a + b).digest() for a, b in pairs
    ]
    assert merkle.leaf_hashes(data) == [hashlib.sha256(b"\x00" + d).digest() for d in data]
    assert hashing.event_digests(data) == [hashlib.sha256(b"\x10" + d).digest() for d in data]
    with pytest.raises(ValueError):
        merkle.node_hashes(lefts, [*rights, bytes(32)])
