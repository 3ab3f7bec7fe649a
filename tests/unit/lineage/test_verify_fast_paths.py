"""The column path's cheaper checks accept exactly what the per-entry checks accept.

Seal inclusion paths are checked once per seal against the seal's tree rebuilt from its leaves
(``columns._seal_tree``) instead of leaf by leaf; the strict decoder reads strings from the
body's Latin-1 text and proves them ASCII by counting high bytes. Each test here can fail: a
refusal the reference path would not make, or an acceptance it would refuse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from lineage import codec, merkle
from lineage.errors import LineageError
from lineage.model import Seal
from lineage.verify import FailureKind, columns
from lineage.verify.checks import Checker, parse_vkeys
from lineage.verify.columns import LogColumns, verify_log
from lineage.verify.report import Proven
from lineage.verify.stored import _stored_checkpoints
from lineage.verify.strict_avro import StrictDecodeError, decoder_for
from tests.support.lineage_builder import Dataset, build_dataset

pytestmark = pytest.mark.timeout(300)


def _leaves(count: int) -> list[bytes]:
    return [hashlib.sha256(b"leaf %d" % k).digest() for k in range(count)]


@pytest.mark.parametrize("count", [*range(1, 40), 63, 64, 65, 100, 127, 128, 129])
def test_path_plan_gives_the_rfc9162_paths(count: int) -> None:
    leaves = _leaves(count)
    nodes = list(leaves)
    level = leaves
    while len(level) > 1:
        up = [merkle.node_hash(level[k], level[k + 1]) for k in range(0, len(level) - 1, 2)]
        nodes += up + ([level[-1]] if len(level) % 2 else [])
        level = up + ([level[-1]] if len(level) % 2 else [])
    assert nodes[-1] == merkle.root_from_hashes(leaves)
    for j, plan in enumerate(columns._path_plan(count)):
        assert [nodes[x] for x in plan] == merkle.inclusion_proof_from_hashes(j, leaves)


def _seal(count: int, root: bytes) -> Seal:
    return Seal("e#1", "k", "t", 0, 10, 10 + count - 1, root, bytes(32), bytes(64))


def _group(count: int, order: list[int] | None = None) -> columns._SealLeaves:
    leaves = _leaves(count)
    group = columns._SealLeaves(_seal(count, merkle.root_from_hashes(leaves)))
    for j in order if order is not None else range(count):
        group.indexes.append(j)
        group.leaves.append(leaves[j])
        group.paths.append(b"".join(merkle.inclusion_proof_from_hashes(j, leaves)))
    return group


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13, 100])
def test_a_complete_seal_is_accepted_in_any_order(count: int) -> None:
    columns._seal_tree(_group(count))
    columns._seal_tree(_group(count, list(reversed(range(count)))))
    columns._seal_paths(_group(count))


def _refused(group: columns._SealLeaves) -> bool:
    """Whether the per-seal check and the per-entry one both refuse the group."""
    refused = []
    for check in (columns._seal_tree, columns._seal_paths):
        try:
            check(group)
            refused.append(False)
        except ValueError:
            refused.append(True)
    assert refused[0] == refused[1], refused
    return refused[0]


def test_a_wrong_path_leaf_or_root_is_refused() -> None:
    group = _group(7)
    group.paths[3] = group.paths[4]  # another leaf's valid path
    assert _refused(group)
    group = _group(7)
    group.paths[6] = group.paths[6][:-1]  # a node cut short
    assert _refused(group)
    group = _group(7)
    group.paths[0] = group.paths[0] + bytes(32)  # one node too many
    assert _refused(group)
    group = _group(7)
    group.leaves[2] = bytes(32)
    assert _refused(group)
    group = _group(7)
    group.seal = replace(group.seal, merkle_root=bytes(32))
    assert _refused(group)
    group = _group(1)
    group.paths[0] = bytes(32)  # a one-leaf seal has an empty path
    assert _refused(group)


def test_seals_without_each_index_once_are_checked_entry_by_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    per_entry = columns._seal_paths

    def counted(group: columns._SealLeaves) -> None:
        calls.append(len(group.indexes))
        per_entry(group)

    monkeypatch.setattr(columns, "_seal_paths", counted)
    columns._seal_tree(_group(4, [0, 1, 1, 3]))  # a duplicate: paths all valid
    assert calls == [4]
    for at, index in ((3, 9), (1, -1), (0, 4)):
        group = _group(4)
        group.indexes[at] = index  # out of range: no path leads to the root from there
        with pytest.raises(ValueError):
            columns._seal_tree(group)
    assert calls == [4, 4, 4, 4]


# -- through verify_log, on a processor run --


@pytest.fixture(scope="module")
def data() -> Dataset:
    return build_dataset(workflows=6, steps=3, seal_every=5, checkpoint_every=10)


def _columns(data: Dataset, p: int) -> LogColumns:
    es = data.partition_entries(p)

    def col(name: str) -> list[Any]:
        return [getattr(e, name) for e in es]

    return LogColumns(
        p,
        col("workflow_id"),
        col("chain_seq"),
        col("event_id"),
        col("event_digest"),
        col("prev_hash"),
        col("entry_hash"),
        col("policy_digest"),
        col("event_bytes"),
        col("source_partition"),
        col("source_offset"),
        col("log_index"),
        col("seal_bytes"),
        col("seal_index"),
        [b"".join(e.seal_path) for e in es],
        None,
    )


def _verify(data: Dataset, cols: LogColumns, workflow_id: str | None = None) -> columns.Outcome:
    checker = Checker(data.registry, parse_vkeys([data.checkpoint_vkey]), Proven())
    signed = _stored_checkpoints(data.checkpoints, [cols.partition], checker)
    notes = [
        n
        for _, n in sorted(
            (c.tree_size, c.note) for c in data.partition_checkpoints(cols.partition)
        )
    ]
    return verify_log(cols, signed[cols.partition], notes, data.registry, workflow_id)


def test_clean_logs_check_every_seal_by_its_tree(
    data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees: list[int] = []
    per_seal = columns._seal_tree

    def counted(group: columns._SealLeaves) -> None:
        trees.append(len(group.indexes))
        per_seal(group)

    monkeypatch.setattr(columns, "_seal_tree", counted)
    for p in (0, 1):
        out = _verify(data, _columns(data, p))
        assert out.failure is None and out.fast
    assert sum(trees) == len(data.entries)


def test_one_workflow_leaves_seals_incomplete_and_still_takes_the_fast_path(
    data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    per_entry: list[int] = []
    paths = columns._seal_paths

    def counted(group: columns._SealLeaves) -> None:
        per_entry.append(len(group.indexes))
        paths(group)

    monkeypatch.setattr(columns, "_seal_paths", counted)
    wf = data.workflows[0]
    p = data.workflow_entries(wf)[0].source_partition
    out = _verify(data, _columns(data, p), wf)
    assert out.failure is None and out.fast
    assert out.proven.events == len(data.workflow_entries(wf))
    assert per_entry  # some seals hold other workflows' events too


@pytest.mark.parametrize("workflow", [None, 0])
def test_a_path_of_another_leaf_fails_as_the_reference_does(
    data: Dataset, workflow: int | None
) -> None:
    cols = _columns(data, 1)
    seal = cols.seal_bytes[0]
    same = [i for i, s in enumerate(cols.seal_bytes) if s == seal]
    assert len(same) >= 2
    cols.seal_path[same[0]] = cols.seal_path[same[1]]
    wf = None if workflow is None else cols.workflow_id[same[0]]
    out = _verify(data, cols, wf)
    assert not out.fast
    assert out.failure is not None and out.failure.kind is FailureKind.SEAL_INCLUSION
    assert out.failure.where["log_index"] == same[0]


# -- the strict decoder's Latin-1 variant --

SCHEMA = codec.load("execution_event")
DECODE = decoder_for("execution_event")


def _event(data: Dataset, **changes: Any) -> bytes:
    record = dict(SCHEMA.decode_body(data.entries[3].event_bytes))
    record.update(changes)
    return SCHEMA.encode(record)


def _reference(body: bytes) -> dict[str, Any] | None:
    try:
        return SCHEMA.decode_body(body)
    except (LineageError, ValueError, TypeError, IndexError, OverflowError):
        return None


def _strict(body: bytes) -> dict[str, Any] | None:
    assert DECODE is not None
    try:
        return DECODE(body, codec.HEADER_LEN)
    except StrictDecodeError:
        return None


@pytest.mark.parametrize("text", ["é", "日本語", "a" * 70 + "ü", "\x7f", "x" * 200])
def test_non_ascii_strings_decode_as_the_reference_does(data: Dataset, text: str) -> None:
    body = _event(data, principal=text, attributes={text: text, "k": "v"}, emitter_seq=2**40)
    assert _strict(body) == _reference(body) is not None
    assert _strict(body)["principal"] == text  # type: ignore[index]


@pytest.mark.parametrize("bad", [b"\xff", b"\xe9", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80"])
def test_strings_not_utf8_are_refused_beside_long_varints(data: Dataset, bad: bytes) -> None:
    marker = "Q" * len(bad)
    body = _event(data, principal=marker, emitter_seq=2**40, event_time=2**50)
    assert body.count(marker.encode()) == 1
    spoiled = body.replace(marker.encode(), bad)
    assert _reference(spoiled) is None
    assert _strict(spoiled) is None


def test_two_byte_lengths_and_numbers_in_their_shortest_spelling_only(data: Dataset) -> None:
    body = _event(data, principal="p" * 100, emitter_seq=100)
    assert _strict(body) == _reference(body) is not None
    length = bytes([0x80 | (200 & 0x7F), 200 >> 7])  # zigzag(100) as two bytes: c8 01
    assert length in body
    over_long = body.replace(length + b"p", bytes([0x80 | (200 & 0x7F), 0x81, 0x00]) + b"p", 1)
    assert _reference(over_long) is None and _strict(over_long) is None
    zero = body.replace(length + b"p", bytes([0x80 | (200 & 0x7F), 0x00]) + b"p", 1)
    assert _strict(zero) is None  # a continued byte then 0: not the shortest spelling


# -- the row projection: expected_columns and the bound fields, without a dict per event --


def _row(record: dict[str, Any]) -> tuple[Any, ...]:
    return (
        *columns.expected_columns(record),
        record["event_id"],
        record["workflow_id"],
        record["partition"],
        record["topic"],
    )


def test_the_projection_is_expected_columns_of_every_real_event(data: Dataset) -> None:
    project = columns.row_projection()
    assert project is not None
    kinds = set()
    for e in data.entries:
        record = SCHEMA.decode_body(e.event_bytes)
        kinds.add((record["kind"], record["authorization"] is None, record["runtime"] is None))
        assert project(e.event_bytes, codec.HEADER_LEN) == _row(record)
    assert len(kinds) >= 4  # with and without authorization and runtime


@pytest.mark.parametrize("auth", [None, "ALLOW", "DENY"])
@pytest.mark.parametrize("runtime", [None, "bare", "full"])
def test_the_projection_follows_optional_records(
    data: Dataset, auth: str | None, runtime: str | None
) -> None:
    record = dict(SCHEMA.decode_body(data.entries[3].event_bytes))
    record["authorization"] = (
        None
        if auth is None
        else {
            "decision": auth,
            "policy_id": "p",
            "policy_digest": "sha256:" + "ab" * 32,
            "determining_policies": ["a", "b"],
            "input_digest": "sha256:" + "cd" * 32,
            "expires_at": 2**45,
            "authorized_action": "x",
            "authorized_resource": None,
        }
    )
    record["runtime"] = (
        None
        if runtime is None
        else {
            "host": "h",
            "image_digest": None if runtime == "bare" else "img",
            "attestation_type": None if runtime == "bare" else "tpm2",
            "measurement": None if runtime == "bare" else "m",
        }
    )
    record.update(agent_id=None, resource=None, trace_id=None, attributes={"k": "é"})
    body = SCHEMA.encode(record)
    project = columns.row_projection()
    assert project is not None
    assert project(body, codec.HEADER_LEN) == _row(SCHEMA.decode_body(body))


@pytest.mark.parametrize("at", range(codec.HEADER_LEN, 120, 3))
def test_the_projection_refuses_what_the_decoder_refuses(data: Dataset, at: int) -> None:
    project = columns.row_projection()
    assert project is not None and DECODE is not None
    for e in data.entries[:40:7]:
        for value in (0x00, 0x7F, 0x80, 0xFF):
            spoiled = bytearray(e.event_bytes)
            if at >= len(spoiled):
                continue
            spoiled[at] = value
            results = []
            for decode in (DECODE, project):
                try:
                    decode(bytes(spoiled), codec.HEADER_LEN)
                    results.append(True)
                except StrictDecodeError:
                    results.append(False)
            assert results[0] == results[1]


# -- whole-column checks: every tampering still fails, as the reference loop reports it --


def _swap(cols: LogColumns, i: int, j: int) -> None:
    for name in (
        "workflow_id",
        "chain_seq",
        "event_id",
        "event_digest",
        "prev_hash",
        "entry_hash",
        "policy_digest",
        "event_bytes",
        "source_offset",
        "seal_bytes",
        "seal_index",
        "seal_path",
    ):
        column = getattr(cols, name)
        column[i], column[j] = column[j], column[i]


def _same_workflow(cols: LogColumns) -> tuple[int, int]:
    first = cols.workflow_id[3]
    at = [i for i, wf in enumerate(cols.workflow_id) if wf == first]
    return at[0], at[1]


def _other_workflows(cols: LogColumns) -> tuple[int, int]:
    i = 3
    j = next(j for j in range(i + 1, len(cols)) if cols.workflow_id[j] != cols.workflow_id[i])
    return i, j


def _tamper_seq(cols: LogColumns) -> int:
    cols.chain_seq[5] += 1
    return 5


def _tamper_prev(cols: LogColumns) -> int:
    cols.prev_hash[6] = bytes(32)
    return 6


def _tamper_entry(cols: LogColumns) -> int:
    cols.entry_hash[len(cols) - 1] = bytes(32)
    return len(cols) - 1


def _tamper_time(cols: LogColumns) -> int:
    cols.event_bytes[2] = cols.event_bytes[2][:-1] + b"\x01"
    return 2


def _swapped(cols: LogColumns, i: int, j: int) -> int:
    _swap(cols, i, j)
    return i


TAMPERING: dict[str, Callable[[LogColumns], int]] = {
    "reordered in a workflow": lambda c: _swapped(c, *_same_workflow(c)),
    "two workflows' entries swapped": lambda c: _swapped(c, *_other_workflows(c)),
    "sequence number": _tamper_seq,
    "previous hash": _tamper_prev,
    "last entry hash": _tamper_entry,
    "event bytes": _tamper_time,
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
@pytest.mark.parametrize("one_workflow", [False, True])
def test_tampered_logs_fail_whole_column_checks_as_the_reference_does(
    data: Dataset, case: str, one_workflow: bool
) -> None:
    from lineage.verify.columns import check_stored_columns
    from lineage.verify.stored import verify_entries
    from sinks import rows

    cols = _columns(data, 1)
    index = {c: i for i, c in enumerate(rows.ENTRY_COLUMNS)}
    es = data.partition_entries(1)
    cols.derived = [
        [rows.entry_row(e)[index[name]] for e in es] for name in columns.DERIVED_COLUMNS
    ]
    clean = _verify(data, cols)
    assert clean.failure is None and clean.fast
    touched = TAMPERING[case](cols)
    wf = cols.workflow_id[touched] if one_workflow else None  # a workflow verified in full
    out = _verify(data, cols, wf)
    assert not out.fast
    reference = verify_entries(
        {1: list(cols.entries())},
        data.checkpoints,
        registry=data.registry,
        trusted_checkpoint_vkeys=[data.checkpoint_vkey],
        workflow_id=wf,
        check_columns=check_stored_columns,
    )
    assert reference.failure is not None
    assert out.failure == reference.failure


# -- seal binding and key windows checked per seal: the same verdicts and listings --


def _time_text(us: int) -> str:
    import datetime

    t = datetime.datetime.fromtimestamp(us / 1e6, tz=datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _registry_case(data: Dataset, case: str) -> Any:
    from lineage.keys import KeyRegistry

    doc = data.registry.to_json()
    runtime = data.signers["agent-runtime#i1"].key_id
    gate = data.signers["policy-gate#g1"].key_id
    times = sorted(SCHEMA.decode_body(e.event_bytes)["event_time"] for e in data.entries)
    middle = times[len(times) // 2]
    for key in doc["keys"]:
        if case == "gate not an authorizer" and key["key_id"] == gate:
            key["role"] = "emitter"
        elif case == "runtime key expires midway" and key["key_id"] == runtime:
            key["not_after"] = _time_text(middle)
        elif case == "runtime key valid from midway" and key["key_id"] == runtime:
            key["not_before"] = _time_text(middle)
        elif case == "runtime key compromised midway" and key["key_id"] == runtime:
            doc["format"] = "lineage-key-registry/v2"
            key["revoked_at"] = _time_text(times[-1] + 10)
            key["compromised_at"] = _time_text(middle)
            key["revocation_reason"] = "stolen"
    if doc["format"].endswith("v2"):
        for key in doc["keys"]:
            key.setdefault("compromised_at", None)
            key.setdefault("custody", None)
            key.setdefault("key_uri", None)
    return KeyRegistry.from_json(doc)


@pytest.mark.parametrize(
    "case",
    [
        "gate not an authorizer",
        "runtime key expires midway",
        "runtime key valid from midway",
        "runtime key compromised midway",
    ],
)
def test_key_windows_and_roles_give_the_reference_report(data: Dataset, case: str) -> None:
    import functools

    from lineage.verify.columns import check_stored_columns
    from lineage.verify.stored import verify_entries
    from sinks import rows

    registry = _registry_case(data, case)
    index = {c: i for i, c in enumerate(rows.ENTRY_COLUMNS)}

    def fetched(p: int) -> LogColumns:
        cols = _columns(data, p)
        cols.derived = [
            [rows.entry_row(e)[index[name]] for e in data.partition_entries(p)]
            for name in columns.DERIVED_COLUMNS
        ]
        return cols

    by_columns = verify_entries(
        {p: functools.partial(fetched, p) for p in (0, 1)},
        data.checkpoints,
        registry=registry,
        trusted_checkpoint_vkeys=[data.checkpoint_vkey],
    )
    reference = verify_entries(
        {p: list(fetched(p).entries()) for p in (0, 1)},
        data.checkpoints,
        registry=registry,
        trusted_checkpoint_vkeys=[data.checkpoint_vkey],
        check_columns=check_stored_columns,
    )
    assert by_columns.failure == reference.failure
    assert by_columns.not_proven == reference.not_proven
    assert by_columns.proven == reference.proven
    if case == "gate not an authorizer":
        assert by_columns.failure is None
        assert sum("not an authorizer" in g for g in by_columns.not_proven) >= 2
    else:
        assert by_columns.failure is not None
