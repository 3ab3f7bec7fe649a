"""Building, writing, reading and parsing evidence bundles, and the proof builder behind them."""

from __future__ import annotations

import base64
import copy
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage import hashing, merkle, note
from lineage.bundle import (
    FORMAT,
    LEAF_RECORD_SIZE,
    BundleError,
    BundleFormatError,
    _Tree,
    build_bundle,
    leaf_record,
    leaf_record_hash,
    loads_bundle,
    parse_bundle,
    read_bundle,
    write_bundle,
)
from lineage.keys import Role
from tests.support.lineage_builder import PROCESSOR_SUBJECT, Dataset, build_dataset


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset()


def _wf(data: Dataset) -> str:
    return data.workflows[0]


def test_leaf_record_is_the_entry_hash_preimage(data: Dataset) -> None:
    for e in data.entries:
        record = leaf_record(e)
        assert len(record) == LEAF_RECORD_SIZE
        assert leaf_record_hash(record) == e.entry_hash
        assert e.entry_hash == hashing.entry_hash(
            e.prev_hash, e.event_digest, e.chain_seq, e.policy_digest
        )


def test_bundle_layout(data: Dataset) -> None:
    wf = _wf(data)
    chain = data.workflow_entries(wf)
    bundle = data.bundle(wf)
    p = chain[0].source_partition
    sizes = [c.tree_size for c in data.partition_checkpoints(p)]

    assert bundle["format"] == FORMAT == "lineage-evidence-bundle/v2"
    assert bundle["workflow_id"] == wf
    assert bundle["entry_count"] == len(chain) == len(bundle["entries"])
    assert bundle["policy_digests"] == [data.policy.digest.hex()]
    for e, out in zip(chain, bundle["entries"], strict=True):
        assert out["chain_seq"] == e.chain_seq
        assert out["event_id"] == e.event_id
        assert base64.b64decode(out["event"]) == e.event_bytes
        assert out["event_digest"] == e.event_digest.hex()
        assert out["prev_hash"] == e.prev_hash.hex()
        assert out["entry_hash"] == e.entry_hash.hex()
        assert (out["partition"], out["log_index"]) == (p, e.log_index)
        assert base64.b64decode(out["seal"]["record"]) == e.seal_bytes
        assert out["seal"]["index"] == e.seal_index
        assert out["seal"]["path"] == [x.hex() for x in e.seal_path]
        # Proven at the first checkpoint that covers it.
        assert out["inclusion"]["tree_size"] == min(s for s in sizes if s > e.log_index)

    [log] = bundle["logs"]
    notes = [c["note"] for c in log["checkpoints"]]
    used = sorted({o["inclusion"]["tree_size"] for o in bundle["entries"]} | {max(sizes)})
    assert notes == [c.note for c in data.partition_checkpoints(p) if c.tree_size in used]
    assert [(c["old_size"], c["new_size"]) for c in log["consistency"]] == list(
        itertools.pairwise(used)
    )
    assert log["origin"] == f"lineage.local/lineage.events/{p}"

    tail = bundle["tail"]
    last = chain[-1]
    assert (tail["partition"], tail["log_index"], tail["tree_size"]) == (
        p,
        last.log_index,
        max(sizes),
    )
    following = base64.b64decode(tail["following"])
    assert following == b"".join(
        leaf_record(e) for e in data.partition_entries(p)[last.log_index + 1 : max(sizes)]
    )

    keys = {k["key_id"]: k for k in bundle["keys"]["keys"]}
    roles = sorted(k["role"] for k in keys.values())
    assert roles == ["authorizer", "emitter", "processor"]
    assert bundle["checkpoint_keys"] == [data.checkpoint_vkey]
    assert note.parse_verifier_key(data.checkpoint_vkey)[0] == PROCESSOR_SUBJECT


def test_bundle_ignores_other_workflows_entries(data: Dataset) -> None:
    wf = _wf(data)
    leaves = data.partition_leaves()
    everything = build_bundle(
        wf,
        data.entries,
        leaves,
        data.checkpoints,
        data.registry,
        data.checkpoint_vkey,
        policy_sets=[data.policy_files],
        violations=data.violation_records,
    )
    assert everything == data.bundle(wf)


def test_parse_round_trip(data: Dataset, tmp_path: Path) -> None:
    bundle = data.bundle(_wf(data))
    path = tmp_path / "b.json"
    write_bundle(bundle, path)
    assert path.read_bytes().isascii()
    assert read_bundle(path) == bundle
    parsed = parse_bundle(read_bundle(path))
    assert parsed.workflow_id == _wf(data)
    assert len(parsed.entries) == bundle["entry_count"]
    assert parsed.entries[0].event == data.workflow_entries(_wf(data))[0].event_bytes
    assert parsed.checkpoint_keys == (note.parse_verifier_key(data.checkpoint_vkey),)
    assert {r.role for r in parsed.keys.records()} == {
        Role.EMITTER,
        Role.AUTHORIZER,
        Role.PROCESSOR,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"not json {", "not a JSON document"),
        (b"\xff\xfe", "not a JSON document"),
        (b"[1, 2]", "expected a JSON object, found list"),
        (
            b'{"format": "lineage-evidence-bundle/v3"}',
            "format 'v3' no longer supported or not yet known",
        ),
        (b'{"format": "x", "format": "y"}', "duplicate JSON member 'format'"),
    ],
)
def test_unusable_documents(text: bytes, message: str) -> None:
    with pytest.raises(BundleFormatError, match=message):
        loads_bundle(text)


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleFormatError, match="cannot read"):
        read_bundle(tmp_path / "nope.json")


def _mutated(bundle: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(bundle)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["workflow_id"], _DELETE, r"bundle\.workflow_id: expected a value, found none"),
        (["entries"], [], r"bundle\.entries: expected at least one entry"),
        (
            ["entries", 0, "event"],
            "***",
            r"bundle\.entries\[0\]\.event: expected canonical standard base64",
        ),
        (
            ["entries", 1, "entry_hash"],
            "AB" * 32,
            r"entries\[1\]\.entry_hash: expected 64 lowercase",
        ),
        (["entries", 1, "prev_hash"], "ab" * 31, r"entries\[1\]\.prev_hash: expected 64 lowercase"),
        (["entries", 2, "chain_seq"], -1, r"entries\[2\]\.chain_seq: expected an integer in \[0, "),
        (["entries", 2, "chain_seq"], True, r"entries\[2\]\.chain_seq: expected an integer"),
        (["entries", 0, "seal", "path", 0], 7, r"entries\[0\]\.seal\.path\[0\]: expected 64"),
        (["entries", 0, "inclusion"], None, r"entries\[0\]\.inclusion: expected a JSON object"),
        (["logs", 0, "consistency"], [], r"logs\[0\]\.consistency: expected \d+ proofs"),
        (["logs", 0, "checkpoints"], [], r"logs\[0\]\.checkpoints: expected at least one"),
        (["tail", "prefix"], ["ab" * 32] * 9, r"tail\.prefix: expected \d+ subtree hashes"),
        (["tail", "following"], "AAAA", r"tail\.following: expected a multiple of 104 bytes"),
        (["keys"], {"format": "nope"}, r"bundle\.keys: unsupported format"),
        (["checkpoint_keys", 0], "x+y+z", r"checkpoint_keys\[0\]: verifier key id"),
    ],
)
def test_parse_names_the_bad_field(
    data: Dataset, path: list[Any], value: Any, message: str
) -> None:
    doc = _mutated(data.bundle(_wf(data)), path, value)
    with pytest.raises(BundleFormatError, match=message):
        parse_bundle(doc)


def test_build_fails_for_unknown_workflow(data: Dataset) -> None:
    with pytest.raises(BundleError, match="'nope': expected at least one entry, found none"):
        build_bundle(
            "nope",
            data.entries,
            data.partition_leaves(),
            data.checkpoints,
            data.registry,
            data.checkpoint_vkey,
        )


def test_build_fails_when_an_entry_is_not_yet_checkpointed(data: Dataset) -> None:
    wf = _wf(data)
    last = data.workflow_entries(wf)[-1]
    older = [
        c
        for c in data.checkpoints
        if c.partition != last.source_partition or c.tree_size <= last.log_index
    ]
    with pytest.raises(BundleError, match="not yet covered by a signed checkpoint"):
        build_bundle(
            wf, data.entries, data.partition_leaves(), older, data.registry, data.checkpoint_vkey
        )


def test_build_fails_when_the_leaves_do_not_match_a_checkpoint(data: Dataset) -> None:
    wf = _wf(data)
    p = data.workflow_entries(wf)[0].source_partition
    leaves = data.partition_leaves()
    leaves[p] = list(leaves[p])
    other = data.partition_entries(p)[1]
    leaves[p][1] = leaf_record(replace(other, chain_seq=other.chain_seq + 1))
    with pytest.raises(BundleError, match=r"expected root [0-9a-f]{64}, the stored log gives"):
        build_bundle(
            wf, data.entries, leaves, data.checkpoints, data.registry, data.checkpoint_vkey
        )


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 70), data=st.data())
def test_tree_proofs_match_rfc9162_reference(size: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    hashes = [merkle.leaf_hash(x) for x in leaves]
    tree = _Tree(hashes)
    n = data.draw(st.integers(1, size), label="tree size")
    index = data.draw(st.integers(0, n - 1), label="leaf index")
    old = data.draw(st.integers(1, n), label="old size")
    assert tree.root(n) == merkle.root(leaves[:n])
    assert tree.inclusion(index, n) == merkle.inclusion_proof(index, leaves[:n])
    if old < n:
        assert tree.consistency(old, n) == merkle.consistency_proof(old, leaves[:n])
    cr = merkle.CompactRange()
    for h in hashes[:n]:
        cr.append_hash(h)
    assert tuple(tree.frontier(n)) == cr.frontier


def test_bundle_json_is_stable(data: Dataset) -> None:
    wf = _wf(data)
    assert json.dumps(data.bundle(wf)) == json.dumps(data.bundle(wf))
