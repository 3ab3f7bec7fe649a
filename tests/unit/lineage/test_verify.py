"""Offline bundle verification: a clean bundle verifies; every tamper is caught, named and located."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lineage import codec, hashing, merkle, note
from lineage.bundle import leaf_record
from lineage.keys import KeyRegistry, Role, Signer
from lineage.verify import (
    FailureKind,
    PathMemo,
    Report,
    checkpoint_vkeys,
    verify_bundle,
)
from lineage_cli.evidence import register
from tests.support.lineage_builder import (
    PROCESSOR_SUBJECT,
    Dataset,
    build_dataset,
    decode_event,
    make_seal,
    sign_checkpoint,
)

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset()


@pytest.fixture(scope="module")
def wf(data: Dataset) -> str:
    """A workflow whose entries are proven at two or more checkpoints (for the stale test)."""
    for wf in data.workflows:
        sizes = {e["inclusion"]["tree_size"] for e in data.bundle(wf)["entries"]}
        if len(sizes) >= 2:
            return wf
    raise AssertionError("the dataset has no workflow spanning two checkpoints")


@pytest.fixture
def doc(data: Dataset, wf: str) -> Doc:
    return copy.deepcopy(data.bundle(wf))


def _verify(data: Dataset, doc: Doc, **kw: Any) -> Report:
    kw.setdefault("registry", data.registry)
    return verify_bundle(json.loads(json.dumps(doc)), **kw)


def _at(doc: Doc, k: int) -> dict[str, Any]:
    e = doc["entries"][k]
    return {"entry": k, "chain_seq": e["chain_seq"], "event_id": e["event_id"]}


def _event(doc: Doc, k: int) -> bytes:
    return base64.b64decode(doc["entries"][k]["event"])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _rechain(doc: Doc, start: int) -> None:
    """What a forger does after changing entry ``start``: recompute every later hash and link."""
    entries = doc["entries"]
    prev = bytes.fromhex(entries[start]["prev_hash"])
    for k in range(start, len(entries)):
        e = entries[k]
        e["prev_hash"] = prev.hex()
        digest = bytes.fromhex(e["event_digest"])
        policy = bytes.fromhex(e["policy_digest"])
        prev = hashing.entry_hash(prev, digest, e["chain_seq"], policy)
        e["entry_hash"] = prev.hex()


def _forge(doc: Doc, k: int, signer: Signer, **changes: Any) -> bytes:
    """Change fields of event ``k``, re-seal it alone with ``signer`` and re-chain the rest."""
    event = decode_event(_event(doc, k))
    record = event.to_record()
    record.update(changes)
    forged = codec.load("execution_event").encode(record)
    digest = hashing.event_digest(forged)
    seal = make_seal(
        signer, event.emitter_id, event.partition, event.emitter_seq, [digest], hashing.ZERO_HASH
    )
    e = doc["entries"][k]
    e.update(
        event=_b64(forged),
        event_digest=digest.hex(),
        seal={"record": _b64(seal), "index": 0, "path": []},
    )
    _rechain(doc, k)
    return digest


def test_clean_bundle_verifies(data: Dataset, wf: str, doc: Doc) -> None:
    chain = data.workflow_entries(wf)
    events = [decode_event(e.event_bytes) for e in chain]
    report = _verify(data, doc)
    assert report.failure is None
    assert (report.ok, report.exit_code) == (True, 0)
    p = report.proven
    assert p.events == len(chain) == doc["entry_count"]
    assert p.workflows == p.completed_workflows == {wf}
    assert (p.first_event_us, p.last_event_us) == (events[0].event_time, events[-1].event_time)
    assert p.principals == {events[0].principal}
    assert p.agents == {events[0].agent_id}
    assert p.emitters == {"agent-runtime#i1", "policy-gate#g1"}
    seal_keys = {data.signers[x].key_id for x in p.emitters}
    vkey_name = "+".join(data.checkpoint_vkey.split("+", 2)[:2])
    assert p.keys == seal_keys | {vkey_name}
    assert p.policy_digests == {data.policy.digest.hex()}
    assert len(p.checkpoints) == len(doc["logs"][0]["checkpoints"])
    assert p.complete_as_of == [f"{doc['logs'][0]['origin']} size {doc['tail']['tree_size']}"]
    assert report.trust.anchored
    assert report.trust.describe() == (
        "seal keys: the registry given by the caller; "
        "checkpoint keys: processor keys of the registry given by the caller"
    )
    assert report.verdict.value == "VERIFIED"
    assert report.warnings == []


def test_every_workflow_verifies(data: Dataset) -> None:
    for wf in data.workflows:
        report = _verify(data, data.bundle(wf), trusted_checkpoint_vkeys=[data.checkpoint_vkey])
        assert report.ok, report.failure


def test_bundle_keys_are_information_never_trust(data: Dataset, doc: Doc) -> None:
    """Class 1: without keys named by the caller a consistent bundle is exit 3, never 0."""
    report = verify_bundle(doc)
    assert report.consistent and not report.ok
    assert (report.verdict.value, report.exit_code) == ("CONSISTENT_BUT_UNTRUSTED", 3)
    assert report.trust.describe() == (
        "seal keys: keys inside the bundle (information, not trust); "
        "checkpoint keys: keys inside the bundle (information, not trust)"
    )
    assert any(g.startswith("who signed:") for g in report.not_proven)


def test_a_bundle_forged_end_to_end_with_its_own_keys_is_not_verified(
    data: Dataset, doc: Doc
) -> None:
    """Class 1, the attack: every event re-sealed and every checkpoint re-signed by a forger."""
    forged = build_dataset(workflows=2, steps=1, seed=b"forger")
    bundle = forged.bundle(forged.workflows[0])
    assert verify_bundle(bundle).exit_code == 3
    vkey = forged.checkpoint_vkey
    assert verify_bundle(bundle, trusted_checkpoint_vkeys=[vkey]).exit_code == 3
    against_auditor = verify_bundle(bundle, registry=data.registry)
    assert against_auditor.exit_code == 1
    assert against_auditor.failure is not None
    assert against_auditor.failure.kind is FailureKind.CHECKPOINT_SIGNATURE
    # The forger's registry only checks consistency; the auditor's processor key still decides.
    mixed = verify_bundle(
        bundle, registry=forged.registry, trusted_checkpoint_vkeys=[data.checkpoint_vkey]
    )
    assert mixed.exit_code == 1


def test_flipped_byte_in_any_event_is_caught_where_it_is(data: Dataset, doc: Doc) -> None:
    for k in range(len(doc["entries"])):
        original = _event(doc, k)
        for pos in (0, 11, len(original) // 2, len(original) - 1):
            tampered = copy.deepcopy(doc)
            flipped = bytearray(original)
            flipped[pos] ^= 0x01
            tampered["entries"][k]["event"] = _b64(bytes(flipped))
            report = _verify(data, tampered)
            f = report.failure
            assert f is not None and report.exit_code == 1
            assert f.kind is FailureKind.EVENT_DIGEST_MISMATCH
            assert f.where == _at(doc, k)
            assert f.expected == doc["entries"][k]["event_digest"]
            assert f.found == hashlib.sha256(b"\x10" + bytes(flipped)).hexdigest()


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_flipped_byte_with_recomputed_digest_fails_the_seal(
    data: Dataset, doc: Doc, which: str
) -> None:
    k = {"first": 0, "middle": len(doc["entries"]) // 2, "last": len(doc["entries"]) - 1}[which]
    flipped = bytearray(_event(doc, k))
    flipped[flipped.index(b"user:") + 5] ^= 0x20  # user:alice -> user:Alice
    doc["entries"][k]["event"] = _b64(bytes(flipped))
    doc["entries"][k]["event_digest"] = hashing.event_digest(bytes(flipped)).hex()
    _rechain(doc, k)
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.SEAL_INCLUSION
    assert f.where == _at(doc, k)
    seal = codec.load("seal").decode_body(base64.b64decode(doc["entries"][k]["seal"]["record"]))
    assert f.expected == seal["merkle_root"].hex()


def test_changed_field_resigned_with_unregistered_key(data: Dataset, doc: Doc) -> None:
    k = len(doc["entries"]) // 2
    subject = decode_event(_event(doc, k)).emitter_id.split("#")[0]
    forger, forger_record = Signer.generate_ephemeral(subject, Role.EMITTER)
    _forge(doc, k, forger, resource="prod-db:payroll/salaries")
    doc["keys"]["keys"].append(KeyRegistry([forger_record]).to_json()["keys"][0])
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.UNKNOWN_KEY
    assert f.where == _at(doc, k)
    assert (f.expected, f.found) == ("a key in the registry", forger.key_id)


def test_forged_seal_with_self_asserted_keys_is_still_not_in_the_signed_log(
    data: Dataset, doc: Doc
) -> None:
    """Trusting the bundle's own seal keys, the processor's signed log still exposes the forgery."""
    k = 1
    forger, forger_record = Signer.generate_ephemeral("policy-gate", Role.AUTHORIZER)
    doc["keys"]["keys"].append(KeyRegistry([forger_record]).to_json()["keys"][0])
    _forge(doc, k, forger, principal="user:mallory")
    report = verify_bundle(doc, trusted_checkpoint_vkeys=[data.checkpoint_vkey])
    f = report.failure
    assert f is not None
    assert f.kind is FailureKind.LOG_INCLUSION
    assert f.where == _at(doc, k)


def test_removed_event(data: Dataset, doc: Doc) -> None:
    k = 4
    del doc["entries"][k]
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.CHAIN_SEQUENCE
    assert f.where == _at(doc, k)
    assert (f.expected, f.found) == (f"chain_seq {k}", f"chain_seq {k + 1}")


def test_inserted_replay_of_a_genuine_event(data: Dataset, doc: Doc) -> None:
    k = 3
    doc["entries"].insert(k, copy.deepcopy(doc["entries"][k - 1]))
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.CHAIN_SEQUENCE
    assert f.where == _at(doc, k)
    assert (f.expected, f.found) == (f"chain_seq {k}", f"chain_seq {k - 1}")


def test_inserted_new_event(data: Dataset, doc: Doc) -> None:
    """A new event spliced in with correct links is sealed by no registered key."""
    k = 5
    forger, _ = Signer.generate_ephemeral("agent-runtime", Role.EMITTER)
    doc["entries"].insert(k, copy.deepcopy(doc["entries"][k]))
    _forge(doc, k, forger, event_id="01959999-0000-7000-8000-000000000099")
    doc["entries"][k]["event_id"] = "01959999-0000-7000-8000-000000000099"
    for j in range(k + 1, len(doc["entries"])):
        doc["entries"][j]["chain_seq"] += 1
    _rechain(doc, k)
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.UNKNOWN_KEY
    assert f.where == {
        "entry": k,
        "chain_seq": k,
        "event_id": "01959999-0000-7000-8000-000000000099",
    }


def test_swapped_events(data: Dataset, doc: Doc) -> None:
    k = 2
    entries = doc["entries"]
    entries[k], entries[k + 1] = entries[k + 1], entries[k]
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.CHAIN_SEQUENCE
    assert f.where == _at(doc, k)
    assert (f.expected, f.found) == (f"chain_seq {k}", f"chain_seq {k + 1}")


def test_swapped_and_renumbered_events_break_the_links(data: Dataset, doc: Doc) -> None:
    k = 2
    entries = doc["entries"]
    entries[k], entries[k + 1] = entries[k + 1], entries[k]
    entries[k]["chain_seq"], entries[k + 1]["chain_seq"] = k, k + 1
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.CHAIN_LINK
    assert f.where == _at(doc, k)
    assert (f.expected, f.found) == (entries[k + 1]["prev_hash"], entries[k]["prev_hash"])


def test_truncated_tail_without_fixing_the_count(data: Dataset, doc: Doc) -> None:
    n = len(doc["entries"])
    del doc["entries"][-2:]
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.CHAIN_TRUNCATED
    assert f.where == {"workflow_id": doc["workflow_id"]}
    assert (f.expected, f.found) == (f"{n} entries", f"{n - 2} entries")


def test_truncated_tail_with_the_count_fixed(data: Dataset, doc: Doc) -> None:
    n = len(doc["entries"])
    tail = doc["tail"]
    del doc["entries"][-2:]
    doc["entry_count"] = n - 2
    last = doc["entries"][-1]
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.TAIL_PROOF_MISMATCH
    p, size = tail["partition"], tail["tree_size"]
    assert f.expected == f"partition {p} log index {last['log_index']} to size {size}"
    assert f.found == f"partition {p} log index {tail['log_index']} to size {size}"


def test_truncated_tail_by_a_dishonest_exporter(data: Dataset, wf: str) -> None:
    """Even a bundle rebuilt from the truncated chain shows the signed log holds its successor."""
    chain = data.workflow_entries(wf)
    from lineage.bundle import build_bundle

    doc = build_bundle(
        wf,
        chain[:-2],
        data.partition_leaves(),
        data.checkpoints,
        data.registry,
        data.checkpoint_vkey,
    )
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.CHAIN_TRUNCATED
    cut = chain[-2]
    assert f.where == {"partition": cut.source_partition, "log_index": cut.log_index}
    assert f.expected == f"no entry after chain_seq {cut.chain_seq - 1}"
    assert f.found == f"chain_seq {cut.chain_seq} at log index {cut.log_index}"


def test_forged_checkpoint_signature(data: Dataset, doc: Doc) -> None:
    log = doc["logs"][0]
    i = len(log["checkpoints"]) - 1
    text = log["checkpoints"][i]["note"]
    origin, _, root64 = text.split("\n")[:3]
    forged_root = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    log["checkpoints"][i]["note"] = text.replace(f"\n{root64}\n", f"\n{forged_root}\n", 1)
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.CHECKPOINT_SIGNATURE
    assert f.where == {"partition": log["partition"], "origin": origin, "checkpoint": i}
    name, kid = data.checkpoint_vkey.split("+")[:2]
    assert (f.expected, f.found) == (f"a valid signature by {name}+{kid}", "none that verifies")


def test_checkpoint_signed_by_an_untrusted_key(data: Dataset, doc: Doc) -> None:
    log = doc["logs"][0]
    impostor, _ = Signer.generate_ephemeral(PROCESSOR_SUBJECT, Role.PROCESSOR)
    text = log["checkpoints"][0]["note"]
    cp = note.parse_checkpoint(text[: text.index("\n\n") + 1])
    log["checkpoints"][0]["note"] = sign_checkpoint(impostor, cp.origin, cp.size, cp.root_hash)
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.CHECKPOINT_SIGNATURE
    assert f.where == {"partition": log["partition"], "origin": cp.origin, "checkpoint": 0}


def test_stale_checkpoint(data: Dataset, doc: Doc) -> None:
    sizes = sorted({e["inclusion"]["tree_size"] for e in doc["entries"]})
    k = next(k for k, e in enumerate(doc["entries"]) if e["log_index"] >= sizes[0])
    e = doc["entries"][k]
    e["inclusion"]["tree_size"] = sizes[0]
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.STALE_CHECKPOINT
    assert f.where == _at(doc, k)
    assert (f.expected, f.found) == (f"tree size > {e['log_index']}", f"tree size {sizes[0]}")


def test_inclusion_at_a_checkpoint_the_bundle_lacks(data: Dataset, doc: Doc) -> None:
    doc["entries"][0]["inclusion"]["tree_size"] += 1
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.MISSING_CHECKPOINT
    assert f.where == _at(doc, 0)


def test_bad_log_inclusion_path(data: Dataset, doc: Doc) -> None:
    k = 3
    path = doc["entries"][k]["inclusion"]["path"]
    path[-1] = hashlib.sha256(b"x").hexdigest()
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.LOG_INCLUSION
    assert f.where == _at(doc, k)


def test_checkpoint_inconsistent_with_an_earlier_one(data: Dataset, doc: Doc) -> None:
    """A processor key signing a second, different history (a fork) is caught by consistency."""
    log = doc["logs"][0]
    p = log["partition"]
    newest = log["checkpoints"][-1]["note"]
    size = note.parse_checkpoint(newest[: newest.index("\n\n") + 1]).size
    leaves = [leaf_record(e) for e in data.partition_entries(p)][:size]
    forked = [hashing.sha256(b"forked")] + [leaf_record_hash_of(x) for x in leaves[1:]]
    root = merkle.root(forked)
    log["checkpoints"][-1]["note"] = sign_checkpoint(data.processor, log["origin"], size, root)
    old = log["consistency"][-1]["old_size"]
    log["consistency"][-1]["path"] = [h.hex() for h in merkle.consistency_proof(old, forked)]
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.CHECKPOINT_INCONSISTENT
    assert f.where == {"partition": p, "origin": log["origin"], "tree_size": size}
    old_root = note.parse_checkpoint(
        log["checkpoints"][-2]["note"][: log["checkpoints"][-2]["note"].index("\n\n") + 1]
    ).root_hash
    assert f.expected == f"an append-only extension of size {old} root {old_root.hex()}"
    assert f.found == f"root {root.hex()} with no valid consistency proof"


def leaf_record_hash_of(record: bytes) -> bytes:
    return hashing.sha256(hashing.ENTRY_PREFIX + record)


def test_revoked_key(data: Dataset, doc: Doc) -> None:
    registry = KeyRegistry.from_json(data.registry.to_json())
    runtime = data.signers["agent-runtime#i1"]
    registry.revoke(runtime.key_id, 1, "key leaked")
    report = verify_bundle(doc, registry=registry)
    f = report.failure
    assert f is not None
    assert f.kind is FailureKind.REVOKED_KEY
    assert f.where == _at(doc, 0)
    assert (f.expected, f.found) == ("an unrevoked key", runtime.key_id)


def test_revoked_processor_key_trusts_no_checkpoint(data: Dataset, doc: Doc) -> None:
    registry = KeyRegistry.from_json(data.registry.to_json())
    registry.revoke(data.processor.key_id, 1, "retired")
    assert checkpoint_vkeys(registry) == []
    report = verify_bundle(doc, registry=registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.UNUSABLE_INPUT
    assert report.exit_code == 2


def test_event_whose_seal_is_missing(data: Dataset, doc: Doc) -> None:
    k = 6
    doc["entries"][k]["seal"] = None
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.MISSING_SEAL
    assert f.where == _at(doc, k)
    assert (f.expected, f.found) == ("a seal record", "none")


def test_seal_of_another_emitter(data: Dataset, doc: Doc) -> None:
    gate = next(
        k for k, e in enumerate(doc["entries"]) if "gate" in decode_event(_event(doc, k)).emitter_id
    )
    runtime = next(
        k
        for k, e in enumerate(doc["entries"])
        if k > gate and "runtime" in decode_event(_event(doc, k)).emitter_id
    )
    doc["entries"][gate]["seal"] = copy.deepcopy(doc["entries"][runtime]["seal"])
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.SEAL_MISMATCH
    assert f.where == _at(doc, gate)


def test_event_id_swapped_in_the_envelope(data: Dataset, doc: Doc) -> None:
    doc["entries"][2]["event_id"] = doc["entries"][3]["event_id"]
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.EVENT_ID_MISMATCH
    assert f.where == {"entry": 2, "chain_seq": 2, "event_id": doc["entries"][3]["event_id"]}


def test_entry_from_another_workflow(data: Dataset, wf: str, doc: Doc) -> None:
    other = next(w for w in data.workflows if w != wf)
    doc["workflow_id"] = other
    f = _verify(data, doc).failure
    assert f is not None
    assert f.kind is FailureKind.WORKFLOW_MISMATCH
    assert (f.expected, f.found) == (other, wf)


def test_expected_workflow(data: Dataset, wf: str, doc: Doc) -> None:
    report = _verify(data, doc, workflow_id="something-else")
    f = report.failure
    assert f is not None and report.exit_code == 1
    assert f.kind is FailureKind.UNEXPECTED_WORKFLOW
    assert (f.expected, f.found) == ("something-else", wf)
    assert report.to_json()["workflows"] == [wf]
    assert report.to_json()["expected_workflow"] == "something-else"


@pytest.mark.parametrize(
    "doc_text",
    [{"format": "lineage-evidence-bundle/v0"}, {"format": "lineage-evidence-bundle/v1"}, [1]],
)
def test_unusable_input_is_exit_code_2(data: Dataset, doc_text: Any) -> None:
    report = verify_bundle(doc_text, registry=data.registry)
    assert report.failure is not None
    assert report.failure.kind is FailureKind.UNUSABLE_INPUT
    assert report.exit_code == 2


@settings(max_examples=80, deadline=None)
@given(size=st.integers(1, 40), data=st.data())
def test_path_memo_agrees_with_the_reference_verifier(size: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(2, "big") for i in range(size)]
    root = merkle.root(leaves)
    memo = PathMemo(size, root)
    for _ in range(12):
        index = data.draw(st.integers(0, size - 1))
        path = merkle.inclusion_proof(index, leaves)
        tamper = data.draw(st.booleans())
        if path and tamper:
            j = data.draw(st.integers(0, len(path) - 1))
            path[j] = hashlib.sha256(path[j]).digest()
        claimed = data.draw(st.sampled_from([index, (index + 1) % size]))
        leaf = merkle.leaf_hash(leaves[index])
        expected = merkle.verify_inclusion_hash(leaf, claimed, size, path, root)
        assert memo.verify(leaf, claimed, path) == expected


# -- the command line --------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _write(tmp_path: Path, doc: Any, name: str = "b.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_cli_verifies_a_bundle(data: Dataset, doc: Doc, tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    data.registry.save(registry)
    result = CliRunner().invoke(
        _app(), ["verify", str(_write(tmp_path, doc)), "--registry", str(registry)]
    )
    assert result.exit_code == 0, result.output
    assert "VERIFIED" in result.output
    assert f"{doc['entry_count']} (exact bytes" in result.output


def test_cli_reports_the_first_failure(data: Dataset, doc: Doc, tmp_path: Path) -> None:
    del doc["entries"][4]
    result = CliRunner().invoke(
        _app(), ["verify", str(_write(tmp_path, doc)), "--checkpoint-key", data.checkpoint_vkey]
    )
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output
    assert "CHAIN_SEQUENCE" in result.output
    assert "expected: chain_seq 4" in result.output
    assert "found:    chain_seq 5" in result.output


def test_cli_json_report(data: Dataset, doc: Doc, tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["verify", str(_write(tmp_path, doc)), "--json"])
    assert result.exit_code == 3, result.output
    out = json.loads(result.output)
    assert (out["ok"], out["verdict"], out["exit_code"]) == (False, "CONSISTENT_BUT_UNTRUSTED", 3)
    assert out["proven"]["events"] == doc["entry_count"]
    assert out["workflows"] == [doc["workflow_id"]]
    assert out["trust"]["anchored"] is False
    assert "information, not trust" in out["trust"]["seal_keys"]


@pytest.mark.parametrize("text", ["not json at all", '{"format": "something/v9"}'])
def test_cli_unusable_input(tmp_path: Path, text: str) -> None:
    result = CliRunner().invoke(_app(), ["verify", str(_write(tmp_path, text)), "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.output)["failure"]["kind"] == "UNUSABLE_INPUT"


def test_cli_needs_a_file_or_clickhouse(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["verify"])
    assert result.exit_code == 2
    result = CliRunner().invoke(_app(), ["verify", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.output)["verdict"] == "UNUSABLE_INPUT"


def test_published_vectors_in_integrity_doc() -> None:
    """The test vectors printed in docs/integrity.md."""
    genesis = hashing.genesis_hash("wf-1")
    digest = hashing.event_digest(b"event")
    assert digest.hex() == "6a4388df6c5d3ed00a988579e5c8526544fce4c9807bb7ae6d57cb1f3ff5b5ca"
    assert genesis.hex() == "d906a7aa578cfadc1d774a32c53a030422300916f2edf9c6378048625e0133bf"
    assert hashing.entry_hash(genesis, digest, 0, bytes(32)).hex() == (
        "dd3c561ba60d6885990faef469efbaa57063330009f0b218b90fb0921213856f"
    )
    message = hashing.seal_message("svc#1", "ed25519:00", "t", 3, 0, 1, bytes(32), bytes(32))
    assert message == bytes.fromhex(
        "1300057376632331000a656432353531393a30300001740000000300000000000000000000000000000001"
    ) + bytes(64)


# -- issue 11: trust sources, reports that name what they verified, roles ----------------------


def test_cli_trust_file_names_the_keys(
    data: Dataset, doc: Doc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Class 1: LINEAGE_TRUST_FILE is a registry the auditor names in settings."""
    trust = tmp_path / "trusted.json"
    data.registry.save(trust)
    bundle = _write(tmp_path, doc)
    monkeypatch.delenv("LINEAGE_TRUST_FILE", raising=False)
    assert CliRunner().invoke(_app(), ["verify", str(bundle)]).exit_code == 3
    monkeypatch.setenv("LINEAGE_TRUST_FILE", str(trust))
    result = CliRunner().invoke(_app(), ["verify", str(bundle), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["trust"]["seal_keys"] == f"trust file {trust} (LINEAGE_TRUST_FILE)"
    assert out["trust"]["anchored"] is True


def test_cli_report_names_the_workflow_it_verified(data: Dataset, wf: str, tmp_path: Path) -> None:
    """Class 4: workflow B's bundle saved under A's name shows B, and --workflow A rejects it."""
    a, b = wf, next(x for x in data.workflows if x != wf)
    path = _write(tmp_path, data.bundle(b), name=f"{a}.json")
    registry = tmp_path / "registry.json"
    data.registry.save(registry)
    result = CliRunner().invoke(_app(), ["verify", str(path), "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    assert b in result.output
    assert f"{b} (1 completed)" in result.output
    result = CliRunner().invoke(
        _app(), ["verify", str(path), "--registry", str(registry), "--json"]
    )
    out = json.loads(result.output)
    assert out["workflows"] == out["proven"]["workflow_ids"] == [b]
    assert out["trust"]["seal_keys"] == f"auditor registry {registry}"
    assert out["proven"]["logs"][0]["tree_size"] == data.bundle(b)["tail"]["tree_size"]
    assert out["size_bytes"] == path.stat().st_size
    assert any("complete chain of" in c for c in out["claims"])
    assert any("witness" in g for g in out["not_proven"])
    result = CliRunner().invoke(
        _app(), ["verify", str(path), "--registry", str(registry), "--workflow", a, "--json"]
    )
    assert result.exit_code == 1
    out = json.loads(result.output)
    assert out["failure"]["kind"] == "UNEXPECTED_WORKFLOW"
    assert (out["failure"]["expected"], out["failure"]["found"]) == (a, b)


def test_cli_unreadable_registry_is_json_exit_2(doc: Doc, tmp_path: Path) -> None:
    """Class 4: even a registry that cannot be read gives a JSON report."""
    result = CliRunner().invoke(
        _app(),
        ["verify", str(_write(tmp_path, doc)), "--registry", str(tmp_path / "no.json"), "--json"],
    )
    assert result.exit_code == 2
    out = json.loads(result.output)
    assert (out["verdict"], out["failure"]["kind"]) == ("UNUSABLE_INPUT", "UNUSABLE_INPUT")
    assert "does not exist" in out["failure"]["message"]


def test_decision_sealed_by_the_runtime_key_is_not_an_authorization(
    data: Dataset, doc: Doc
) -> None:
    """Class 7: the runtime's emitter key seals an AUTHORIZATION_DECISION it claims to emit."""
    k = next(k for k, e in enumerate(doc["entries"]) if b"policy-gate" in _event(doc, k))
    event = decode_event(_event(doc, k))
    assert event.kind.value == "AUTHORIZATION_DECISION"
    runtime = data.signers["agent-runtime#i1"]
    record = event.to_record()
    record["emitter_id"] = "agent-runtime#i1"
    forged = codec.load("execution_event").encode(record)
    digest = hashing.event_digest(forged)
    seal = make_seal(
        runtime, "agent-runtime#i1", event.partition, event.emitter_seq, [digest], bytes(32)
    )
    doc["entries"][k].update(
        event=_b64(forged),
        event_digest=digest.hex(),
        seal={"record": _b64(seal), "index": 0, "path": []},
    )
    _rechain(doc, k)
    report = _verify(data, doc)
    f = report.failure
    assert f is not None and report.exit_code == 1
    assert f.kind is FailureKind.AUTHORIZER_ROLE
    assert f.where == _at(doc, k)
    assert (f.expected, f.found) == (
        "a seal by an authorizer key",
        f"{runtime.key_id} (role emitter)",
    )


def test_decision_by_a_key_registered_as_emitter_fails(data: Dataset, doc: Doc) -> None:
    """Class 7: the genuine gate key, registered with role emitter, cannot authorize."""
    registry_doc = data.registry.to_json()
    gate = data.signers["policy-gate#g1"].key_id
    for key in registry_doc["keys"]:
        if key["key_id"] == gate:
            key["role"] = "emitter"
    report = verify_bundle(doc, registry=KeyRegistry.from_json(registry_doc))
    assert report.failure is not None
    assert report.failure.kind is FailureKind.AUTHORIZER_ROLE


def test_printable_escapes_every_control_and_format_character() -> None:
    """Class 5: what the printer sees cannot move the cursor, recolour or reorder the text."""
    from lineage.verify.report import printable

    assert printable("\x1b[2J\x1b[HVERIFIED") == "\\x1b[2J\\x1b[HVERIFIED"
    assert printable("a\u202eb\u2066c\x85d\x7f\ud800") == "a\\u202eb\\u2066c\\x85d\\x7f\\ud800"
    assert printable("back\\slash") == "back\\\\slash"
    assert printable("été 日本 [/x]") == "été 日本 [/x]"
    assert printable("x" * 50, limit=10) == "x" * 10 + "… (+40 characters)"


def test_a_check_stage_plugs_in_with_one_function(
    data: Dataset, doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Class 9: an added check is one function in STAGES; its failure and claims reach the report."""
    from lineage.verify import bundle as stages
    from lineage.verify.checks import fail

    def check_extra(run: stages.BundleRun) -> None:
        if run.options.get("refuse"):
            raise fail(FailureKind.CHAIN_TRUNCATED, "extra check refused", {"stage": "extra"})
        run.report.claims.append(f"extra check saw {len(run.bundle.entries)} entries")

    monkeypatch.setattr(stages, "STAGES", [*stages.STAGES, check_extra])
    report = _verify(data, doc)
    assert report.ok
    assert f"extra check saw {len(doc['entries'])} entries" in report.claims
    report = _verify(data, doc, options={"refuse": True})
    assert report.failure is not None and report.failure.where == {"stage": "extra"}


def test_every_failure_kind_is_in_the_spec_table() -> None:
    """docs/evidence-bundle.md lists every kind the verifier can report, so the spec stays whole."""
    from pathlib import Path

    spec = (Path(__file__).resolve().parents[3] / "docs" / "evidence-bundle.md").read_text()
    missing = [k.value for k in FailureKind if f"| `{k.value}` |" not in spec]
    assert missing == []
