"""Stored partition logs verified from column lists (the ClickHouse fast path), on one or more cores.

A store hands back each partition's log as columns; ``verify_log`` checks them in one tight loop
with the same per-entry checks as ``stored`` (no ``ChainEntry`` per row). Anything it cannot
accept sends the partition to the reference path (``stored._verify_partition`` over rebuilt
entries), so a failure is reported exactly as there: same kind, place, expected and found.
Partitions are independent, so several can be verified at once in worker processes that get the
columns from the caller (chDB allows one process per data directory).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import gc
import itertools
import multiprocessing
import os
import sys
import time
import types
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lineage import claims, codec, hashing, merkle
from lineage.keys import KeyRegistry, Role
from lineage.model import ChainEntry, Seal
from lineage.verify import strict_avro
from lineage.verify.checks import MAX_TIME_US, Checker, Fail, gc_paused, seal_binds
from lineage.verify.report import Failure, FailureKind, Proven

DERIVED_COLUMNS: tuple[str, ...] = (
    "kind",
    "event_time",
    "principal",
    "agent_id",
    "model_id",
    "model_version",
    "action",
    "resource",
    "authorization_id",
    "decision",
    "auth_policy_id",
    "auth_policy_digest",
    "determining_policies",
    "expires_at",
    "attestation_type",
    "measurement",
    "host",
    "image_digest",
    "parent_event_id",
    "parent_workflow_id",
    "trace_id",
    "span_id",
    "emitter_id",
    "emitter_seq",
    "attributes",
)
"""``lineage_entries`` columns the sink derives from the event bytes; each is checked against them."""

_NO_AUTH: dict[str, Any] = {
    "decision": "",
    "policy_id": "",
    "policy_digest": "",
    "determining_policies": [],
    "expires_at": None,
}
_NO_RUNTIME: dict[str, Any] = {
    "host": "",
    "image_digest": None,
    "attestation_type": None,
    "measurement": None,
}


def expected_columns(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The DERIVED_COLUMNS values the sink writes for a decoded event (as sinks.rows does)."""
    auth = record["authorization"] or _NO_AUTH
    rt = record["runtime"] or _NO_RUNTIME
    return (
        record["kind"],
        record["event_time"],
        record["principal"],
        record["agent_id"] or "",
        record["model_id"] or "",
        record["model_version"] or "",
        record["action"],
        record["resource"] or "",
        record["authorization_id"] or "",
        auth["decision"],
        auth["policy_id"],
        auth["policy_digest"],
        list(auth["determining_policies"]),
        auth["expires_at"],
        rt["attestation_type"] or "",
        rt["measurement"] or "",
        rt["host"],
        rt["image_digest"] or "",
        record["parent_event_id"] or "",
        record["parent_workflow_id"] or "",
        record["trace_id"] or "",
        record["span_id"] or "",
        record["emitter_id"],
        record["emitter_seq"],
        dict(record["attributes"]),
    )


_ROW_PROJECTION = (
    "({kind}, {event_time}, {principal}, {agent_id} or '', {model_id} or '', "
    "{model_version} or '', {action}, {resource} or '', {authorization_id} or '', "
    "(auth_ := {authorization} or NO_AUTH)['decision'], auth_['policy_id'], "
    "auth_['policy_digest'], list(auth_['determining_policies']), auth_['expires_at'], "
    "(rt_ := {runtime} or NO_RUNTIME)['attestation_type'] or '', rt_['measurement'] or '', "
    "rt_['host'], rt_['image_digest'] or '', {parent_event_id} or '', "
    "{parent_workflow_id} or '', {trace_id} or '', {span_id} or '', {emitter_id}, "
    "{emitter_seq}, {attributes}, {event_id}, {workflow_id}, {partition}, {topic})"
)
"""What the strict decoder gives an event as in the column path: ``expected_columns`` of its
record (DERIVED_COLUMNS, in order), then its event id, workflow id, partition and topic; the
row a stored entry must match (``_fast_rows``), with no dict per event."""
_KIND, _TIME, _PRINCIPAL, _AGENT = 0, 1, 2, 3
_EMITTER, _EMITTER_SEQ = DERIVED_COLUMNS.index("emitter_id"), DERIVED_COLUMNS.index("emitter_seq")
_EVENT_ID = len(DERIVED_COLUMNS)


@functools.cache
def row_projection() -> strict_avro.Projector | None:
    """The strict decoder of events that gives ``_ROW_PROJECTION``'s tuple (None: cannot)."""
    return strict_avro.compile_projection(
        codec.load("execution_event").parsed,
        _ROW_PROJECTION,
        {"NO_AUTH": _NO_AUTH, "NO_RUNTIME": _NO_RUNTIME},
    )


@dataclass(frozen=True, slots=True)
class StoredEntry(ChainEntry):
    """A ``lineage_entries`` row: the chain entry plus its stored DERIVED_COLUMNS values."""

    columns: tuple[Any, ...] = ()


def check_stored_columns(
    entry: ChainEntry, record: Mapping[str, Any]
) -> tuple[str, object, object] | None:
    """The first stored derived column that differs from the decoded event, as (name, want, got)."""
    if not isinstance(entry, StoredEntry):
        return None
    found = entry.columns
    expected = expected_columns(record)
    if expected == found:
        return None
    for name, want, got in zip(DERIVED_COLUMNS, expected, found, strict=True):
        if want != got:
            return name, want, got
    return None


@dataclass(slots=True)
class LogColumns:
    """One partition's stored log as the store returned it (unchecked), one list per column.

    Rows are in the store's log order. ``seal_path`` holds each row's path nodes concatenated
    (32 bytes each); ``derived`` one list per DERIVED_COLUMNS column, or None to skip that check
    (columns, not row tuples: they cross to a worker process far cheaper).
    """

    partition: int
    workflow_id: list[str]
    chain_seq: list[int]
    event_id: list[str]
    event_digest: list[bytes]
    prev_hash: list[bytes]
    entry_hash: list[bytes]
    policy_digest: list[bytes]
    event_bytes: list[bytes]
    source_partition: list[int]
    source_offset: list[int]
    log_index: list[int]
    seal_bytes: list[bytes]
    seal_index: list[int]
    seal_path: list[bytes]
    derived: list[list[Any]] | None = None

    def __len__(self) -> int:
        return len(self.log_index)

    def derived_rows(self) -> list[tuple[Any, ...]] | None:
        """Each row's DERIVED_COLUMNS values; a missing or short column makes them unusable."""
        if self.derived is None:
            return None
        n = len(self.log_index)
        if len(self.derived) != len(DERIVED_COLUMNS) or any(len(c) != n for c in self.derived):
            raise ValueError("derived columns of another shape than the log")
        return list(zip(*self.derived, strict=True))

    def entries(self) -> Iterator[ChainEntry]:
        """The rows as entries, for the reference path (``StoredEntry`` when derived is set)."""
        derived = self.derived_rows()
        for i in range(len(self.log_index)):
            path = self.seal_path[i]
            values = (
                self.workflow_id[i],
                self.chain_seq[i],
                self.event_id[i],
                self.event_digest[i],
                self.prev_hash[i],
                self.entry_hash[i],
                self.policy_digest[i],
                self.event_bytes[i],
                self.source_partition[i],
                self.source_offset[i],
                self.log_index[i],
                self.seal_bytes[i],
                self.seal_index[i],
                tuple(path[j : j + 32] for j in range(0, len(path), 32)),
            )
            if derived is None:
                yield ChainEntry(*values)
            else:
                yield StoredEntry(*values, (), derived[i])


ColumnSource = Callable[[], LogColumns]
"""Fetches one partition's columns when called (lazily, in partition order)."""

WORKER_MIN_ROWS = 5_000
"""A partition with fewer rows is verified in the calling process: a worker costs more to start."""


@dataclass(slots=True)
class Outcome:
    """What verifying one partition log gave: its own Proven, and the failure if any."""

    partition: int
    proven: Proven
    unauthorized_decisions: list[str]
    failure: Failure | None
    fast: bool
    """True when the fast path accepted the log; False when the reference path decided."""
    cpu_s: float = 0.0
    entries: int = 0


@dataclass(slots=True)
class _Job:
    columns: LogColumns
    signed: list[tuple[int, bytes, str]]
    notes: list[str]
    workflow_id: str | None


def _seal_path_nodes(path: bytes) -> tuple[bytes, ...]:
    return tuple(path[j : j + 32] for j in range(0, len(path), 32))


def _event_check(checker: Checker) -> Callable[[bytes, bytes], tuple[bytes, dict[str, Any]]]:
    """``Checker.event`` with the strict decoder: it raises on whatever it does not accept."""
    decode = strict_avro.decoder_for("execution_event")
    if decode is None:
        return checker.event
    header = checker.event_header
    event_digest = hashing.event_digest
    hlen = codec.HEADER_LEN

    def event(data: bytes, stated: bytes) -> tuple[bytes, dict[str, Any]]:
        digest = event_digest(data)
        if digest != stated or data[:hlen] != header:
            raise ValueError("the event digest or header differs")
        record = decode(data, hlen)
        if not 0 <= record["event_time"] <= MAX_TIME_US:
            raise ValueError("the event time is out of range")
        return digest, record

    return event


@functools.cache
def _path_plan(count: int) -> tuple[tuple[int, ...], ...]:
    """For a seal tree of ``count`` leaves: each leaf's inclusion path as positions in the tree's
    nodes listed level by level (leaves first, then their parents, ... the root last).

    The level-by-level fold that promotes a level's odd last node is RFC 9162's tree
    (``merkle._subtree``); a node's sibling is at its index XOR 1, and a promoted node has none:
    the nodes ``merkle.inclusion_proof_from_hashes`` returns, leaf to root.
    """
    sizes = [count]
    while sizes[-1] > 1:
        sizes.append((sizes[-1] + 1) // 2)
    offsets = [0]
    for size in sizes[:-1]:
        offsets.append(offsets[-1] + size)
    plan = []
    for j in range(count):
        nodes = []
        k = j
        for level, size in enumerate(sizes[:-1]):
            if k ^ 1 < size:
                nodes.append(offsets[level] + (k ^ 1))
            k >>= 1
        plan.append(tuple(nodes))
    return tuple(plan)


@functools.cache
def _in_order(count: int) -> list[int]:
    return list(range(count))


@dataclass(slots=True)
class _SealLeaves:
    """The entries of one seal met so far: their seal indexes, leaf hashes and stored paths."""

    seal: Seal
    indexes: list[int] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    paths: list[bytes] = field(default_factory=list)


def _seal_tree(group: _SealLeaves) -> None:
    """Every path of a seal whose every leaf is here, checked against its tree (built once).

    The seal's tree is rebuilt from its leaves (one hash per node) and its root compared with
    the signed root; each stored path must then be the leaf's path in that tree, node for node.
    That holds exactly when the path leads from the leaf to the signed root (another path doing
    so would be a SHA-256 collision), as ``PathMemo.verify`` checks entry by entry, for about
    one hash per leaf instead of two and no tuple of nodes per entry. Raises on any difference
    (the reference loop then decides); a seal whose indexes are not each of 0..count-1 once
    goes to ``_seal_paths``.
    """
    s = group.seal
    count = s.count
    indexes = group.indexes
    if indexes == _in_order(count):
        leaves = group.leaves
    else:
        placed: list[bytes | None] = [None] * count
        for j, leaf in zip(indexes, group.leaves, strict=True):
            if not 0 <= j < count or placed[j] is not None:
                _seal_paths(group)
                return
            placed[j] = leaf
        if None in placed:
            _seal_paths(group)
            return
        leaves = placed  # type: ignore[assignment]
    nodes = list(leaves)
    level = leaves
    while len(level) > 1:
        up = merkle.node_hashes(level[0:-1:2], level[1::2])
        if len(level) & 1:
            up.append(level[-1])
        nodes += up
        level = up
    if level[0] != s.merkle_root:
        raise ValueError("a seal's leaves do not give its root")
    at = nodes.__getitem__
    plan = _path_plan(count)
    join = b"".join
    if [join(map(at, plan[j])) for j in indexes] != group.paths:
        raise ValueError("a seal path differs from the leaf's path in the seal's tree")


def _seal_paths(group: _SealLeaves) -> None:
    """Every path of a seal checked entry by entry (``PathMemo``, as ``Checker.seal`` does)."""
    memo = merkle.PathMemo(group.seal.count, group.seal.merkle_root)
    for index, leaf, path in zip(group.indexes, group.leaves, group.paths, strict=True):
        if not memo.verify(leaf, index, _seal_path_nodes(path)):
            raise ValueError("a seal path does not lead to the seal's root")


def _fast(
    cols: LogColumns,
    signed: list[tuple[int, bytes, str]],
    checker: Checker,
    workflow_id: str | None,
    bind: Callable[[str], None],
) -> tuple[set[bytes], dict[str, str]]:
    """The happy path: raises on anything it does not accept (the reference path then decides).

    The same checks as ``stored._verify_partition``, on column lists; a seal's inclusion paths
    are checked together once all its leaves have been met (``_seal_tree``), or at the end of
    the log, path by path, for seals not all of whose leaves the log holds (``_seal_paths``).
    """
    p = cols.partition
    n = len(cols.log_index)
    wfs, seqs, eids = cols.workflow_id, cols.chain_seq, cols.event_id
    digests, prevs, stated = cols.event_digest, cols.prev_hash, cols.entry_hash
    pols, bodies, sparts = cols.policy_digest, cols.event_bytes, cols.source_partition
    lidx, sbytes, sidx, spath = cols.log_index, cols.seal_bytes, cols.seal_index, cols.seal_path
    lists = (wfs, seqs, eids, digests, prevs, stated, pols, bodies, sparts, sbytes, sidx, spath)
    if any(len(c) != n for c in lists):
        raise ValueError("columns of different lengths")
    if lidx != list(range(n)) or any(s != p for s in sparts):
        raise ValueError("log positions are not 0..n-1 of this partition")
    project = row_projection()
    if cols.derived is not None and project is not None:
        if len(cols.derived) != len(DERIVED_COLUMNS) or any(len(c) != n for c in cols.derived):
            raise ValueError("derived columns of another shape than the log")
        return _fast_rows(cols, cols.derived, signed, checker, workflow_id, bind, project)
    derived = cols.derived_rows()
    heads: dict[str, tuple[int, bytes]] = {}
    last_kind: dict[str, str] = {}
    policies: set[bytes] = set()
    proven = checker.proven
    cr = merkle.CompactRange()
    append = cr.append_hash
    entry_hash, leaf_hash = hashing.entry_hash, merkle.leaf_hash
    pending = iter(signed)
    nxt = next(pending, None)
    genesis = hashing.genesis_hash
    event = _event_check(checker)
    seals, parse_seal, key = checker.seals, checker._parse_seal, checker._key
    unauthorized = checker.unauthorized_decisions
    groups: dict[bytes, _SealLeaves] = {}
    events = 0
    first: int | None = None
    last: int | None = None
    workflows, principals = proven.workflows, proven.principals
    agents, emitters = proven.agents, proven.emitters
    authorizer = Role.AUTHORIZER
    full_all = workflow_id is None
    for i in range(n):
        wf = wfs[i]
        if full_all or wf == workflow_id:
            digest, record = event(bodies[i], digests[i])
            # Checker.bind
            if record["event_id"] != eids[i] or record["workflow_id"] != wf:
                raise ValueError("the event is another one")
            if record["partition"] != p:
                raise ValueError("the event is of another partition")
            if derived is not None and expected_columns(record) != derived[i]:
                raise ValueError("a derived column differs")
            # Checker.seal, the inclusion path deferred to the seal's group
            data = sbytes[i]
            if not data:
                raise ValueError("no seal")
            info = seals.get(data) or parse_seal(data)
            s = info.seal
            index = sidx[i]
            if not seal_binds(record, s, index):
                raise ValueError("the seal is not the event's")
            t = record["event_time"]
            if not info.not_before_us <= t <= info.not_after_us:
                key(s, info, t)
            group = groups.get(data)
            if group is None:
                group = groups[data] = _SealLeaves(s)
            group.indexes.append(index)
            group.leaves.append(leaf_hash(digest))
            group.paths.append(spath[i])
            if len(group.indexes) == s.count:
                del groups[data]
                _seal_tree(group)
            kind = record["kind"]
            if kind == "AUTHORIZATION_DECISION" and info.role is not authorizer:
                role = info.role.value if info.role is not None else "none"
                unauthorized.append(
                    f"{record['workflow_id']} event {record['event_id']}: decision sealed by "
                    f"{s.key_id} (role {role}), not an authorizer"
                )
            # Checker.note_event
            events += 1
            workflows.add(wf)
            if first is None or t < first:
                first = t
            if last is None or t > last:
                last = t
            principals.add(record["principal"])
            agent = record["agent_id"]
            if agent:
                agents.add(agent)
            emitters.add(record["emitter_id"])
            policies.add(pols[i])
            last_kind[wf] = kind
        head = heads.get(wf)
        prev: bytes
        if head is None:
            bind(wf)
            seq, prev = 0, genesis(wf)
        else:
            seq, prev = head
        # chain_step
        if seqs[i] != seq or prevs[i] != prev:
            raise ValueError("a chain link differs")
        entry = entry_hash(prev, digests[i], seq, pols[i])
        if entry != stated[i]:
            raise ValueError("an entry hash differs")
        heads[wf] = (seq + 1, entry)
        append(leaf_hash(entry))
        while nxt is not None and nxt[0] == i + 1:
            size, root, origin = nxt
            if cr.root() != root:
                raise ValueError("a checkpoint root differs")
            proven.checkpoints.append(f"{origin} size {size} root {root.hex()}")
            proven.note_log(origin, size, root)
            nxt = next(pending, None)
    if nxt is not None:
        raise ValueError("a checkpoint covers more entries than the log holds")
    for group in groups.values():  # seals not all of whose leaves are in this log
        _seal_paths(group)
    proven.events += events
    if first is not None and (proven.first_event_us is None or first < proven.first_event_us):
        proven.first_event_us = first
    if last is not None and (proven.last_event_us is None or last > proven.last_event_us):
        proven.last_event_us = last
    return policies, last_kind


def _log_levels(entry_hashes: list[bytes]) -> list[list[bytes]]:
    """The perfect subtrees of a log whose leaf data are ``entry_hashes``, level by level:
    ``levels[h][k]`` is the hash of leaves ``k * 2**h`` up to ``(k + 1) * 2**h``."""
    levels = [merkle.leaf_hashes(entry_hashes)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append(merkle.node_hashes(below[0:-1:2], below[1::2]))
    return levels


def _log_root(levels: list[list[bytes]], size: int) -> bytes:
    """The root of the log's first ``size`` leaves (``merkle.CompactRange.root`` at that size),
    from ``levels``: the log's perfect subtrees, level by level (``levels[h][k]`` covers
    leaves ``k * 2**h`` up to ``(k + 1) * 2**h``)."""
    frontier = []
    start = 0
    for height in reversed(range(size.bit_length())):
        if size >> height & 1:
            frontier.append(levels[height][start >> height])
            start += 1 << height
    root = frontier[-1]
    for h in reversed(frontier[:-1]):
        root = merkle.node_hash(h, root)
    return root


def _fast_rows(
    cols: LogColumns,
    derived: list[list[Any]],
    signed: list[tuple[int, bytes, str]],
    checker: Checker,
    workflow_id: str | None,
    bind: Callable[[str], None],
    project: strict_avro.Projector,
) -> tuple[set[bytes], dict[str, str]]:
    """``_fast`` for logs with derived columns, with as little Python per entry as it can.

    Each event is decoded straight to the row its stored entry must match
    (``_ROW_PROJECTION``: the derived columns, event id, workflow id, partition and topic) and
    compared in one tuple comparison, with no dict per event; its seal is bound and its key
    window checked. Everything else is checked over whole columns once that loop has passed:
    seal paths per seal (``_seal_tree``), the event time range and what ``note_event`` records
    (from the stored columns, which equal the decoded rows), every entry hash (one list
    comparison), each workflow's chain (its entries' sequence numbers and previous hashes as
    lists), and each signed checkpoint's root from the log's perfect subtrees, built level by
    level. The same checks as ``_fast``; the event's topic is compared with the first checked
    event's, which its seal's topic must then equal (a log whose events name several topics
    goes to the reference loop).
    """
    p = cols.partition
    n = len(cols.log_index)
    wfs, seqs, eids = cols.workflow_id, cols.chain_seq, cols.event_id
    digests, prevs, stated = cols.event_digest, cols.prev_hash, cols.entry_hash
    pols, bodies = cols.policy_digest, cols.event_bytes
    sbytes, sidx, spath = cols.seal_bytes, cols.seal_index, cols.seal_path
    full_all = workflow_id is None
    chosen: Sequence[int] = range(n) if full_all else [i for i in range(n) if wfs[i] == workflow_id]
    header = checker.event_header
    hlen = codec.HEADER_LEN
    topic = ""
    if chosen:
        body = bodies[chosen[0]]
        if body[:hlen] != header:
            raise ValueError("not an event")
        topic = project(body, hlen)[-1]
    stored = list(zip(*derived, eids, wfs, itertools.repeat(p), itertools.repeat(topic)))
    proven = checker.proven
    # Checker.event with the strict decoder: the digests, then each event's header and row
    if full_all:
        if hashing.event_digests(bodies) != digests:
            raise ValueError("an event digest differs")
    elif hashing.event_digests([bodies[i] for i in chosen]) != [digests[i] for i in chosen]:
        raise ValueError("an event digest differs")
    members: defaultdict[bytes, list[int]] = defaultdict(list)
    for i in chosen:
        body = bodies[i]
        if body[:hlen] != header:
            raise ValueError("the event header differs")
        # expected_columns and Checker.bind, at once
        if project(body, hlen) != stored[i]:
            raise ValueError("a derived column, the event id, workflow or partition differs")
        members[sbytes[i]].append(i)
    # Checker.seal, a seal at a time, on the stored columns (which equal the decoded rows)
    if b"" in members:
        raise ValueError("an event without a seal")
    seals, parse_seal, key = checker.seals, checker._parse_seal, checker._key
    kinds, times = derived[_KIND], derived[_TIME]
    emitter_ids, emitter_seqs = derived[_EMITTER], derived[_EMITTER_SEQ]
    decisions: list[tuple[int, str]] = []
    for data, at in members.items():
        info = seals.get(data) or parse_seal(data)
        s = info.seal
        indexes = [sidx[i] for i in at]
        if (
            [emitter_seqs[i] for i in at] != [s.first_seq + index for index in indexes]
            or {emitter_ids[i] for i in at} != {s.emitter_id}
            or p != s.partition
            or topic != s.topic
            or max(indexes) >= s.count
        ):
            raise ValueError("a seal is not its events' seal")
        # the key's trusted window, an interval: checked at the seal's first and last event
        early = min(times[i] for i in at)
        late = max(times[i] for i in at)
        if not info.not_before_us <= early <= late <= info.not_after_us:
            key(s, info, early)
            if not info.not_before_us <= early <= late <= info.not_after_us:
                key(s, info, late)
                if not info.not_before_us <= early <= late <= info.not_after_us:
                    raise ValueError("a seal's events lie in several windows of its key")
        if info.role is not Role.AUTHORIZER:
            role = info.role.value if info.role is not None else "none"
            decisions += [
                (
                    i,
                    f"{wfs[i]} event {eids[i]}: decision sealed by "
                    f"{s.key_id} (role {role}), not an authorizer",
                )
                for i in at
                if kinds[i] == "AUTHORIZATION_DECISION"
            ]
        # the inclusion paths
        group = _SealLeaves(
            s,
            indexes,
            merkle.leaf_hashes(map(digests.__getitem__, at)),
            [spath[i] for i in at],
        )
        if len(at) == s.count:
            _seal_tree(group)
        else:  # not all its leaves in this log (or some twice)
            _seal_paths(group)
    checker.unauthorized_decisions += [found for _, found in sorted(decisions)]

    # Checker.event's time range and Checker.note_event, over the checked rows' columns
    def picked(column: list[Any]) -> list[Any]:
        return column if full_all else [column[i] for i in chosen]

    last_kind: dict[str, str] = {}
    policies: set[bytes] = set()
    if chosen:
        times = picked(derived[_TIME])
        first, last = min(times), max(times)
        if first < 0 or last > MAX_TIME_US:
            raise ValueError("an event time is out of range")
        proven.events += len(chosen)
        proven.workflows.update(picked(wfs))
        if proven.first_event_us is None or first < proven.first_event_us:
            proven.first_event_us = first
        if proven.last_event_us is None or last > proven.last_event_us:
            proven.last_event_us = last
        proven.principals.update(picked(derived[_PRINCIPAL]))
        proven.agents.update(filter(None, picked(derived[_AGENT])))
        proven.emitters.update(picked(derived[_EMITTER]))
        policies.update(picked(pols))
        last_kind.update(zip(picked(wfs), picked(derived[_KIND]), strict=True))
    # chain_step: every entry hash, then each workflow's links in log order
    if list(map(hashing.entry_hash, prevs, digests, seqs, pols)) != stated:
        raise ValueError("an entry hash differs")
    genesis = hashing.genesis_hash
    for wf, group_at in itertools.groupby(sorted(range(n), key=wfs.__getitem__), wfs.__getitem__):
        at = list(group_at)
        bind(wf)
        if list(map(seqs.__getitem__, at)) != list(range(len(at))):
            raise ValueError("a chain sequence number differs")
        if list(map(prevs.__getitem__, at)) != [genesis(wf), *map(stated.__getitem__, at[:-1])]:
            raise ValueError("a chain link differs")
    # the log: leaf hashes, its perfect subtrees, each signed root
    levels = _log_levels(stated)
    for size, root, origin in signed:
        if not 0 < size <= n:
            raise ValueError("a checkpoint covers more entries than the log holds")
        if _log_root(levels, size) != root:
            raise ValueError("a checkpoint root differs")
        proven.checkpoints.append(f"{origin} size {size} root {root.hex()}")
        proven.note_log(origin, size, root)
    return policies, last_kind


def _finish(
    proven: Proven,
    size: int,
    signed: list[tuple[int, bytes, str]],
    policies: set[bytes],
    last_kind: Mapping[str, str],
) -> None:
    """The partition's totals, as ``stored._verify_partition`` records them."""
    proven.log_entries += size
    proven.policy_digests.update(d.hex() for d in policies)
    if signed:
        proven.unanchored += size - signed[-1][0]
        proven.complete_as_of.append(f"{signed[-1][2]} size {signed[-1][0]}")
    else:
        proven.unanchored += size
    for wf, kind in last_kind.items():
        if kind == "WORKFLOW_COMPLETED":
            proven.completed_workflows.add(wf)


def verify_log(
    cols: LogColumns,
    signed: list[tuple[int, bytes, str]],
    notes: Sequence[str],
    registry: KeyRegistry,
    workflow_id: str | None,
) -> Outcome:
    """Verify one partition's columns; the reference path decides whatever the fast one refuses.

    ``signed`` are the partition's verified (size, root, origin), ascending; ``notes`` its
    verified checkpoint notes, oldest first (for the partition binding).
    """
    from lineage.verify.stored import _verify_partition

    cpu = time.process_time()
    p = cols.partition
    proven = Proven()
    checker = Checker(registry, [], proven, decisions_fail=False)
    failure: Failure | None = None
    fast = True
    with gc_paused():
        try:
            bind, _ = claims.stored_binding(p, notes)
            policies, last_kind = _fast(cols, signed, checker, workflow_id, bind)
            _finish(proven, len(cols), signed, policies, last_kind)
        except Exception:  # anything refused: the reference path gives the verdict and the words
            fast = False
            proven = Proven()
            checker = Checker(registry, [], proven, decisions_fail=False)
            check = check_stored_columns if cols.derived is not None else None
            try:
                bind, _ = claims.stored_binding(p, notes)
                _verify_partition(p, cols.entries(), signed, checker, workflow_id, check, bind)
            except Fail as exc:
                failure = exc.failure
            except claims.ClaimFailure as exc:
                failure = Failure(
                    FailureKind(exc.kind), str(exc), exc.where, exc.expected, exc.found
                )
    return Outcome(
        p,
        proven,
        checker.unauthorized_decisions,
        failure,
        fast,
        time.process_time() - cpu,
        len(cols),
    )


_REGISTRY: list[KeyRegistry] = []


def _init_worker(registry_doc: dict[str, Any]) -> None:
    # A worker lives for one run and unpickles millions of acyclic objects: no cycle collector.
    gc.disable()
    _REGISTRY[:] = [KeyRegistry.from_json(registry_doc)]


def _run_job(job: _Job) -> Outcome:
    return verify_log(job.columns, job.signed, job.notes, _REGISTRY[0], job.workflow_id)


@contextlib.contextmanager
def _without_main() -> Iterator[None]:
    """Workers started meanwhile do not import the caller's ``__main__`` (the CLI's: ~1.3 s of
    CPU each); they need only this module, which the pickled jobs name."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def default_jobs() -> int:
    """Worker processes by default: the cores this process may run on."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


@dataclass(slots=True)
class Usage:
    """What a run used: its processes, the workers' CPU seconds, which loop decided each partition."""

    jobs: int = 1
    worker_cpu_s: float = 0.0
    fast: list[int] = field(default_factory=list)
    reference: list[int] = field(default_factory=list)


def outcomes(
    sources: Mapping[int, ColumnSource],
    signed: Mapping[int, list[tuple[int, bytes, str]]],
    notes: Mapping[int, list[str]],
    registry: KeyRegistry,
    workflow_id: str | None,
    jobs: int,
    usage: Usage,
) -> Iterator[Outcome]:
    """Each partition's Outcome in partition order, verified by ``jobs`` processes: this one and
    ``jobs - 1`` workers.

    Columns are fetched here, in order. A partition goes to a worker when one is free, it has
    at least ``WORKER_MIN_ROWS`` rows and it is not the last; otherwise this process verifies it
    (no pickling) while the workers verify theirs. The caller may stop at the first failure;
    work not yet started is then cancelled.
    """
    parts = list(sources)
    workers = max(0, min(jobs, len(parts)) - 1)
    usage.jobs = 1
    pool: cf.ProcessPoolExecutor | None = None
    queue: deque[Outcome | cf.Future[Outcome]] = deque()

    def ready() -> bool:
        return bool(queue) and (isinstance(queue[0], Outcome) or queue[0].done())

    def take() -> Outcome:
        head = queue.popleft()
        out = head if isinstance(head, Outcome) else head.result()
        if not isinstance(head, Outcome):
            usage.worker_cpu_s += out.cpu_s
        (usage.fast if out.fast else usage.reference).append(out.partition)
        return out

    try:
        for k, p in enumerate(parts):
            cols = sources[p]()
            busy = sum(1 for f in queue if isinstance(f, cf.Future) and not f.done())
            submitted = False
            if busy < workers and len(cols) >= WORKER_MIN_ROWS and k < len(parts) - 1:
                try:
                    if pool is None:
                        pool = cf.ProcessPoolExecutor(
                            workers,
                            mp_context=multiprocessing.get_context("spawn"),
                            initializer=_init_worker,
                            initargs=(registry.to_json(),),
                        )
                    with _without_main():
                        job = _Job(cols, signed[p], notes[p], workflow_id)
                        queue.append(pool.submit(_run_job, job))
                    usage.jobs = workers + 1
                    submitted = True
                except (OSError, NotImplementedError):  # no processes here: verify in this one
                    workers = 0
            if not submitted:
                queue.append(verify_log(cols, signed[p], notes[p], registry, workflow_id))
            while ready():
                yield take()
        while queue:
            yield take()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def merge(into: Proven, part: Proven) -> None:
    """Add one partition's Proven to the run's (partitions in order)."""
    into.events += part.events
    into.workflows |= part.workflows
    into.completed_workflows |= part.completed_workflows
    first, last = part.first_event_us, part.last_event_us
    if first is not None and (into.first_event_us is None or first < into.first_event_us):
        into.first_event_us = first
    if last is not None and (into.last_event_us is None or last > into.last_event_us):
        into.last_event_us = last
    into.principals |= part.principals
    into.agents |= part.agents
    into.emitters |= part.emitters
    into.keys |= part.keys
    into.policy_digests |= part.policy_digests
    into.checkpoints += part.checkpoints
    for origin, (size, root) in part.logs.items():
        into.note_log(origin, size, bytes.fromhex(root))
    into.log_entries += part.log_entries
    into.unanchored += part.unanchored
    into.complete_as_of += part.complete_as_of


__all__ = [
    "DERIVED_COLUMNS",
    "ColumnSource",
    "LogColumns",
    "Outcome",
    "StoredEntry",
    "Usage",
    "check_stored_columns",
    "default_jobs",
    "expected_columns",
    "merge",
    "outcomes",
    "verify_log",
]
