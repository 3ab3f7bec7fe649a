"""Findings are evidence: a bundle of a workflow with violations cannot pass as clean."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from lineage import findings
from lineage.model import Severity, ViolationType
from lineage.verify import FailureKind, verify_bundle
from tests.support.lineage_builder import (
    CRITICAL_FORBIDDEN_POLICY,
    Dataset,
    WorkflowShape,
    build_dataset,
)

FORBIDDEN = "secrets:api-token"
"""wf 1 touches it: a CRITICAL finding under CRITICAL_FORBIDDEN_POLICY, so it is contained."""

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def data() -> Dataset:
    """wf 0 runs an action the gate denied (HIGH findings); wf 1 touches a forbidden resource
    (CRITICAL under the test policy: contained); wf 2 is clean. One partition: their findings
    share a log."""
    return build_dataset(
        workflows=3,
        partitions=1,
        shapes={0: WorkflowShape(denied=True), 1: WorkflowShape(resource=FORBIDDEN)},
        policy_file=CRITICAL_FORBIDDEN_POLICY,
    )


def _report(data: Dataset, doc: Doc) -> Any:
    return verify_bundle(doc, registry=data.registry)


def _fail(data: Dataset, doc: Doc) -> Any:
    report = _report(data, doc)
    assert report.failure is not None
    return report.failure


def test_findings_are_in_the_bundle_and_the_report(data: Dataset) -> None:
    wf = data.workflows[0]
    doc = data.bundle(wf)
    report = _report(data, doc)
    assert report.ok, report.failure
    listed = report.proven.findings
    assert listed and {f["type"] for f in listed} >= {ViolationType.DENIED_EXECUTION.value}
    stored = [v for v in data.violation_records if v.workflow_id == wf]
    assert [f["violation_id"] for f in listed] == [v.violation_id for v in stored]
    assert report.proven.contained_by is None
    assert report.to_json()["proven"]["findings"] == listed


def test_a_contained_workflow_is_reported_as_contained(data: Dataset) -> None:
    wf = data.workflows[1]
    report = _report(data, data.bundle(wf))
    assert report.ok, report.failure
    critical = [
        v for v in data.violation_records if v.workflow_id == wf and v.severity is Severity.CRITICAL
    ]
    assert critical and report.proven.contained_by == critical[0].violation_id
    types = {f["type"] for f in report.proven.findings}
    assert {"FORBIDDEN_RESOURCE", "CONTAINED_WORKFLOW"} <= types
    assert any("contained by" in c for c in report.claims)


def test_a_decision_sealed_by_the_runtime_fails_the_bundle_and_is_listed_in_the_store() -> None:
    """The processor records it (UNTRUSTED_AUTHORIZER, CRITICAL, contained); a bundle of that
    workflow is not evidence of an authorization (AUTHORIZER_ROLE); the stored log verifies
    and names the decision under "not proven"."""
    from lineage.verify import verify_entries

    data = build_dataset(workflows=1, partitions=1, shapes={0: WorkflowShape(runtime_decides=True)})
    wf = data.workflows[0]
    assert {v.violation_type for v in data.violation_records} >= {
        ViolationType.UNTRUSTED_AUTHORIZER,
        ViolationType.CONTAINED_WORKFLOW,
    }
    assert _fail(data, data.bundle(wf)).kind is FailureKind.AUTHORIZER_ROLE
    stored = verify_entries(
        {0: data.partition_entries(0)}, data.checkpoints, registry=data.registry
    )
    assert stored.ok, stored.failure
    assert any("not an authorizer" in g for g in stored.not_proven)


def test_clean_workflow_sharing_the_log_has_no_findings(data: Dataset) -> None:
    report = _report(data, data.bundle(data.workflows[2]))
    assert report.ok, report.failure
    assert report.proven.findings == []
    doc = data.bundle(data.workflows[2])
    assert doc["findings"]["tree_size"] == len(data.violation_records) > 0


@pytest.mark.parametrize("which", [0, -1])
def test_dropping_a_finding_fails(data: Dataset, which: int) -> None:
    doc = copy.deepcopy(data.bundle(data.workflows[1]))
    dropped = doc["findings"]["records"].pop(which)
    f = _fail(data, doc)
    assert f.kind is FailureKind.FINDINGS_MISMATCH
    assert f.where["findings_index"] == dropped["index"]


def test_a_clean_looking_bundle_of_a_contained_workflow_fails(data: Dataset) -> None:
    doc = copy.deepcopy(data.bundle(data.workflows[1]))
    doc["findings"]["records"] = []
    assert _fail(data, doc).kind is FailureKind.FINDINGS_MISMATCH
    doc["findings"] = None
    assert _fail(data, doc).kind is FailureKind.FINDINGS_MISMATCH
    del doc["findings"]
    assert _fail(data, doc).kind is FailureKind.UNUSABLE_INPUT  # a required v2 member


def test_hiding_the_workflows_leaves_fails(data: Dataset) -> None:
    """Replacing the workflow's leaves by another workflow's tag changes the signed root."""
    doc = copy.deepcopy(data.bundle(data.workflows[1]))
    raw = bytearray(base64.b64decode(doc["findings"]["leaves"]))
    other = findings.workflow_tag(data.workflows[2])
    for rec in doc["findings"]["records"]:
        i = rec["index"] * findings.LEAF_SIZE
        raw[i : i + 32] = other
    doc["findings"]["leaves"] = base64.b64encode(bytes(raw)).decode()
    doc["findings"]["records"] = []
    f = _fail(data, doc)
    assert f.kind is FailureKind.FINDINGS_MISMATCH
    assert "root" in f.message


def test_a_changed_finding_record_fails(data: Dataset) -> None:
    doc = copy.deepcopy(data.bundle(data.workflows[0]))
    rec = doc["findings"]["records"][0]
    raw = bytearray(base64.b64decode(rec["record"]))
    raw[-1] ^= 1
    rec["record"] = base64.b64encode(bytes(raw)).decode()
    f = _fail(data, doc)
    assert f.kind is FailureKind.FINDINGS_MISMATCH
    assert "hash to its leaf" in f.message


def test_a_truncated_findings_log_fails(data: Dataset) -> None:
    doc = copy.deepcopy(data.bundle(data.workflows[0]))
    raw = base64.b64decode(doc["findings"]["leaves"])
    doc["findings"]["leaves"] = base64.b64encode(raw[: -findings.LEAF_SIZE]).decode()
    assert _fail(data, doc).kind is FailureKind.FINDINGS_MISMATCH


def test_export_needs_every_finding_of_the_signed_log(data: Dataset) -> None:
    """A store missing a violation cannot produce a bundle (it would not verify)."""
    wf = data.workflows[0]
    p = data.workflow_entries(wf)[0].source_partition
    newest = data.partition_checkpoints(p)[-1]
    from lineage import binding, note

    signed = findings.signed_findings(note.parse_checkpoint(binding.note_text(newest.note)))
    assert signed is not None
    with pytest.raises(findings.FindingsError, match="lacks findings"):
        findings.bundle_member(wf, p, data.violation_records[1:], signed)


def test_stored_rows_rebuild_the_exact_records(data: Dataset) -> None:
    from sinks import rows

    for v in data.violation_records:
        row = list(rows.violation_row(v))
        row[-1] = v.event_time  # the table returns event_time as µs via toUnixTimestamp64Micro
        assert findings.finding_record(findings.violation_from_row(row)) == findings.finding_record(
            v
        )


def test_index_of_ids() -> None:
    assert findings.index_of("ab" * 16 + "-12") == 12
    assert findings.index_of("ab" * 16) is None
    assert findings.index_of("x-012") is None
    assert findings.index_of("x-١") is None


def test_published_vectors() -> None:
    """docs/findings.md test vectors."""
    assert (
        findings.workflow_tag("wf-1").hex()
        == "2ed08c905ec049710c54188bda8565c00a802a1001eb760f2bf0511374f0e5e0"
    )
    assert findings.findings_line(*findings.root_of([])) == (
        "findings 0 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    )
