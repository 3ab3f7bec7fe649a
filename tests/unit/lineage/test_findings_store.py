"""The violations table is evidence too: verify --clickhouse rebuilds the signed findings logs."""

from __future__ import annotations

from typing import Any

import pytest

from lineage.bundle import BundleError
from lineage.verify import FailureKind, verify_bundle
from lineage_cli.evidence import export_bundle, verify_clickhouse
from sinks import rows, schema
from tests.support.lineage_builder import (
    CRITICAL_FORBIDDEN_POLICY,
    Dataset,
    WorkflowShape,
    build_dataset,
)

FORBIDDEN = "secrets:api-token"
"""wf 1 touches it: a CRITICAL finding under CRITICAL_FORBIDDEN_POLICY, so it is contained."""

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(
        workflows=3,
        partitions=2,
        shapes={0: WorkflowShape(denied=True), 1: WorkflowShape(resource=FORBIDDEN)},
        policy_file=CRITICAL_FORBIDDEN_POLICY,
    )


@pytest.fixture
def db(chdb_client: Any, ch_database: str, data: Dataset) -> str:
    schema.migrate(chdb_client, ch_database)
    for table, columns, to_row, items in [
        ("lineage_entries", rows.ENTRY_COLUMNS, rows.entry_row, data.entries),
        ("checkpoints", rows.CHECKPOINT_COLUMNS, rows.checkpoint_row, data.checkpoints),
        ("violations", rows.VIOLATION_COLUMNS, rows.violation_row, data.violation_records),
    ]:
        chdb_client.insert(
            table, [to_row(x) for x in items], column_names=list(columns), database=ch_database
        )
    return ch_database


def test_clean_store_verifies_and_exports_findings(
    chdb_client: Any, db: str, data: Dataset
) -> None:
    report = verify_clickhouse(chdb_client, db, registry=data.registry)
    assert report.ok, report.failure
    for wf in data.workflows[:2]:
        bundle = export_bundle(chdb_client, db, wf, data.registry, policy_sets=[data.policy_files])
        assert bundle == data.bundle(wf)
        verified = verify_bundle(bundle, registry=data.registry)
        assert verified.ok, verified.failure
        assert verified.proven.findings


def test_deleted_violation_fails(chdb_client: Any, db: str, data: Dataset) -> None:
    victim = next(v for v in data.violation_records if v.workflow_id == data.workflows[1])
    chdb_client.command(
        f"ALTER TABLE {db}.violations DELETE WHERE violation_id = '{victim.violation_id}' "
        "SETTINGS mutations_sync = 1"
    )
    report = verify_clickhouse(chdb_client, db, registry=data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.FINDINGS_MISMATCH
    assert report.failure.where["partition"] == victim.source_partition


def test_edited_violation_fails(chdb_client: Any, db: str, data: Dataset) -> None:
    victim = data.violation_records[0]
    chdb_client.command(
        f"ALTER TABLE {db}.violations UPDATE explanation = 'nothing to see' "
        f"WHERE violation_id = '{victim.violation_id}' SETTINGS mutations_sync = 1"
    )
    report = verify_clickhouse(chdb_client, db, registry=data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.FINDINGS_MISMATCH


def test_export_proves_against_checkpoints_whose_findings_are_stored(
    chdb_client: Any, db: str, data: Dataset
) -> None:
    """A sink that has stored a checkpoint before the violations it covers: export falls back
    to an older checkpoint (or says to retry), never to a bundle that cannot verify."""
    from lineage_cli.evidence import findings_behind

    assert findings_behind(chdb_client, db) == 0
    newest = max(data.violation_records, key=lambda v: int(v.violation_id.rsplit("-", 1)[1]))
    chdb_client.command(
        f"ALTER TABLE {db}.violations DELETE WHERE violation_id = '{newest.violation_id}' "
        "SETTINGS mutations_sync = 1"
    )
    assert findings_behind(chdb_client, db) == 1
    exported = 0
    for wf in data.workflows:
        try:
            bundle = export_bundle(
                chdb_client, db, wf, data.registry, policy_sets=[data.policy_files]
            )
        except BundleError as exc:
            assert "not yet covered by a signed checkpoint" in str(exc), exc
            continue
        report = verify_bundle(bundle, registry=data.registry)
        assert report.ok, report.failure
        exported += 1
    assert exported >= 1
