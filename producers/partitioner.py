"""Kafka's murmur2 partitioner, re-exported from the core (lineage.partitioning) for the emitter."""

from __future__ import annotations

from lineage.partitioning import murmur2, partition_for, workflow_partition

__all__ = ["murmur2", "partition_for", "workflow_partition"]
