"""Checkpoint stage: the partition's append-only Merkle log of entry hashes and its signed notes."""

from __future__ import annotations

from collections.abc import Sequence

from lineage import merkle, note
from lineage.keys import Signer
from lineage.model import Checkpoint


def origin_for(base: str, topic: str, partition: int) -> str:
    """The log's C2SP origin line, one log per input partition."""
    return f"{base}/{topic}/{partition}"


class PartitionLog:
    """Incremental RFC 6962 log over chain entry hashes (leaf data = the 32-byte entry hash)."""

    def __init__(self, state: bytes = b"") -> None:
        self.range = merkle.CompactRange.from_bytes(state) if state else merkle.CompactRange()

    @property
    def size(self) -> int:
        return int(self.range.size)

    def append(self, entry_hash: bytes) -> int:
        index = self.size
        self.range.append(entry_hash)
        return index

    def to_bytes(self) -> bytes:
        return bytes(self.range.to_bytes())

    def sign(
        self,
        origin: str,
        signer: Signer,
        key_name: str,
        partition: int,
        source_offset: int,
        extensions: Sequence[str] = (),
    ) -> Checkpoint:
        """A signed checkpoint of the current log; deterministic for a given size (Ed25519).

        ``extensions`` are C2SP checkpoint extension lines signed with the body, such as the
        partition binding (``lineage.binding.partitions_line``).
        """
        root = self.range.root()
        body = note.checkpoint_body(origin, self.size, root, extensions)
        text = note.sign_note(body, key_name, signer._private_key)
        return Checkpoint(
            origin=origin,
            partition=partition,
            tree_size=self.size,
            root_hash=root,
            note=text,
            key_name=key_name,
            source_offset=source_offset,
        )
