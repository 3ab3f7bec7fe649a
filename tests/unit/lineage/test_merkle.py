"""Tests for RFC 6962 / RFC 9162 Merkle hashing, proofs and compact ranges."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage.merkle import (
    CompactRange,
    consistency_proof,
    consistency_proof_from_hashes,
    inclusion_proof,
    inclusion_proof_from_hashes,
    leaf_hash,
    node_hash,
    root,
    root_from_hashes,
    verify_consistency,
    verify_inclusion,
    verify_inclusion_hash,
)

# Known-answer vectors from google/certificate-transparency cpp/merkletree/merkle_tree_test.cc.
EMPTY = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [EMPTY] + [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
H96A2 = "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
H5F08 = "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"
H6B47 = "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
HBC1A = "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
HCA85 = "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"
HD37E = "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
HFAC5 = "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
H6E34 = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
H0EBC = "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"

# (0-based leaf index, tree size, audit path); the reference suite numbers leaves from 1.
PATH_VECTORS = [
    (0, 1, []),
    (0, 8, [H96A2, H5F08, H6B47]),
    (5, 8, [HBC1A, HCA85, HD37E]),
    (2, 3, [HFAC5]),
    (1, 5, [H6E34, H5F08, HBC1A]),
]
# (old size, new size, consistency proof).
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (1, 8, [H96A2, H5F08, H6B47]),
    (6, 8, [H0EBC, HCA85, HD37E]),
    (2, 5, [H5F08, HBC1A]),
]

DATA = [b"leaf-%d" % i for i in range(300)]
HASHES = [leaf_hash(d) for d in DATA]
PREFIX_ROOTS = [root_from_hashes(HASHES[:n]) for n in range(len(HASHES) + 1)]


def _h(hexes: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


def _flip(b: bytes, pos: int) -> bytes:
    return b[:pos] + bytes([b[pos] ^ 0x01]) + b[pos + 1 :]


def _ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _ref_mth(d: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH, transcribed recursively, independent of the module."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _ref_split(len(d))
    return hashlib.sha256(b"\x01" + _ref_mth(d[:k]) + _ref_mth(d[k:])).digest()


def _ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = _ref_split(len(d))
    if m < k:
        return [*_ref_path(m, d[:k]), _ref_mth(d[k:])]
    return [*_ref_path(m - k, d[k:]), _ref_mth(d[:k])]


def _ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b)."""
    if m == len(d):
        return [] if b else [_ref_mth(d)]
    k = _ref_split(len(d))
    if m <= k:
        return [*_ref_subproof(m, d[:k], b), _ref_mth(d[k:])]
    return [*_ref_subproof(m - k, d[k:], False), _ref_mth(d[:k])]


def test_hashes_use_rfc6962_domain_separation() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert (
        node_hash(b"L" * 32, b"R" * 32) == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()
    )
    assert leaf_hash(b"") != node_hash(b"", b"")


@pytest.mark.parametrize("size", range(9))
def test_root_matches_published_vectors(size: int) -> None:
    assert root(INPUTS[:size]) == ROOTS[size]
    assert root_from_hashes([leaf_hash(d) for d in INPUTS[:size]]) == ROOTS[size]


def test_empty_root_is_sha256_of_empty_string() -> None:
    assert root([]) == hashlib.sha256(b"").digest() == EMPTY


@pytest.mark.parametrize(("index", "size", "path"), PATH_VECTORS)
def test_inclusion_proof_matches_published_vectors(index: int, size: int, path: list[str]) -> None:
    assert inclusion_proof(index, INPUTS[:size]) == _h(path)
    assert verify_inclusion(INPUTS[index], index, size, _h(path), ROOTS[size])


@pytest.mark.parametrize(("index", "size", "path"), PATH_VECTORS)
def test_inclusion_vector_tampering_fails(index: int, size: int, path: list[str]) -> None:
    proof, data, good_root = _h(path), INPUTS[index], ROOTS[size]
    for wrong_index in (index - 1, index + 1, index ^ 2):
        assert not verify_inclusion(data, wrong_index, size, proof, good_root)
    for wrong_size in (size * 2, size // 2):
        assert not verify_inclusion(data, index, wrong_size, proof, good_root)
    assert not verify_inclusion(b"WrongLeaf", index, size, proof, good_root)
    assert not verify_inclusion(data, index, size, proof, EMPTY)
    for j in range(len(proof)):
        assert not verify_inclusion(
            data, index, size, [*proof[:j], EMPTY, *proof[j + 1 :]], good_root
        )
        for pos in range(32):
            flipped = [*proof[:j], _flip(proof[j], pos), *proof[j + 1 :]]
            assert not verify_inclusion(data, index, size, flipped, good_root)
    for pos in range(32):
        assert not verify_inclusion(data, index, size, proof, _flip(good_root, pos))
    for extra in (b"", good_root):
        assert not verify_inclusion(data, index, size, [*proof, extra], good_root)
        assert not verify_inclusion(data, index, size, [extra, *proof], good_root)
    if proof:
        assert not verify_inclusion(data, index, size, proof[:-1], good_root)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_VECTORS)
def test_consistency_proof_matches_published_vectors(old: int, new: int, proof: list[str]) -> None:
    assert consistency_proof(old, INPUTS[:new]) == _h(proof)
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], _h(proof))


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY_VECTORS[1:])
def test_consistency_vector_tampering_fails(old: int, new: int, path: list[str]) -> None:
    proof, r1, r2 = _h(path), ROOTS[old], ROOTS[new]
    for wrong_old in (old - 1, old + 1, old ^ 2):
        assert not verify_consistency(wrong_old, new, r1, r2, proof)
    for wrong_new in (new * 2, new // 2):
        assert not verify_consistency(old, wrong_new, r1, r2, proof)
    assert not verify_consistency(old, new, r1, b"WrongRoot", proof)
    assert not verify_consistency(old, new, b"WrongRoot", r2, proof)
    assert not verify_consistency(old, new, r2, r1, proof)
    assert not verify_consistency(old, new, r1, r2, [])
    for j in range(len(proof)):
        assert not verify_consistency(old, new, r1, r2, [*proof[:j], EMPTY, *proof[j + 1 :]])
    for extra in (b"", proof[-1]):
        assert not verify_consistency(old, new, r1, r2, [*proof, extra])
    assert not verify_consistency(old, new, r1, r2, proof[:-1])
    assert not verify_consistency(old, new, r1, r2, [b"", *proof])
    assert not verify_consistency(old, new, r1, r2, [proof[0], *proof])


def test_consistency_edge_cases() -> None:
    assert verify_consistency(0, 0, EMPTY, EMPTY, [])
    assert verify_consistency(0, 8, EMPTY, ROOTS[8], [])
    assert verify_consistency(1, 1, ROOTS[1], ROOTS[1], [])
    assert not verify_consistency(0, 8, ROOTS[1], ROOTS[8], [])
    assert not verify_consistency(0, 0, EMPTY, EMPTY, [EMPTY])
    assert not verify_consistency(0, 1, EMPTY, ROOTS[1], [EMPTY])
    assert not verify_consistency(1, 1, ROOTS[1], ROOTS[1], [EMPTY])
    assert not verify_consistency(1, 1, ROOTS[1], ROOTS[2], [])
    assert not verify_consistency(1, 0, ROOTS[1], EMPTY, [])
    assert not verify_consistency(2, 1, ROOTS[2], ROOTS[1], [])
    assert not verify_consistency(1, 2, ROOTS[1], ROOTS[2], [])
    assert not verify_consistency(-1, 2, ROOTS[1], ROOTS[2], [])
    assert consistency_proof(0, INPUTS) == []
    assert consistency_proof(8, INPUTS) == []


def test_inclusion_rejects_bad_input_without_raising() -> None:
    assert not verify_inclusion(INPUTS[0], 0, 0, [], EMPTY)
    assert not verify_inclusion(INPUTS[0], 1, 1, [], ROOTS[1])
    assert not verify_inclusion(INPUTS[0], -1, 1, [], ROOTS[1])
    assert not verify_inclusion(INPUTS[0], 0, 1, [], ROOTS[1][:31])
    assert not verify_inclusion_hash(leaf_hash(INPUTS[0])[:31], 0, 1, [], ROOTS[1])
    assert verify_inclusion_hash(leaf_hash(INPUTS[0]), 0, 1, [], ROOTS[1])


def test_proof_builders_report_expected_and_found() -> None:
    with pytest.raises(ValueError, match=r"expected 0 <= index < 8, found 8"):
        inclusion_proof(8, INPUTS)
    with pytest.raises(ValueError, match=r"expected 0 <= index < 0, found 0"):
        inclusion_proof_from_hashes(0, [])
    with pytest.raises(ValueError, match=r"expected 0 <= old_size <= 8, found 9"):
        consistency_proof(9, INPUTS)
    with pytest.raises(ValueError, match=r"expected 0 <= old_size <= 8, found -1"):
        consistency_proof(-1, INPUTS)
    with pytest.raises(ValueError, match=r"leaf hash 1: expected 32 bytes, found 3"):
        root_from_hashes([EMPTY, b"abc"])
    with pytest.raises(ValueError, match=r"leaf hash 0: expected 32 bytes, found 0"):
        consistency_proof_from_hashes(1, [b"", EMPTY])


@pytest.mark.parametrize("size", range(1, 65))
def test_proofs_match_rfc_reference_for_small_trees(size: int) -> None:
    d = DATA[:size]
    assert root(d) == _ref_mth(d)
    for m in range(size):
        assert inclusion_proof(m, d) == _ref_path(m, d)
    for m in range(1, size + 1):
        assert consistency_proof(m, d) == _ref_subproof(m, d, True)


@pytest.mark.parametrize("size", range(1, 301))
def test_every_inclusion_proof_verifies(size: int) -> None:
    hashes, r = HASHES[:size], PREFIX_ROOTS[size]
    for index in range(size):
        proof = inclusion_proof_from_hashes(index, hashes)
        assert verify_inclusion(DATA[index], index, size, proof, r)
        assert not verify_inclusion(DATA[index], index, size, proof, PREFIX_ROOTS[size - 1])


@pytest.mark.parametrize("new", range(1, 300))
def test_every_consistency_pair_verifies(new: int) -> None:
    for old in range(new + 1):
        proof = consistency_proof_from_hashes(old, HASHES[:new])
        assert verify_consistency(old, new, PREFIX_ROOTS[old], PREFIX_ROOTS[new], proof)
        if old == 0:
            continue  # every tree extends the empty tree, whatever its root
        assert not verify_consistency(old, new, PREFIX_ROOTS[old - 1], PREFIX_ROOTS[new], proof)
        assert not verify_consistency(old, new, PREFIX_ROOTS[old], PREFIX_ROOTS[new + 1], proof)


@st.composite
def _tree_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, 300))
    return size, draw(st.integers(0, size - 1))


@settings(max_examples=300, deadline=None)
@given(_tree_and_index(), st.data())
def test_inclusion_any_flipped_byte_fails(tree: tuple[int, int], data: st.DataObject) -> None:
    size, index = tree
    proof = inclusion_proof_from_hashes(index, HASHES[:size])
    r, leaf = PREFIX_ROOTS[size], DATA[index]
    assert verify_inclusion(leaf, index, size, proof, r)
    pos = data.draw(st.integers(0, 31))
    assert not verify_inclusion(leaf, index, size, proof, _flip(r, pos))
    assert not verify_inclusion(_flip(leaf, pos % len(leaf)), index, size, proof, r)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        tampered = [*proof[:j], _flip(proof[j], pos), *proof[j + 1 :]]
        assert not verify_inclusion(leaf, index, size, tampered, r)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.data())
def test_consistency_any_pair_verifies_and_tampering_fails(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, new))
    proof = consistency_proof_from_hashes(old, HASHES[:new])
    r1, r2 = PREFIX_ROOTS[old], PREFIX_ROOTS[new]
    assert verify_consistency(old, new, r1, r2, proof)
    pos = data.draw(st.integers(0, 31))
    assert not verify_consistency(old, new, _flip(r1, pos), r2, proof)
    assert not verify_consistency(old, new, r1, _flip(r2, pos), proof)
    assert not verify_consistency(old, new, PREFIX_ROOTS[old - 1], r2, proof)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        tampered = [*proof[:j], _flip(proof[j], pos), *proof[j + 1 :]]
        assert not verify_consistency(old, new, r1, r2, tampered)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=80), st.data())
def test_arbitrary_leaves_round_trip(leaves: list[bytes], data: st.DataObject) -> None:
    assert root(leaves) == _ref_mth(leaves)
    cr = CompactRange()
    for d in leaves:
        cr.append(d)
    assert cr.root() == root(leaves)
    if leaves:
        index = data.draw(st.integers(0, len(leaves) - 1))
        proof = inclusion_proof(index, leaves)
        assert verify_inclusion(leaves[index], index, len(leaves), proof, root(leaves))
        old = data.draw(st.integers(0, len(leaves)))
        cproof = consistency_proof(old, leaves)
        assert verify_consistency(old, len(leaves), root(leaves[:old]), root(leaves), cproof)


def test_compact_range_matches_root_for_every_prefix_and_round_trips() -> None:
    cr = CompactRange()
    assert cr.size == 0 and cr.root() == EMPTY
    for n, h in enumerate(HASHES, start=1):
        cr.append_hash(h)
        assert cr.size == n
        assert cr.root() == PREFIX_ROOTS[n]
        blob = cr.to_bytes()
        assert len(blob) == 8 + 32 * n.bit_count()
        assert blob[:8] == n.to_bytes(8, "big")
        restored = CompactRange.from_bytes(blob)
        assert restored == cr and restored.size == n and restored.root() == PREFIX_ROOTS[n]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_compact_range_resumes_after_persisting(first: int, more: int) -> None:
    cr = CompactRange()
    for d in DATA[:first]:
        cr.append(d)
    resumed = CompactRange.from_bytes(cr.to_bytes())
    total = min(first + more, len(DATA))
    for d in DATA[first:total]:
        resumed.append(d)
    assert resumed.size == total
    assert resumed.root() == PREFIX_ROOTS[total]


def test_compact_range_frontier_layout() -> None:
    cr = CompactRange()
    for d in INPUTS[:7]:
        cr.append(d)
    hashes = [leaf_hash(d) for d in INPUTS]
    assert cr.frontier == (
        root_from_hashes(hashes[:4]),
        root_from_hashes(hashes[4:6]),
        hashes[6],
    )
    assert cr.to_bytes() == (7).to_bytes(8, "big") + b"".join(cr.frontier)
    assert CompactRange().to_bytes() == bytes(8)


def test_compact_range_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"expected at least 8 bytes, found 7"):
        CompactRange.from_bytes(bytes(7))
    with pytest.raises(ValueError, match=r"size 3: expected 72 bytes, found 40"):
        CompactRange.from_bytes((3).to_bytes(8, "big") + EMPTY)
    with pytest.raises(ValueError, match=r"size 0: expected 8 bytes, found 40"):
        CompactRange.from_bytes(bytes(8) + EMPTY)
    with pytest.raises(ValueError, match=r"leaf hash: expected 32 bytes, found 31"):
        CompactRange().append_hash(EMPTY[:31])


def test_large_tree_proofs_are_linear() -> None:
    n = 100_000
    hashes = [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]
    start = time.perf_counter()
    r = root_from_hashes(hashes)
    index, old = 77_777, 65_537
    proof = inclusion_proof_from_hashes(index, hashes)
    cproof = consistency_proof_from_hashes(old, hashes)
    elapsed = time.perf_counter() - start
    cr = CompactRange()
    for h in hashes:
        cr.append_hash(h)
    assert cr.root() == r
    assert verify_inclusion_hash(hashes[index], index, n, proof, r)
    assert verify_consistency(old, n, root_from_hashes(hashes[:old]), r, cproof)
    assert len(proof) == 17 and len(cproof) <= 2 * 17
    assert elapsed < 30, f"expected linear-time proofs for {n} leaves, took {elapsed:.1f}s"
