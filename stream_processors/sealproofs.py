"""All RFC 6962 inclusion paths of a small tree at once (O(n log n)), for seal batches."""

from __future__ import annotations

from lineage.merkle import EMPTY_ROOT, leaf_hash, node_hash


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _build(hashes: list[bytes], paths: list[list[bytes]], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return hashes[lo]
    k = _split(hi - lo)
    left = _build(hashes, paths, lo, lo + k)
    right = _build(hashes, paths, lo + k, hi)
    for i in range(lo, lo + k):
        paths[i].append(right)
    for i in range(lo + k, hi):
        paths[i].append(left)
    return node_hash(left, right)


def root_and_paths(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """Merkle root over raw leaf data and every leaf's inclusion path (leaf to root order)."""
    if not leaves:
        return EMPTY_ROOT, []
    hashes = [leaf_hash(leaf) for leaf in leaves]
    paths: list[list[bytes]] = [[] for _ in leaves]
    return _build(hashes, paths, 0, len(hashes)), paths
