"""One workflow, one chain: the processor refuses events outside their workflow's partition."""

from __future__ import annotations

import re

from lineage import binding, note
from lineage.model import QuarantineReason, ViolationType
from lineage.partitioning import workflow_partition
from stream_processors.pipeline import PipelineConfig
from tests.support.events import SimEmitter, make_pipeline, registry_for, run, to_records

PARTITIONS = 4


def _workflow_in(partition: int) -> str:
    return next(
        f"wf-{i}" for i in range(1000) if workflow_partition(f"wf-{i}", PARTITIONS) == partition
    )


def test_same_workflow_from_genesis_in_two_partitions_is_chained_only_in_its_own() -> None:
    wf = _workflow_in(1)
    home = SimEmitter("svc-a", "1", partition=1)
    stray = SimEmitter("svc-a", "1", partition=2, keypair=(home.signer, home.record))
    registry = registry_for(home)
    config = PipelineConfig(partitions=PARTITIONS)

    own = make_pipeline(registry, config=config, partition=1)
    ok = run(own, to_records(home.chain(wf, 3), partition=1)).outputs
    assert [e.chain_seq for e in ok.entries] == [0, 1, 2]
    assert not ok.quarantine and not ok.violations

    other = make_pipeline(registry, config=config, partition=2)
    bad = run(other, to_records(stray.chain(wf, 3), partition=2)).outputs
    assert bad.entries == []
    assert [q.reason_code for q in bad.quarantine] == [QuarantineReason.WRONG_PARTITION] * 3
    assert all(isinstance(q.reason_code, QuarantineReason) for q in bad.quarantine)
    assert {(v.violation_type, v.rule) for v in bad.violations} == {
        (ViolationType.DUPLICATE_CONFLICT, "partition-binding")
    }
    assert "belongs in partition 1 of 4" in bad.violations[0].explanation
    # CRITICAL: the workflow is contained, so the gate stops authorizing it.
    assert [c.workflow_id for c in bad.containments] == [wf]
    assert other.log.size == 0


def test_misplaced_event_does_not_break_the_seal_of_its_batch_neighbours() -> None:
    """The misplaced event is authentic: it is refused at admission, after its seal verified."""
    here = _workflow_in(0)
    elsewhere = _workflow_in(3)
    em = SimEmitter("svc-a", "1", partition=0, seal_every=3)
    msgs = em.event(here) + em.event(elsewhere) + em.event(here, parent_event_id="svc-a#1/0")
    out = run(
        make_pipeline(registry_for(em), config=PipelineConfig(partitions=PARTITIONS)),
        to_records(msgs),
    ).outputs
    assert [e.event_id for e in out.entries] == ["svc-a#1/0", "svc-a#1/2"]
    assert [q.reason_code for q in out.quarantine] == [QuarantineReason.WRONG_PARTITION]
    assert [v.violation_type for v in out.violations] == [ViolationType.DUPLICATE_CONFLICT]


def test_checkpoints_sign_the_partition_count() -> None:
    wf = _workflow_in(1)
    em = SimEmitter("svc-a", "1", partition=1)
    pl = make_pipeline(registry_for(em), config=PipelineConfig(partitions=PARTITIONS), partition=1)
    run(pl, to_records(em.chain(wf, 2), partition=1))
    cp = pl.maybe_checkpoint(force=True)
    assert cp is not None
    body = note.parse_checkpoint(binding.note_text(cp.note))
    assert body.extensions[0] == "partitions 4"
    assert body.extensions[1].startswith("findings 0 ")
    assert binding.signed_partitions(body) == PARTITIONS


def test_without_a_configured_count_nothing_is_refused_or_signed() -> None:
    wf = _workflow_in(1)
    em = SimEmitter("svc-a", "1", partition=2)
    pl = make_pipeline(registry_for(em), partition=2)
    out = run(pl, to_records(em.chain(wf, 2), partition=2)).outputs
    assert len(out.entries) == 2
    cp = pl.maybe_checkpoint(force=True)
    assert cp is not None
    lines = note.parse_checkpoint(binding.note_text(cp.note)).extensions
    assert [line.split(" ")[0] for line in lines] == ["findings"]


def test_every_quarantine_code_the_processor_raises_is_a_typed_reason() -> None:
    """Scan the stages for reason codes so a new one cannot be added without its type."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    sources = [*(root / "stream_processors").glob("*.py"), root / "lineage" / "codec.py"]
    codes: set[str] = set()
    for path in sources:
        text = path.read_text()
        codes |= set(re.findall(r'DecodeError\(\s*"([A-Z0-9_]+)"', text))
        codes |= set(re.findall(r'^\s*"([A-Z0-9_]+)",\n\s*"[a-z-]+",', text, re.M))
        codes |= set(re.findall(r'ViolationType\.[A-Z_]+,\s*"([A-Z0-9_]+)",\s*"[a-z-]+"', text))
    codes.discard("BAD_POLICY_STATE")  # state, never a quarantined record
    assert {"BAD_UTF8", "SEAL_INCOMPLETE", "KEY_MISMATCH", "ORPHAN_EVENT"} <= codes, (
        "the scan misses known codes: the patterns are stale"
    )
    assert codes <= set(QuarantineReason), codes - set(QuarantineReason)
    key_codes = {"UNKNOWN_KEY", "BAD_SIGNATURE"}  # KeyTrustError.code values, used as reasons
    assert key_codes <= set(QuarantineReason)
