"""RFC 6962 / RFC 9162 Merkle tree hashing (SHA-256): roots, proofs, verifiers, compact ranges."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """Hash raw leaf data: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two child hashes into their parent: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def leaf_hashes(data: Iterable[bytes]) -> list[bytes]:
    """``leaf_hash`` of each item, in one list (no call per leaf: whole levels of a tree)."""
    sha256, prefix = hashlib.sha256, LEAF_PREFIX
    return [sha256(prefix + d).digest() for d in data]


def node_hashes(lefts: Iterable[bytes], rights: Iterable[bytes]) -> list[bytes]:
    """``node_hash`` of each (left, right) pair, in one list (no call per node: whole levels)."""
    sha256, prefix = hashlib.sha256, NODE_PREFIX
    return [
        sha256(prefix + left + right).digest() for left, right in zip(lefts, rights, strict=True)
    ]


def _split(size: int) -> int:
    """The largest power of two strictly smaller than ``size`` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def _check_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(leaf_hashes):
        if len(h) != HASH_SIZE:
            raise ValueError(f"leaf hash {i}: expected {HASH_SIZE} bytes, found {len(h)}")


def _subtree(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of leaf hashes[lo:hi] (non-empty), folding level by level, promoting odd nodes."""
    level = list(hashes[lo:hi])
    while len(level) > 1:
        paired = node_hashes(level[0:-1:2], level[1::2])
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def root_from_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle tree hash over already-hashed leaves; the empty tree hashes to SHA-256("")."""
    _check_hashes(leaf_hashes)
    return _subtree(leaf_hashes, 0, len(leaf_hashes)) if leaf_hashes else EMPTY_ROOT


def root(leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash (RFC 9162 MTH) over raw leaf data."""
    return root_from_hashes([leaf_hash(d) for d in leaves])


def inclusion_proof_from_hashes(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 PATH(index, D[n]) over already-hashed leaves, ordered leaf to root."""
    size = len(leaf_hashes)
    if not 0 <= index < size:
        raise ValueError(f"leaf index: expected 0 <= index < {size}, found {index}")
    _check_hashes(leaf_hashes)
    siblings: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append(_subtree(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            siblings.append(_subtree(leaf_hashes, lo, lo + k))
            lo += k
    siblings.reverse()
    return siblings


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 PATH(index, D[n]) over raw leaf data, ordered leaf to root."""
    return inclusion_proof_from_hashes(index, [leaf_hash(d) for d in leaves])


def consistency_proof_from_hashes(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 PROOF(old_size, D[n]) over already-hashed leaves; empty when old_size is 0 or n."""
    size = len(leaf_hashes)
    if not 0 <= old_size <= size:
        raise ValueError(f"old tree size: expected 0 <= old_size <= {size}, found {old_size}")
    _check_hashes(leaf_hashes)
    if old_size in (0, size):
        return []
    return consistency_nodes(old_size, size, lambda lo, hi: _subtree(leaf_hashes, lo, hi))


def consistency_nodes(old: int, new: int, subtree: Callable[[int, int], bytes]) -> list[bytes]:
    """RFC 9162 PROOF(old, D[new]) for 0 < old < new, with ``subtree(lo, hi)`` = MTH(D[lo:hi]).

    The one walk of the proof's nodes: callers differ only in how they get a subtree's hash
    (from every leaf, from a cached tree, from stored rows).
    """
    nodes: list[bytes] = []
    lo, hi, m, whole_old_root = 0, new, old, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            nodes.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            nodes.append(subtree(lo, lo + k))
            lo, m, whole_old_root = lo + k, m - k, False
    if not whole_old_root:
        nodes.append(subtree(lo, hi))
    nodes.reverse()
    return nodes


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 PROOF(old_size, D[n]) over raw leaf data."""
    return consistency_proof_from_hashes(old_size, [leaf_hash(d) for d in leaves])


def _all_hashes(*values: bytes) -> bool:
    return all(len(v) == HASH_SIZE for v in values)


def verify_inclusion_hash(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Check an inclusion proof for an already-hashed leaf (RFC 9162 2.1.3.2); never raises."""
    if not 0 <= index < size or not _all_hashes(leaf_hash, root, *proof):
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Check an inclusion proof for raw leaf data (RFC 9162 2.1.3.2); never raises."""
    return verify_inclusion_hash(leaf_hash(leaf), index, size, proof, root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check that a tree of ``new_size`` extends one of ``old_size`` (RFC 9162 2.1.4.2).

    Equal sizes need an empty proof and equal roots; an empty old tree needs an empty proof and
    ``old_root`` equal to SHA-256(""). Returns False, never raises, on any bad input.
    """
    if not 0 <= old_size <= new_size or not _all_hashes(old_root, new_root, *proof):
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class PathMemo:
    """RFC 9162 inclusion checks against one root, remembering every node already proven.

    A node is identified by its position (index at its level, levels climbed); once a path has
    led to the root, a later path reaching a known node with the same node hash *and* the same
    remaining siblings is proven without hashing further. Same answers as
    ``verify_inclusion_hash``, with about two hashes per leaf instead of log2(size).
    """

    __slots__ = ("_nodes", "root", "size")

    def __init__(self, size: int, root: bytes) -> None:
        """Prove paths against the tree of ``size`` leaves whose hash is ``root``."""
        self.size = size
        self.root = root
        self._nodes: dict[int, tuple[bytes, tuple[bytes, ...]]] = {}

    def verify(self, leaf_hash: bytes, index: int, proof: Sequence[bytes]) -> bool:
        """Whether ``proof`` leads from ``leaf_hash`` at ``index`` to the root; never raises."""
        if not 0 <= index < self.size or len(leaf_hash) != HASH_SIZE:
            return False
        path = proof if type(proof) is tuple else tuple(proof)
        nodes = self._nodes
        node = node_hash
        fn, sn, r, level = index, self.size - 1, leaf_hash, 0
        climbed: list[tuple[int, bytes, int]] = []
        ok = False
        for k, p in enumerate(path, 1):
            if sn == 0 or len(p) != HASH_SIZE:
                return False
            if fn & 1 or fn == sn:
                r = node(p, r)
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
                    level += 1
            else:
                r = node(r, p)
            fn >>= 1
            sn >>= 1
            level += 1
            position = fn << 7 | level
            known = nodes.get(position)
            if known is not None:
                ok = known[0] == r and known[1] == path[k:]
                break
            climbed.append((position, r, k))
        else:
            ok = sn == 0 and r == self.root
        if ok:
            for position, h, at in climbed:
                nodes[position] = (h, path[at:])
        return ok


class CompactRange:
    """Incremental Merkle tree appender keeping only the O(log n) frontier of perfect subtrees.

    Serialized layout (``to_bytes``): the tree size as an 8-byte big-endian unsigned integer,
    then one 32-byte hash per set bit of the size, largest (leftmost) subtree first.
    """

    __slots__ = ("_frontier", "_size")

    def __init__(self) -> None:
        """Start an empty range (size 0)."""
        self._size = 0
        self._frontier: list[bytes] = []

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def frontier(self) -> tuple[bytes, ...]:
        """Roots of the perfect subtrees covering the leaves, left to right."""
        return tuple(self._frontier)

    def append(self, data: bytes) -> None:
        """Append a leaf given its raw data."""
        self.append_hash(leaf_hash(data))

    def append_hash(self, leaf_hash: bytes) -> None:
        """Append a leaf given its hash SHA-256(0x00 || data)."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash: expected {HASH_SIZE} bytes, found {len(leaf_hash)}")
        if self._size == 2**64 - 1:
            raise ValueError(f"tree size: expected at most {2**64 - 1} leaves, found one more")
        h, s = leaf_hash, self._size
        while s & 1:
            h = node_hash(self._frontier.pop(), h)
            s >>= 1
        self._frontier.append(h)
        self._size += 1

    def root(self) -> bytes:
        """Merkle tree hash of all leaves appended so far."""
        if not self._frontier:
            return EMPTY_ROOT
        r = self._frontier[-1]
        for h in reversed(self._frontier[:-1]):
            r = node_hash(h, r)
        return r

    def to_bytes(self) -> bytes:
        """Serialize as 8-byte big-endian size followed by the frontier hashes, left to right."""
        return self._size.to_bytes(8, "big") + b"".join(self._frontier)

    @classmethod
    def from_bytes(cls, b: bytes) -> CompactRange:
        """Parse the ``to_bytes`` layout, checking the hash count matches the size's set bits."""
        if len(b) < 8:
            raise ValueError(f"compact range: expected at least 8 bytes, found {len(b)}")
        size = int.from_bytes(b[:8], "big")
        expected = 8 + HASH_SIZE * size.bit_count()
        if len(b) != expected:
            raise ValueError(
                f"compact range of size {size}: expected {expected} bytes, found {len(b)}"
            )
        cr = cls()
        cr._size = size
        cr._frontier = [bytes(b[i : i + HASH_SIZE]) for i in range(8, len(b), HASH_SIZE)]
        return cr

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._frontier == other._frontier

    __hash__ = None  # type: ignore[assignment]  # mutable: appending changes equality

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"
