"""The evidence bundle: one self-describing JSON document proving one workflow (docs/evidence-bundle.md)."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage import binding, bundle_v2, codec, findings, hashing, merkle, note
from lineage.errors import ConfigError, LineageError
from lineage.keys import KeyRegistry
from lineage.model import ChainEntry, Checkpoint, Violation

FORMAT = "lineage-evidence-bundle/v2"
FORMAT_V1 = "lineage-evidence-bundle/v1"
FORMATS = (FORMAT_V1, FORMAT)
"""Formats a reader accepts; v2 adds ``policies`` and ``findings`` (docs/evidence-bundle.md)."""
FORMAT_PREFIX = "lineage-evidence-bundle/"
HASH_SIZE = hashing.HASH_SIZE
LEAF_RECORD_SIZE = hashing.LEAF_RECORD_SIZE
"""A log leaf's preimage: prev_hash ‖ event_digest ‖ u64be(chain_seq) ‖ policy_digest."""

# Limits that keep a verifier's memory and time bounded (docs/evidence-bundle.md, "Limits").
MAX_BUNDLE_BYTES = 1 << 30
MAX_DEPTH = 32
MAX_ENTRIES = 1_000_000
MAX_LOGS = 1024
MAX_CHECKPOINTS_PER_LOG = 100_000
MAX_PATH = 64
"""Hashes in one inclusion path or compact-range prefix (tree sizes are below 2^64)."""
MAX_CONSISTENCY_PATH = 128
MAX_RECORD_BYTES = 1 << 20
"""Bytes of one event or seal record."""
MAX_TEXT = 65_535
"""Characters of one id, origin or checkpoint note."""
MAX_PARTITION = 2**31 - 1


_DECIMAL = re.compile(r"0|[1-9][0-9]{0,9}", re.ASCII)


class BundleError(LineageError):
    """A bundle cannot be built from the given entries, leaves and checkpoints."""


class BundleFormatError(LineageError, ValueError):
    """A document is not a usable evidence bundle (not JSON, wrong format id, bad field)."""


def leaf_record(entry: ChainEntry) -> bytes:
    """The 104-byte preimage of an entry's hash: SHA-256(0x11 ‖ leaf_record) == entry_hash."""
    return hashing.leaf_record(
        entry.prev_hash, entry.event_digest, entry.chain_seq, entry.policy_digest
    )


def leaf_record_hash(record: bytes) -> bytes:
    """The entry hash a 104-byte leaf record commits to."""
    return hashing.entry_hash_of_record(record)


# -- parsed, typed form ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealRef:
    """An entry's seal: the exact seal record bytes and the event digest's path to its root."""

    record: bytes
    index: int
    path: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Inclusion:
    """An RFC 6962 inclusion proof of the entry hash in its partition log at ``tree_size``."""

    tree_size: int
    path: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One chain entry as the bundle states it (nothing here is trusted until verified)."""

    chain_seq: int
    event_id: str
    event: bytes
    event_digest: bytes
    prev_hash: bytes
    entry_hash: bytes
    policy_digest: bytes
    partition: int
    log_index: int
    seal: SealRef | None
    inclusion: Inclusion


@dataclass(frozen=True, slots=True)
class Consistency:
    """An RFC 9162 consistency proof between two checkpoints of one log."""

    old_size: int
    new_size: int
    path: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class LogSection:
    """One partition log: its origin, signed checkpoint notes (ascending) and consistency proofs."""

    partition: int
    origin: str
    checkpoints: tuple[str, ...]
    consistency: tuple[Consistency, ...]


@dataclass(frozen=True, slots=True)
class TailProof:
    """The log after the workflow's last entry, proving no later leaf extends its chain."""

    partition: int
    tree_size: int
    log_index: int
    prefix: tuple[bytes, ...]
    following: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Bundle:
    """A parsed evidence bundle."""

    workflow_id: str
    entry_count: int
    policy_digests: tuple[bytes, ...]
    entries: tuple[BundleEntry, ...]
    logs: tuple[LogSection, ...]
    tail: TailProof
    keys: KeyRegistry
    checkpoint_keys: tuple[tuple[str, bytes], ...]


class _Reader:
    """Typed field access that names the JSON path of whatever is wrong."""

    def __init__(self, doc: object, path: str) -> None:
        if not isinstance(doc, dict):
            raise BundleFormatError(f"{path}: expected a JSON object, found {_kind(doc)}")
        self.doc: dict[str, Any] = doc
        self.path = path

    def _get(self, name: str) -> Any:
        if name not in self.doc:
            raise BundleFormatError(f"{self.path}.{name}: expected a value, found none")
        return self.doc[name]

    def integer(self, name: str, minimum: int = 0, maximum: int = 2**64 - 1) -> int:
        value = self._get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise BundleFormatError(
                f"{self.path}.{name}: expected an integer in [{minimum}, {maximum}], "
                f"found {_short(value)}"
            )
        return value

    def text(self, name: str, limit: int = MAX_TEXT) -> str:
        value = self._get(name)
        if not isinstance(value, str) or not value or len(value) > limit:
            raise BundleFormatError(
                f"{self.path}.{name}: expected a non-empty string of at most {limit} "
                f"characters, found {_short(value)}"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BundleFormatError(
                f"{self.path}.{name}: expected valid Unicode, found {exc.reason} at "
                f"character {exc.start}"
            ) from None
        return value

    def hash(self, name: str) -> bytes:
        return _hex(self._get(name), f"{self.path}.{name}")

    def hashes(self, name: str, limit: int = MAX_PATH) -> tuple[bytes, ...]:
        values = self.items(name)
        if len(values) > limit:
            raise BundleFormatError(
                f"{self.path}.{name}: expected at most {limit} hashes, found {len(values)}"
            )
        if set(map(type, values)) <= {str} and set(map(len, values)) <= {2 * HASH_SIZE}:
            joined = "".join(values)
            try:
                raw = bytes.fromhex(joined)
            except ValueError:
                raw = b""
            if raw.hex() == joined:
                return tuple(raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE))
        return tuple(_hex(v, f"{self.path}.{name}[{i}]") for i, v in enumerate(values))

    def b64(self, name: str) -> bytes:
        return _b64(self._get(name), f"{self.path}.{name}")

    def items(self, name: str) -> list[Any]:
        value = self._get(name)
        if not isinstance(value, list):
            raise BundleFormatError(f"{self.path}.{name}: expected a list, found {_kind(value)}")
        return value

    def obj(self, name: str) -> _Reader:
        return _Reader(self._get(name), f"{self.path}.{name}")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: object) -> str:
    """A bounded description of a found value for error messages."""
    if isinstance(value, int) and not isinstance(value, bool):
        digits = len(str(abs(value))) if abs(value) < 10**60 else "more than 60"
        return repr(value) if abs(value) < 10**60 else f"an integer of {digits} digits"
    if isinstance(value, str):
        return f"{value[:80]!r}" + (f" ({len(value)} characters)" if len(value) > 80 else "")
    return _kind(value)


def _hex(value: object, where: str) -> bytes:
    if isinstance(value, str) and len(value) == 2 * HASH_SIZE:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if raw.hex() == value:
            return raw
    raise BundleFormatError(f"{where}: expected 64 lowercase hex digits, found {_short(value)}")


def _b64(value: object, where: str, limit: int = MAX_BUNDLE_BYTES) -> bytes:
    if not isinstance(value, str):
        raise BundleFormatError(f"{where}: expected base64 text, found {_kind(value)}")
    if len(value) > (limit + 2) // 3 * 4:
        raise BundleFormatError(f"{where}: expected at most {limit} bytes, found more")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or base64.b64encode(raw).decode("ascii") != value:
        raise BundleFormatError(
            f"{where}: expected canonical standard base64, found {_short(value)}"
        )
    return raw


def _parse_entry(doc: object, where: str) -> BundleEntry:
    r = _Reader(doc, where)
    raw_seal = r.doc.get("seal")
    seal: SealRef | None = None
    if raw_seal is not None:
        s = r.obj("seal")
        seal = SealRef(
            _b64(s._get("record"), f"{s.path}.record", MAX_RECORD_BYTES),
            s.integer("index"),
            s.hashes("path"),
        )
    inc = r.obj("inclusion")
    return BundleEntry(
        chain_seq=r.integer("chain_seq"),
        event_id=r.text("event_id"),
        event=_b64(r._get("event"), f"{where}.event", MAX_RECORD_BYTES),
        event_digest=r.hash("event_digest"),
        prev_hash=r.hash("prev_hash"),
        entry_hash=r.hash("entry_hash"),
        policy_digest=r.hash("policy_digest"),
        partition=r.integer("partition", 0, MAX_PARTITION),
        log_index=r.integer("log_index"),
        seal=seal,
        inclusion=Inclusion(inc.integer("tree_size", 1), inc.hashes("path")),
    )


def _parse_log(doc: object, where: str) -> LogSection:
    r = _Reader(doc, where)
    notes: list[str] = []
    if len(r.items("checkpoints")) > MAX_CHECKPOINTS_PER_LOG:
        raise BundleFormatError(
            f"{where}.checkpoints: expected at most {MAX_CHECKPOINTS_PER_LOG} checkpoints, "
            f"found {len(r.items('checkpoints'))}"
        )
    for i, item in enumerate(r.items("checkpoints")):
        notes.append(_Reader(item, f"{where}.checkpoints[{i}]").text("note"))
    proofs = []
    for i, item in enumerate(r.items("consistency")):
        c = _Reader(item, f"{where}.consistency[{i}]")
        proofs.append(
            Consistency(
                c.integer("old_size", 1),
                c.integer("new_size", 1),
                c.hashes("path", MAX_CONSISTENCY_PATH),
            )
        )
    if not notes:
        raise BundleFormatError(
            f"{where}.checkpoints: expected at least one checkpoint, found none"
        )
    if len(proofs) != len(notes) - 1:
        raise BundleFormatError(
            f"{where}.consistency: expected {len(notes) - 1} proofs between consecutive "
            f"checkpoints, found {len(proofs)}"
        )
    partition = r.integer("partition", 0, MAX_PARTITION)
    origin = r.text("origin")
    parts = origin.rsplit("/", 2)
    if len(parts) != 3 or not all(parts) or not _DECIMAL.fullmatch(parts[2]):
        raise BundleFormatError(
            f"{where}.origin: expected <base>/<topic>/<partition> with the partition in ASCII "
            f"decimal digits, found {_short(origin)}"
        )
    return LogSection(partition, origin, tuple(notes), tuple(proofs))


def _parse_tail(r: _Reader) -> TailProof:
    log_index = r.integer("log_index")
    prefix = r.hashes("prefix")
    if len(prefix) != log_index.bit_count():
        raise BundleFormatError(
            f"{r.path}.prefix: expected {log_index.bit_count()} subtree hashes for "
            f"{log_index} leaves, found {len(prefix)}"
        )
    raw = r.b64("following")
    if len(raw) % LEAF_RECORD_SIZE:
        raise BundleFormatError(
            f"{r.path}.following: expected a multiple of {LEAF_RECORD_SIZE} bytes, found {len(raw)}"
        )
    records = tuple(raw[i : i + LEAF_RECORD_SIZE] for i in range(0, len(raw), LEAF_RECORD_SIZE))
    return TailProof(
        r.integer("partition", 0, MAX_PARTITION),
        r.integer("tree_size", 1),
        log_index,
        prefix,
        records,
    )


def parse_bundle(doc: object) -> Bundle:
    """Check a bundle document's structure and types; raise BundleFormatError naming the field."""
    r = _Reader(doc, "bundle")
    _check_format(r.doc.get("format"))
    _check_tree(doc)
    if len(r.items("entries")) > MAX_ENTRIES:
        raise BundleFormatError(
            f"bundle.entries: expected at most {MAX_ENTRIES} entries, found {len(r.items('entries'))}"
        )
    if len(r.items("logs")) > MAX_LOGS:
        raise BundleFormatError(
            f"bundle.logs: expected at most {MAX_LOGS} log sections, found {len(r.items('logs'))}"
        )
    entries = tuple(
        _parse_entry(e, f"bundle.entries[{i}]") for i, e in enumerate(r.items("entries"))
    )
    if not entries:
        raise BundleFormatError("bundle.entries: expected at least one entry, found none")
    logs = tuple(_parse_log(s, f"bundle.logs[{i}]") for i, s in enumerate(r.items("logs")))
    seen = [s.partition for s in logs]
    if len(set(seen)) != len(seen):
        raise BundleFormatError(f"bundle.logs: expected one section per partition, found {seen}")
    try:
        keys = KeyRegistry.from_json(r.doc.get("keys"), source="bundle.keys")
    except (ConfigError, ValueError, TypeError) as exc:
        raise BundleFormatError(f"bundle.keys: not a valid key registry: {exc}") from None
    vkeys = []
    for i, text in enumerate(r.items("checkpoint_keys")):
        try:
            vkeys.append(note.parse_verifier_key(text if isinstance(text, str) else ""))
        except (note.NoteError, ValueError) as exc:
            raise BundleFormatError(f"bundle.checkpoint_keys[{i}]: {exc}") from None
    return Bundle(
        workflow_id=r.text("workflow_id"),
        entry_count=r.integer("entry_count", 1),
        policy_digests=r.hashes("policy_digests", MAX_ENTRIES),
        entries=entries,
        logs=logs,
        tail=_parse_tail(r.obj("tail")),
        keys=keys,
        checkpoint_keys=tuple(vkeys),
    )


# -- building -------------------------------------------------------------------------------


class _Tree:
    """All perfect, aligned subtree hashes of a log, for O(log n) proofs at any size."""

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        self.levels = [leaf_hashes]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            node = merkle.node_hash
            self.levels.append([node(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi), hi > lo."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            k = n.bit_length() - 1
            return self.levels[k][lo >> k]
        k = 1 << ((n - 1).bit_length() - 1)
        return merkle.node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int) -> bytes:
        return self.subtree(0, size) if size else merkle.EMPTY_ROOT

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 PATH(index, D[size]), leaf to root."""
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if index < lo + k:
                path.append(self.subtree(lo + k, hi))
                hi = lo + k
            else:
                path.append(self.subtree(lo, lo + k))
                lo += k
        path.reverse()
        return path

    def consistency(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 PROOF(old, D[new]) for 0 < old < new."""
        return merkle.consistency_nodes(old, new, self.subtree)

    def frontier(self, size: int) -> list[bytes]:
        """Roots of the perfect subtrees covering the first ``size`` leaves, left to right."""
        out: list[bytes] = []
        lo = 0
        for k in range(size.bit_length() - 1, -1, -1):
            if size >> k & 1:
                out.append(self.levels[k][lo >> k])
                lo += 1 << k
        return out


def _hexes(values: Iterable[bytes]) -> list[str]:
    return [v.hex() for v in values]


def _b64text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _partition_checkpoints(
    partition: int, tree: _Tree, size: int, checkpoints: Iterable[Checkpoint]
) -> dict[int, Checkpoint]:
    """Checkpoints of one partition the leaves reach, by size; each must match the leaves."""
    chosen: dict[int, Checkpoint] = {}
    for cp in checkpoints:
        if cp.partition != partition or cp.tree_size > size or cp.tree_size == 0:
            continue
        root = tree.root(cp.tree_size)
        if root != cp.root_hash:
            raise BundleError(
                f"checkpoint {cp.origin} at size {cp.tree_size}: expected root "
                f"{cp.root_hash.hex()}, the stored log gives {root.hex()}"
            )
        chosen.setdefault(cp.tree_size, cp)
    return chosen


def build_bundle(
    workflow_id: str,
    entries: Iterable[ChainEntry],
    partition_leaves: Mapping[int, Sequence[bytes]],
    checkpoints: Iterable[Checkpoint],
    registry: KeyRegistry,
    checkpoint_vkey: str,
    *,
    policy_sets: Sequence[tuple[bytes, bytes]] = (),
    violations: Iterable[Violation] = (),
) -> dict[str, Any]:
    """The evidence bundle of ``workflow_id`` as a JSON-ready dict.

    ``entries`` are chain entries (others than the workflow's are ignored);
    ``partition_leaves`` holds, for every partition the workflow touches, the ``leaf_record`` of
    every entry of that partition in log order (the records, not just the entry hashes: the tail
    proof needs their preimages); ``checkpoints`` are signed checkpoints of those partitions;
    ``registry`` supplies the records of the seal keys used; ``checkpoint_vkey`` is the
    processor's verifier key. ``policy_sets`` are (TOML, Cedar) file bytes the exporter has; those
    named by the entries or decisions go into ``policies``; ``violations`` are the stored violations
    of the last entry's partition, from which the ``findings`` member is rebuilt and checked
    against the findings log the newest checkpoint signs (docs/findings.md).
    Raises BundleError when an entry is not in the leaves, a checkpoint does not match the leaves,
    an entry is not yet covered by a checkpoint, or the violations do not rebuild the findings log.
    """
    chain = sorted((e for e in entries if e.workflow_id == workflow_id), key=lambda e: e.chain_seq)
    if not chain:
        raise BundleError(f"workflow {workflow_id!r}: expected at least one entry, found none")
    try:
        vkey_name, vkey_public = note.parse_verifier_key(checkpoint_vkey)
    except note.NoteError as exc:
        raise BundleError(f"checkpoint key: {exc}") from None
    checkpoints = list(checkpoints)
    trees: dict[int, _Tree] = {}
    records: dict[int, Sequence[bytes]] = {}
    signed: dict[int, dict[int, Checkpoint]] = {}
    for p in sorted({e.source_partition for e in chain}):
        if p not in partition_leaves:
            raise BundleError(f"partition {p}: expected its log leaves, found none")
        records[p] = partition_leaves[p]
        for i, rec in enumerate(records[p]):
            if len(rec) != LEAF_RECORD_SIZE:
                raise BundleError(
                    f"partition {p} leaf {i}: expected a {LEAF_RECORD_SIZE}-byte leaf record, "
                    f"found {len(rec)} bytes"
                )
        hashes = [merkle.leaf_hash(leaf_record_hash(rec)) for rec in records[p]]
        trees[p] = _Tree(hashes)
        signed[p] = _partition_checkpoints(p, trees[p], len(hashes), checkpoints)
        if not signed[p]:
            raise BundleError(f"partition {p}: expected a signed checkpoint, found none")

    out_entries: list[dict[str, Any]] = []
    used: dict[int, set[int]] = {p: {max(s)} for p, s in signed.items()}
    seal_keys: set[str] = set()
    policy_digests: list[bytes] = []
    for e in chain:
        p, i = e.source_partition, e.log_index
        leaves = records[p]
        if i >= len(leaves) or leaf_record_hash(leaves[i]) != e.entry_hash:
            raise BundleError(
                f"entry {workflow_id}#{e.chain_seq}: expected its hash at log index {i} of "
                f"partition {p}, found {'nothing' if i >= len(leaves) else 'another leaf'}"
            )
        covering = [s for s in signed[p] if s > i]
        if not covering:
            raise BundleError(
                f"entry {workflow_id}#{e.chain_seq} (log index {i} of partition {p}) is not yet "
                f"covered by a signed checkpoint; export again after the next checkpoint"
            )
        size = min(covering)
        used[p].add(size)
        if e.policy_digest not in policy_digests:
            policy_digests.append(e.policy_digest)
        seal: dict[str, Any] | None = None
        if e.seal_bytes:
            seal = {
                "record": _b64text(e.seal_bytes),
                "index": e.seal_index,
                "path": _hexes(e.seal_path),
            }
            seal_keys.add(_seal_key_id(e.seal_bytes))
        out_entries.append(
            {
                "chain_seq": e.chain_seq,
                "event_id": e.event_id,
                "event": _b64text(e.event_bytes),
                "event_digest": e.event_digest.hex(),
                "prev_hash": e.prev_hash.hex(),
                "entry_hash": e.entry_hash.hex(),
                "policy_digest": e.policy_digest.hex(),
                "partition": p,
                "log_index": i,
                "seal": seal,
                "inclusion": {"tree_size": size, "path": _hexes(trees[p].inclusion(i, size))},
            }
        )

    logs = []
    for p in sorted(used):
        sizes = sorted(used[p])
        logs.append(
            {
                "partition": p,
                "origin": signed[p][sizes[0]].origin,
                "checkpoints": [{"note": signed[p][s].note} for s in sizes],
                "consistency": [
                    {"old_size": a, "new_size": b, "path": _hexes(trees[p].consistency(a, b))}
                    for a, b in itertools.pairwise(sizes)
                ],
            }
        )

    last = chain[-1]
    p, i = last.source_partition, last.log_index
    newest = max(signed[p])
    key_records = [r for r in registry.records() if r.key_id in seal_keys]
    key_records += [
        r for r in registry.records() if r.public_key == vkey_public and r.key_id not in seal_keys
    ]
    try:
        policies = bundle_v2.policies_member(
            (e.event_bytes for e in chain), policy_digests, policy_sets
        )
        newest_note = note.parse_checkpoint(binding.note_text(signed[p][newest].note))
        signed_findings = findings.signed_findings(newest_note)
        findings_member = findings.bundle_member(workflow_id, p, violations, signed_findings)
    except LineageError as exc:
        raise BundleError(str(exc)) from None
    return {
        "format": FORMAT,
        "workflow_id": workflow_id,
        "entry_count": len(chain),
        "policy_digests": _hexes(policy_digests),
        "entries": out_entries,
        "logs": logs,
        "tail": {
            "partition": p,
            "tree_size": newest,
            "log_index": i,
            "prefix": _hexes(trees[p].frontier(i)),
            "following": _b64text(b"".join(records[p][i + 1 : newest])),
        },
        "keys": KeyRegistry(key_records).to_json(),
        "checkpoint_keys": [note.verifier_key(vkey_name, vkey_public)],
        "policies": policies,
        "findings": findings_member,
    }


def _seal_key_id(seal_bytes: bytes) -> str:
    try:
        key_id = codec.load("seal").decode_body(seal_bytes)["key_id"]
    except LineageError as exc:
        raise BundleError(f"seal record: {exc}") from None
    return str(key_id)


# -- files ----------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise BundleFormatError(f"duplicate JSON member {name!r}")
        out[name] = value
    return out


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259 §6), though Python reads them."""
    raise BundleFormatError(
        f"expected RFC 8259 JSON, found {name}: NaN and Infinity are not JSON numbers"
    )


def _check_format(value: object) -> None:
    if value in FORMATS:
        return
    readable = " or ".join(repr(f) for f in FORMATS)
    if isinstance(value, str) and value.startswith(FORMAT_PREFIX):
        raise BundleFormatError(
            f"format {value[len(FORMAT_PREFIX) :][:20]!r} no longer supported or not yet known: "
            f"this verifier reads {readable}"
        )
    raise BundleFormatError(f"bundle.format: expected {readable}, found {_short(value)}")


def _check_tree(doc: object) -> None:
    """Nesting is at most MAX_DEPTH (every string the parser reads is checked by ``text``)."""
    level: list[object] = [doc]
    for _ in range(MAX_DEPTH):
        below: list[object] = []
        for value in level:
            if isinstance(value, dict):
                below += [v for v in value.values() if isinstance(v, dict | list)]
            elif isinstance(value, list):
                below += [v for v in value if isinstance(v, dict | list)]
        if not below:
            return
        level = below
    raise BundleFormatError(f"expected JSON nested at most {MAX_DEPTH} deep, found more")


def loads_bundle(text: str | bytes) -> dict[str, Any]:
    """Parse bundle JSON text and check the format id; BundleFormatError when unusable.

    Never raises anything else: over-long input, integers of thousands of digits, deep nesting,
    lone surrogates, duplicate members and ``NaN``/``Infinity`` are reported as unusable input
    with a reason.
    """
    doc = loads_json(text)
    if not isinstance(doc, dict):
        raise BundleFormatError(f"expected a JSON object, found {_kind(doc)}")
    _check_format(doc.get("format"))
    return doc


def loads_json(text: str | bytes, max_bytes: int = MAX_BUNDLE_BYTES) -> Any:
    """Parse evidence JSON as strictly as a bundle (RFC 8259, no duplicate members, bounded).

    For every JSON document a verifier reads from outside (bundles, trusted checkpoints), so
    that no two texts mean one document and hostile input is refused with a reason:
    BundleFormatError, never anything else.
    """
    if len(text) > max_bytes:
        raise BundleFormatError(f"expected at most {max_bytes} bytes of JSON, found {len(text)}")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except BundleFormatError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleFormatError(f"not a JSON document: {exc}") from None
    except RecursionError:
        raise BundleFormatError(
            f"expected JSON nested at most {MAX_DEPTH} deep, found deeper nesting"
        ) from None
    except ValueError as exc:
        raise BundleFormatError(f"not a usable JSON document: {str(exc)[:200]}") from None
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if _SURROGATE_ESCAPE.search(raw):
        _check_strings(doc)
    return doc


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""Only a \\uD800-\\uDFFF escape can put a surrogate into parsed JSON (UTF-8 cannot)."""


def _check_strings(doc: object) -> None:
    """Every string, member names included, is valid Unicode (a paired surrogate escape is)."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack += value.keys()
            stack += value.values()
        elif isinstance(value, list):
            stack += value
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BundleFormatError(
                    f"a string holds {exc.reason} at character {exc.start}: not valid Unicode "
                    f"(found {_short(value)})"
                ) from None


def read_bundle(path: Path) -> dict[str, Any]:
    """Read a bundle file; BundleFormatError if it cannot be read or is not a bundle."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise BundleFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return loads_bundle(raw)
    except BundleFormatError as exc:
        raise BundleFormatError(f"{path}: {exc}") from None


def write_bundle(bundle: Mapping[str, Any], path: Path) -> None:
    """Write a bundle as indented, ASCII-only JSON."""
    path.write_text(json.dumps(bundle, indent=1) + "\n", encoding="ascii")
