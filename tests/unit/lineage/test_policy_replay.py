"""Policy decisions are provable: the verifier re-runs every recorded decision with Cedar."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from lineage import binding, note
from lineage.bundle import FORMAT_V1
from lineage.model import Decision, ExecutionEvent
from lineage.policy import REQUEST_ATTRIBUTE, PolicySet, parse_request
from lineage.policy_replay import (
    POLICY_DECISION_MISMATCH,
    ReplayError,
    load_policy_sets,
    policy_set_member,
    replay,
)
from lineage.verify import FailureKind, verify_bundle
from tests.support.lineage_builder import (
    POLICY_FILE,
    PROCESSOR_SUBJECT,
    Dataset,
    WorkflowShape,
    build_dataset,
)


def _flip(event: ExecutionEvent) -> ExecutionEvent:
    assert event.authorization is not None
    auth = dataclasses.replace(event.authorization, decision=Decision.DENY, determining_policies=())
    return dataclasses.replace(event, authorization=auth)


def _other_policies(event: ExecutionEvent) -> ExecutionEvent:
    assert event.authorization is not None
    auth = dataclasses.replace(
        event.authorization, determining_policies=("agents-call-external-apis",)
    )
    return dataclasses.replace(event, authorization=auth)


def _other_request(event: ExecutionEvent) -> ExecutionEvent:
    """The recorded request no longer is the one the input digest covers."""
    request = json.loads(event.attributes[REQUEST_ATTRIBUTE])
    request["context"]["step"] = 99
    text = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return dataclasses.replace(event, attributes={REQUEST_ATTRIBUTE: text})


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(workflows=3, partitions=1)


def _ok(data: Dataset, wf: str) -> Any:
    report = verify_bundle(data.bundle(wf), registry=data.registry)
    assert report.ok, report.failure
    return report


def test_genuine_decisions_are_re_run(data: Dataset) -> None:
    for wf in data.workflows:
        report = _ok(data, wf)
        assert report.proven.decisions_rerun == 2  # two authorize/execute steps
        assert report.to_json()["proven"]["decisions_rerun"] == 2
        assert not [w for w in report.warnings if "decision" in w]


@pytest.mark.parametrize(
    ("tamper", "found"),
    [
        (_flip, "DENY by lineage-demo []"),
        (_other_policies, "['agents-call-external-apis']"),
    ],
)
def test_a_decision_that_policy_did_not_make_fails(tamper: Any, found: str) -> None:
    """The gate's key is genuine and everything is sealed, chained and checkpointed: only
    re-running the decision shows that the policy set it names decided otherwise."""
    data = build_dataset(workflows=2, partitions=1, shapes={0: WorkflowShape(tamper=tamper)})
    report = verify_bundle(data.bundle(data.workflows[0]), registry=data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.POLICY_DECISION_MISMATCH
    assert report.failure.expected == "ALLOW by lineage-demo ['agents-call-tools']"
    assert report.failure.found.endswith(found)
    assert report.exit_code == 1
    assert verify_bundle(data.bundle(data.workflows[1]), registry=data.registry).ok


def test_a_recorded_request_the_input_digest_does_not_cover_fails() -> None:
    data = build_dataset(
        workflows=1, partitions=1, shapes={0: WorkflowShape(tamper=_other_request)}
    )
    report = verify_bundle(data.bundle(data.workflows[0]), registry=data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.POLICY_DECISION_MISMATCH
    assert "input digest" in report.failure.message


def test_a_genuine_deny_is_re_run_too() -> None:
    data = build_dataset(workflows=1, partitions=1, shapes={0: WorkflowShape(denied=True)})
    report = verify_bundle(data.bundle(data.workflows[0]), registry=data.registry)
    assert report.ok, report.failure
    assert report.proven.decisions_rerun == 2


def test_bundle_without_the_policy_set_fails(data: Dataset) -> None:
    doc = copy.deepcopy(data.bundle(data.workflows[0]))
    doc["policies"] = []
    report = verify_bundle(doc, registry=data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.POLICY_SET_MISSING
    assert report.failure.expected == data.policy.digest_hex


def test_a_changed_policy_set_is_another_set(data: Dataset) -> None:
    """Swapping in a policy set that allows everything changes its digest: it proves nothing."""
    doc = copy.deepcopy(data.bundle(data.workflows[0]))
    toml, cedar = data.policy_files
    doc["policies"] = [policy_set_member(toml, cedar + b"\n// edited\n")]
    report = verify_bundle(doc, registry=data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.POLICY_SET_MISSING


def test_downgrading_to_v1_does_not_hide_findings_or_decisions(data: Dataset) -> None:
    doc = copy.deepcopy(data.bundle(data.workflows[0]))
    doc["format"] = FORMAT_V1
    del doc["policies"], doc["findings"]
    report = verify_bundle(doc, registry=data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.FINDINGS_MISMATCH


def test_v1_bundles_of_older_evidence_still_verify_with_warnings() -> None:
    """Evidence from before this change: checkpoints without extension lines, decisions without
    requests, a v1 bundle. It verifies; the report says what it cannot show."""
    data = build_dataset(
        workflows=1,
        steps=1,
        partitions=1,
        bind_partitions=False,
        shapes={0: WorkflowShape(tamper=_without_request)},
    )
    doc = copy.deepcopy(data.bundle(data.workflows[0]))
    for section in doc["logs"]:
        for cp in section["checkpoints"]:
            body = note.parse_checkpoint(binding.note_text(cp["note"]))
            text = note.checkpoint_body(body.origin, body.size, body.root_hash)
            cp["note"] = note.sign_note(text, PROCESSOR_SUBJECT, data.processor._private_key)
    doc["format"] = FORMAT_V1
    del doc["policies"], doc["findings"]
    report = verify_bundle(doc, registry=data.registry)
    assert report.ok, report.failure
    joined = " | ".join(report.warnings)
    assert "partition binding not signed (older format)" in joined
    assert "findings not committed (older format)" in joined
    assert "recorded before requests were kept" in joined


def _without_request(event: ExecutionEvent) -> ExecutionEvent:
    return dataclasses.replace(event, attributes={})


def test_recorded_requests_must_be_canonical() -> None:
    text = '{"action":"a","context":{},"principal":"p","resource":null}'
    assert parse_request(text).principal == "p"
    for bad in [
        '{"action":"a", "context":{},"principal":"p","resource":null}',
        '{"action":"a","context":{"x":1.5},"principal":"p","resource":null}',
        '{"action":"a","context":{},"principal":"p"}',
        '{"action":"a","context":{"n":' + "9" * 5000 + '},"principal":"p","resource":null}',
        "[" * 100_000,
    ]:
        with pytest.raises(Exception, match="request"):
            parse_request(bad)


def test_policy_sets_load_by_their_own_digest() -> None:
    toml, cedar = PolicySet.files(POLICY_FILE)
    sets = load_policy_sets([policy_set_member(toml, cedar)])
    assert list(sets) == [PolicySet.load(POLICY_FILE).digest_hex]


def test_a_decision_record_without_its_authorization_is_a_mismatch_not_a_crash() -> None:
    """The model refuses such an event, but replay() takes decoded records: it must not trust that."""
    record = {"event_id": "e1", "authorization": None, "attributes": {REQUEST_ATTRIBUTE: "{}"}}
    with pytest.raises(ReplayError) as caught:
        replay(record, {})
    assert caught.value.kind == POLICY_DECISION_MISMATCH
    assert "carries no authorization" in str(caught.value)
