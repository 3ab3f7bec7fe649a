"""Chain stage: link a workflow's entries by domain-separated hashes (pure, deterministic)."""

from __future__ import annotations

from lineage import hashing
from stream_processors.state import WorkflowState


def link(
    state: WorkflowState, event_digest: bytes, policy_digest: bytes
) -> tuple[int, bytes, bytes]:
    """Append one event to the workflow chain; returns (chain_seq, prev_hash, entry_hash)."""
    seq = state.next_seq
    prev = state.head
    entry = hashing.entry_hash(prev, event_digest, seq, policy_digest)
    state.head = entry
    state.next_seq = seq + 1
    return seq, prev, entry
