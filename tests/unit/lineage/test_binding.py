"""The signed partition binding: a chain counts only in its workflow's own partition log."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lineage import binding, note
from lineage.partitioning import murmur2, partition_for, workflow_partition
from lineage.verify import FailureKind, verify_bundle, verify_entries
from producers import partitioner
from tests.support.lineage_builder import PROCESSOR_SUBJECT, Dataset, build_dataset


@pytest.fixture(scope="module")
def bound() -> Dataset:
    return build_dataset(workflows=4, partitions=2)


@pytest.fixture(scope="module")
def unbound() -> Dataset:
    return build_dataset(workflows=4, partitions=2, bind_partitions=False)


def _resign(doc: dict[str, Any], data: Dataset, extensions: tuple[str, ...]) -> None:
    """Re-sign every checkpoint of the bundle with the trusted processor key and new partition
    lines (other extension lines are kept)."""
    for section in doc["logs"]:
        for cp in section["checkpoints"]:
            body = note.parse_checkpoint(binding.note_text(cp["note"]))
            kept = tuple(x for x in body.extensions if not x.startswith("partitions"))
            text = note.checkpoint_body(
                body.origin, body.size, body.root_hash, (*extensions, *kept)
            )
            cp["note"] = note.sign_note(text, PROCESSOR_SUBJECT, data.processor._private_key)


def test_the_core_partitioner_is_the_emitters() -> None:
    assert partitioner.partition_for is partition_for
    assert partitioner.murmur2 is murmur2
    assert workflow_partition("wf-0001", 8) == partition_for(b"wf-0001", 8)
    with pytest.raises(ValueError, match="partition count"):
        partition_for(b"x", 0)


def test_bound_bundle_verifies_without_a_binding_warning(bound: Dataset) -> None:
    for wf in bound.workflows:
        report = verify_bundle(bound.bundle(wf), registry=bound.registry)
        assert report.ok, report.failure
        assert not [w for w in report.warnings if "partition binding" in w]


def test_older_checkpoints_without_a_binding_verify_with_a_warning(unbound: Dataset) -> None:
    report = verify_bundle(unbound.bundle(unbound.workflows[0]), registry=unbound.registry)
    assert report.ok, report.failure
    assert any(w.startswith(binding.NOT_SIGNED) for w in report.warnings), report.warnings


def test_chain_in_the_wrong_partition_fails_even_when_everything_else_is_genuine(
    unbound: Dataset,
) -> None:
    """An older processor chained the workflow where its emitter put it; the new binding names
    another partition: the bundle proves a chain, but not the workflow's one chain."""
    wf = unbound.workflows[0]
    doc = copy.deepcopy(unbound.bundle(wf))
    partition = doc["entries"][0]["partition"]
    count = next(n for n in range(partition + 1, 64) if workflow_partition(wf, n) != partition)
    _resign(doc, unbound, (binding.partitions_line(count),))
    report = verify_bundle(doc, registry=unbound.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.PARTITION_BINDING
    assert report.failure.where["workflow_id"] == wf
    assert report.failure.found == f"partition {partition}"


def test_binding_that_matches_verifies(unbound: Dataset) -> None:
    wf = unbound.workflows[0]
    doc = copy.deepcopy(unbound.bundle(wf))
    partition = doc["entries"][0]["partition"]
    count = next(n for n in range(partition + 1, 64) if workflow_partition(wf, n) == partition)
    _resign(doc, unbound, ("opaque-extension 1", binding.partitions_line(count)))
    report = verify_bundle(doc, registry=unbound.registry)
    assert report.ok, report.failure


@pytest.mark.parametrize(
    "lines",
    [
        ("partitions 0",),
        ("partitions 08",),
        ("partitions 4294967296",),
        ("partitions 2", "partitions 2"),
    ],
)
def test_malformed_bindings_fail(unbound: Dataset, lines: tuple[str, ...]) -> None:
    doc = copy.deepcopy(unbound.bundle(unbound.workflows[0]))
    _resign(doc, unbound, lines)
    report = verify_bundle(doc, registry=unbound.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.PARTITION_BINDING


def test_a_later_checkpoint_may_not_drop_the_binding() -> None:
    origin = "lineage.local/lineage.events/1"
    cps = [
        note.Checkpoint(origin, 1, bytes(32), ("partitions 4",)),
        note.Checkpoint(origin, 2, bytes(32)),
    ]
    with pytest.raises(binding.BindingError, match="drops"):
        binding.log_binding(1, cps)
    with pytest.raises(binding.BindingError, match="outside"):
        binding.log_binding(5, cps[:1])


def test_stored_entries_in_the_wrong_partition_fail(unbound: Dataset) -> None:
    """verify --clickhouse: the stored log's checkpoints sign a count the rows do not meet."""
    p = 1
    entries = unbound.partition_entries(p)
    wf = entries[0].workflow_id
    count = next(n for n in range(p + 1, 64) if workflow_partition(wf, n) != p)
    checkpoints = []
    for cp in unbound.partition_checkpoints(p):
        text = note.checkpoint_body(
            cp.origin, cp.tree_size, cp.root_hash, (binding.partitions_line(count),)
        )
        signed = note.sign_note(text, PROCESSOR_SUBJECT, unbound.processor._private_key)
        checkpoints.append(
            type(cp)(cp.origin, cp.partition, cp.tree_size, cp.root_hash, signed, cp.key_name, 0)
        )
    report = verify_entries({p: entries}, checkpoints, registry=unbound.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.PARTITION_BINDING
    honest = verify_entries(
        {p: entries}, unbound.partition_checkpoints(p), registry=unbound.registry
    )
    assert honest.ok and any(binding.NOT_SIGNED in w for w in honest.warnings)


def test_stored_bound_entries_verify(bound: Dataset) -> None:
    report = verify_entries(
        {p: bound.partition_entries(p) for p in range(bound.partitions)},
        bound.checkpoints,
        registry=bound.registry,
    )
    assert report.ok, report.failure
    assert not [w for w in report.warnings if "partition binding" in w]
