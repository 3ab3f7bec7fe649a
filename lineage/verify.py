"""Offline verification of evidence bundles and stored chain entries, trusting only key material.

Everything is recomputed from exact bytes: event digests, seal signatures and seal paths, entry
hashes and chain links, log inclusion, checkpoint signatures and consistency. The first thing that
fails is reported with where it is and what was expected versus found (docs/evidence-bundle.md).

Trust: an auditor should pass their own ``registry`` and ``trusted_checkpoint_vkeys``. Without
them, ``verify_bundle`` uses the keys inside the bundle, which proves only that the bundle is
internally consistent and was signed by *those* keys; the report says so in ``trust``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lineage import codec, hashing, merkle, note
from lineage.bundle import Bundle, BundleEntry, BundleFormatError, LogSection, parse_bundle
from lineage.errors import LineageError
from lineage.keys import (
    BadSignatureError,
    KeyCompromisedError,
    KeyExpiredError,
    KeyRegistry,
    KeyScopeError,
    KeyTrustError,
    RevokedKeyError,
    Role,
    UnknownKeyError,
    format_time_us,
)
from lineage.model import ChainEntry, Checkpoint, Seal

EXIT_OK = 0
EXIT_INTEGRITY = 1
EXIT_UNUSABLE = 2


class FailureKind(StrEnum):
    """What failed; every kind but UNUSABLE_INPUT is an integrity failure (exit code 1)."""

    UNUSABLE_INPUT = "UNUSABLE_INPUT"
    EVENT_DIGEST_MISMATCH = "EVENT_DIGEST_MISMATCH"
    EVENT_MALFORMED = "EVENT_MALFORMED"
    EVENT_ID_MISMATCH = "EVENT_ID_MISMATCH"
    WORKFLOW_MISMATCH = "WORKFLOW_MISMATCH"
    PARTITION_MISMATCH = "PARTITION_MISMATCH"
    COLUMN_MISMATCH = "COLUMN_MISMATCH"
    MISSING_SEAL = "MISSING_SEAL"
    SEAL_MALFORMED = "SEAL_MALFORMED"
    SEAL_MISMATCH = "SEAL_MISMATCH"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    REVOKED_KEY = "REVOKED_KEY"
    KEY_COMPROMISED = "KEY_COMPROMISED"
    KEY_SCOPE = "KEY_SCOPE"
    KEY_EXPIRED = "KEY_EXPIRED"
    BAD_SEAL_SIGNATURE = "BAD_SEAL_SIGNATURE"
    SEAL_INCLUSION = "SEAL_INCLUSION"
    CHAIN_SEQUENCE = "CHAIN_SEQUENCE"
    CHAIN_LINK = "CHAIN_LINK"
    ENTRY_HASH_MISMATCH = "ENTRY_HASH_MISMATCH"
    POLICY_DIGESTS = "POLICY_DIGESTS"
    MISSING_CHECKPOINT = "MISSING_CHECKPOINT"
    STALE_CHECKPOINT = "STALE_CHECKPOINT"
    LOG_INCLUSION = "LOG_INCLUSION"
    CHECKPOINT_SIGNATURE = "CHECKPOINT_SIGNATURE"
    CHECKPOINT_ORIGIN = "CHECKPOINT_ORIGIN"
    CHECKPOINT_ROW_MISMATCH = "CHECKPOINT_ROW_MISMATCH"
    CHECKPOINT_INCONSISTENT = "CHECKPOINT_INCONSISTENT"
    CHAIN_TRUNCATED = "CHAIN_TRUNCATED"
    TAIL_PROOF_MISMATCH = "TAIL_PROOF_MISMATCH"
    LOG_INDEX = "LOG_INDEX"
    LOG_ROOT_MISMATCH = "LOG_ROOT_MISMATCH"
    LOG_TRUNCATED = "LOG_TRUNCATED"
    # -- witness checks (lineage/witnessed.py, docs/witness.md) --
    WITNESS_COSIGNATURES = "WITNESS_COSIGNATURES"
    LOG_ROLLED_BACK = "LOG_ROLLED_BACK"
    LOG_MISSING = "LOG_MISSING"
    TRUSTED_CHECKPOINT_MISMATCH = "TRUSTED_CHECKPOINT_MISMATCH"


Where = dict[str, str | int]


@dataclass(frozen=True, slots=True)
class Failure:
    """The first thing that failed: its kind, where it is, and what was expected versus found."""

    kind: FailureKind
    message: str
    where: Where
    expected: str = ""
    found: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind.value,
            "message": self.message,
            "where": dict(self.where),
            "expected": self.expected,
            "found": self.found,
        }


@dataclass(slots=True)
class Proven:
    """What verification established (up to the first failure, if any)."""

    events: int = 0
    workflows: set[str] = field(default_factory=set)
    completed_workflows: set[str] = field(default_factory=set)
    first_event_us: int | None = None
    last_event_us: int | None = None
    principals: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    emitters: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    policy_digests: set[str] = field(default_factory=set)
    checkpoints: list[str] = field(default_factory=list)
    log_entries: int = 0
    unanchored: int = 0
    complete_as_of: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (sets sorted, times in RFC 3339)."""

        def t(us: int | None) -> str | None:
            return None if us is None else format_time_us(us)

        return {
            "events": self.events,
            "workflows": len(self.workflows),
            "completed_workflows": len(self.completed_workflows),
            "first_event_time": t(self.first_event_us),
            "last_event_time": t(self.last_event_us),
            "principals": sorted(self.principals),
            "agents": sorted(self.agents),
            "emitters": sorted(self.emitters),
            "keys": sorted(self.keys),
            "policy_digests": sorted(self.policy_digests),
            "checkpoints": list(self.checkpoints),
            "log_entries": self.log_entries,
            "unanchored_entries": self.unanchored,
            "complete_as_of": list(self.complete_as_of),
        }


@dataclass(slots=True)
class Report:
    """Outcome of one verification run."""

    source: str
    trust: str
    failure: Failure | None
    proven: Proven
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return self.failure is None

    @property
    def exit_code(self) -> int:
        """0 verified, 1 integrity failure, 2 unusable input."""
        if self.failure is None:
            return EXIT_OK
        return EXIT_UNUSABLE if self.failure.kind is FailureKind.UNUSABLE_INPUT else EXIT_INTEGRITY

    @property
    def entries_per_s(self) -> float:
        """Entries checked per second of verification."""
        n = max(self.proven.log_entries, self.proven.events)
        return n / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "source": self.source,
            "trust": self.trust,
            "failure": self.failure.to_json() if self.failure else None,
            "proven": self.proven.to_json(),
            "elapsed_s": round(self.elapsed_s, 6),
            "entries_per_s": round(self.entries_per_s, 1),
            "warnings": list(self.warnings),
        }


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cycle collector: decoding allocates many short-lived, acyclic objects."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Fail(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure

    def at(self, where: Where) -> _Fail:
        """The same failure, located at ``where`` (keys it already has win)."""
        f = self.failure
        return _Fail(Failure(f.kind, f.message, {**where, **f.where}, f.expected, f.found))


def _fail(
    kind: FailureKind,
    message: str,
    where: Where | None = None,
    expected: object = "",
    found: object = "",
) -> _Fail:
    return _Fail(Failure(kind, message, dict(where or {}), str(expected), str(found)))


_KEY_FAILURES: tuple[tuple[type[KeyTrustError], FailureKind], ...] = (
    (UnknownKeyError, FailureKind.UNKNOWN_KEY),
    (KeyCompromisedError, FailureKind.KEY_COMPROMISED),  # before its base, RevokedKeyError
    (RevokedKeyError, FailureKind.REVOKED_KEY),
    (KeyScopeError, FailureKind.KEY_SCOPE),
    (KeyExpiredError, FailureKind.KEY_EXPIRED),
    (BadSignatureError, FailureKind.BAD_SEAL_SIGNATURE),
)


def _key_failure(exc: KeyTrustError) -> FailureKind:
    for cls, kind in _KEY_FAILURES:
        if isinstance(exc, cls):
            return kind
    return FailureKind.UNKNOWN_KEY


def emitter_subject(emitter_id: str) -> str:
    """An emitter id is ``<subject>#<instance>``; keys are issued to the subject."""
    return emitter_id.split("#", 1)[0]


def checkpoint_vkeys(registry: KeyRegistry) -> list[str]:
    """Verifier keys of the registry's unrevoked processor keys (key name = subject)."""
    return [
        note.verifier_key(r.subject, r.public_key)
        for r in registry.records()
        if r.role is Role.PROCESSOR and not r.revoked
    ]


def _parse_vkeys(vkeys: Iterable[str]) -> list[tuple[str, bytes]]:
    out = []
    for vkey in vkeys:
        try:
            out.append(note.parse_verifier_key(vkey))
        except note.NoteError as exc:
            raise _fail(FailureKind.UNUSABLE_INPUT, f"checkpoint key: {exc}") from None
    if not out:
        raise _fail(
            FailureKind.UNUSABLE_INPUT,
            "no trusted checkpoint key: pass one or a registry holding a processor key",
        )
    return out


_sha256 = hashlib.sha256
_LEAF = merkle.LEAF_PREFIX
_NODE = merkle.NODE_PREFIX


class PathMemo:
    """RFC 9162 inclusion checks against one root, remembering every node already proven.

    A node is identified by its position (index at its level, levels climbed); once a path has
    led to the root, a later path reaching a known node with the same node hash *and* the same
    remaining siblings is proven without hashing further. Same answers as
    ``merkle.verify_inclusion_hash``, with about two hashes per leaf instead of log2(size).
    """

    __slots__ = ("_nodes", "root", "size")

    def __init__(self, size: int, root: bytes) -> None:
        self.size = size
        self.root = root
        self._nodes: dict[int, tuple[bytes, tuple[bytes, ...]]] = {}

    def verify(self, leaf_hash: bytes, index: int, proof: Sequence[bytes]) -> bool:
        """Whether ``proof`` leads from ``leaf_hash`` at ``index`` to the root."""
        if not 0 <= index < self.size or len(leaf_hash) != merkle.HASH_SIZE:
            return False
        path = proof if type(proof) is tuple else tuple(proof)
        nodes = self._nodes
        fn, sn, r, level = index, self.size - 1, leaf_hash, 0
        climbed: list[tuple[int, bytes, int]] = []
        ok = False
        for k, p in enumerate(path, 1):
            if sn == 0 or len(p) != merkle.HASH_SIZE:
                return False
            if fn & 1 or fn == sn:
                r = _sha256(_NODE + p + r).digest()
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
                    level += 1
            else:
                r = _sha256(_NODE + r + p).digest()
            fn >>= 1
            sn >>= 1
            level += 1
            node = fn << 7 | level
            known = nodes.get(node)
            if known is not None:
                ok = known[0] == r and known[1] == path[k:]
                break
            climbed.append((node, r, k))
        else:
            ok = sn == 0 and r == self.root
        if ok:
            for node, h, at in climbed:
                nodes[node] = (h, path[at:])
        return ok


@dataclass(slots=True)
class _SealInfo:
    seal: Seal
    message: bytes
    paths: PathMemo
    signature_ok: bool = False
    not_before_us: int = 0
    not_after_us: int = -1


ColumnCheck = Callable[[ChainEntry, Mapping[str, Any]], tuple[str, object, object] | None]
"""Compares a stored entry's derived columns with its decoded event: (column, expected, found)."""

MAX_CACHED_SEALS = 4096


class _Checker:
    """Per-entry checks shared by bundle and stored-entry verification, with caches.

    Checks raise ``_Fail`` without a location; the caller adds it with ``_Fail.at``.
    """

    def __init__(self, registry: KeyRegistry, vkeys: list[tuple[str, bytes]], proven: Proven):
        self.registry = registry
        self.vkeys = vkeys
        self.proven = proven
        self.event_schema = codec.load("execution_event")
        self.event_header = self.event_schema.header
        self.seal_schema = codec.load("seal")
        self.seal_header = self.seal_schema.header
        self.seals: dict[bytes, _SealInfo] = {}

    # -- checkpoints --

    def open_checkpoint(self, text: str) -> note.Checkpoint:
        """Verify a checkpoint note's signature with the trusted keys and parse its body."""
        try:
            body, _ = note.open_note(text, self.vkeys)
        except note.NoteError as exc:
            names = ", ".join(sorted(f"{n}+{note.key_id(n, k).hex()}" for n, k in self.vkeys))
            raise _fail(
                FailureKind.CHECKPOINT_SIGNATURE,
                f"checkpoint note: {exc}",
                None,
                f"a valid signature by {names}",
                "none that verifies",
            ) from None
        try:
            cp = note.parse_checkpoint(body)
        except note.NoteError as exc:
            raise _fail(
                FailureKind.CHECKPOINT_ORIGIN, f"signed note is not a checkpoint: {exc}"
            ) from None
        for name, key in self.vkeys:
            self.proven.keys.add(f"{name}+{note.key_id(name, key).hex()}")
        return cp

    # -- events --

    def event(self, data: bytes, stated_digest: bytes) -> tuple[bytes, dict[str, Any]]:
        """Recompute the event digest from the exact bytes and decode the event."""
        digest = _sha256(hashing.EVENT_PREFIX + data).digest()
        if digest != stated_digest:
            raise _fail(
                FailureKind.EVENT_DIGEST_MISMATCH,
                "the event bytes do not hash to the digest the chain commits to",
                None,
                stated_digest.hex(),
                digest.hex(),
            )
        if data[: codec.HEADER_LEN] != self.event_header:
            raise _fail(
                FailureKind.EVENT_MALFORMED,
                "not a single-object ExecutionEvent",
                None,
                self.event_header.hex(),
                data[: codec.HEADER_LEN].hex(),
            )
        try:
            record = self.event_schema.decode_body(data)
        except LineageError as exc:
            raise _fail(FailureKind.EVENT_MALFORMED, f"event does not decode: {exc}") from None
        return digest, record

    @staticmethod
    def bind(record: Mapping[str, Any], event_id: str, workflow_id: str, partition: int) -> None:
        """The decoded event must be the one the entry names, in its workflow and partition."""
        if record["event_id"] != event_id:
            raise _fail(
                FailureKind.EVENT_ID_MISMATCH,
                "the event bytes hold another event id",
                None,
                event_id,
                record["event_id"],
            )
        if record["workflow_id"] != workflow_id:
            raise _fail(
                FailureKind.WORKFLOW_MISMATCH,
                "the event belongs to another workflow",
                None,
                workflow_id,
                record["workflow_id"],
            )
        if record["partition"] != partition:
            raise _fail(
                FailureKind.PARTITION_MISMATCH,
                "the event was written to another partition than its log",
                None,
                partition,
                record["partition"],
            )

    def note_event(self, record: Mapping[str, Any]) -> None:
        """Add a verified event to what was proven."""
        p = self.proven
        p.events += 1
        p.workflows.add(record["workflow_id"])
        t = record["event_time"]
        if p.first_event_us is None or t < p.first_event_us:
            p.first_event_us = t
        if p.last_event_us is None or t > p.last_event_us:
            p.last_event_us = t
        p.principals.add(record["principal"])
        if record["agent_id"]:
            p.agents.add(record["agent_id"])
        p.emitters.add(record["emitter_id"])

    # -- seals --

    def _parse_seal(self, data: bytes) -> _SealInfo:
        if data[: codec.HEADER_LEN] != self.seal_header:
            raise _fail(
                FailureKind.SEAL_MALFORMED,
                "not a single-object Seal record",
                None,
                self.seal_header.hex(),
                data[: codec.HEADER_LEN].hex(),
            )
        try:
            seal = Seal.from_record(self.seal_schema.decode_body(data))
        except (LineageError, TypeError) as exc:
            raise _fail(FailureKind.SEAL_MALFORMED, f"seal does not decode: {exc}") from None
        message = hashing.seal_message(
            seal.emitter_id,
            seal.key_id,
            seal.topic,
            seal.partition,
            seal.first_seq,
            seal.last_seq,
            seal.merkle_root,
            seal.prev_seal_hash,
        )
        if len(self.seals) >= MAX_CACHED_SEALS:
            self.seals.clear()
        info = _SealInfo(seal, message, PathMemo(seal.count, seal.merkle_root))
        self.seals[data] = info
        return info

    def _key(self, s: Seal, info: _SealInfo, at_us: int) -> None:
        """The seal's key may sign for its emitter at ``at_us``; its signature is checked once."""
        if info.not_before_us <= at_us <= info.not_after_us:
            return
        key = self.registry.get(s.key_id)
        role = (
            key.role
            if key is not None and key.role in (Role.EMITTER, Role.AUTHORIZER)
            else Role.EMITTER
        )
        subject = emitter_subject(s.emitter_id)
        try:
            record = self.registry.check(s.key_id, role=role, subject=subject, at_us=at_us)
            if not info.signature_ok:
                self.registry.verify(
                    s.key_id, info.message, s.signature, role=role, subject=subject, at_us=at_us
                )
                info.signature_ok = True
                self.proven.keys.add(s.key_id)
        except KeyTrustError as exc:
            kind = _key_failure(exc)
            expected = {
                FailureKind.UNKNOWN_KEY: "a key in the registry",
                FailureKind.REVOKED_KEY: "an unrevoked key",
                FailureKind.KEY_COMPROMISED: "a signature made before the key's compromise",
                FailureKind.KEY_SCOPE: f"a {role.value} key of subject {subject}",
                FailureKind.KEY_EXPIRED: f"a key valid at {format_time_us(at_us)}",
                FailureKind.BAD_SEAL_SIGNATURE: "a valid Ed25519 signature over the seal message",
            }[kind]
            raise _fail(kind, f"seal by {s.key_id}: {exc}", None, expected, s.key_id) from None
        info.not_before_us, info.not_after_us = record.trusted_window()

    def seal(
        self,
        record: Mapping[str, Any],
        digest: bytes,
        data: bytes,
        index: int,
        path: Sequence[bytes],
    ) -> None:
        """Check the seal covers this event: binding, key trust, signature, inclusion path."""
        if not data:
            raise _fail(
                FailureKind.MISSING_SEAL,
                "no seal authenticates this event",
                None,
                "a seal record",
                "none",
            )
        info = self.seals.get(data) or self._parse_seal(data)
        s = info.seal
        if (
            record["emitter_seq"] != s.first_seq + index
            or record["emitter_id"] != s.emitter_id
            or record["partition"] != s.partition
            or record["topic"] != s.topic
            or index >= s.count
        ):
            raise _fail(
                FailureKind.SEAL_MISMATCH,
                "the seal is not the event's emitter's seal over its sequence number",
                None,
                f"{record['emitter_id']} {record['topic']}[{record['partition']}] "
                f"seq {record['emitter_seq']}",
                f"{s.emitter_id} {s.topic}[{s.partition}] seqs {s.first_seq}..{s.last_seq}"
                f" index {index}",
            )
        self._key(s, info, record["event_time"])
        if not info.paths.verify(_sha256(_LEAF + digest).digest(), index, path):
            raise _fail(
                FailureKind.SEAL_INCLUSION,
                "the seal path does not lead from the event digest to the seal's root",
                None,
                s.merkle_root.hex(),
                f"path of {len(path)} nodes at index {index}",
            )


def _chain_step(
    seq: int, head: bytes, chain_seq: int, prev: bytes, digest: bytes, policy: bytes, stated: bytes
) -> bytes:
    """Check one link of a workflow chain; returns the recomputed entry hash."""
    if chain_seq != seq:
        raise _fail(
            FailureKind.CHAIN_SEQUENCE,
            "entries are missing, inserted or reordered",
            None,
            f"chain_seq {seq}",
            f"chain_seq {chain_seq}",
        )
    if prev != head:
        raise _fail(
            FailureKind.CHAIN_LINK,
            "prev_hash does not link to the previous entry",
            None,
            head.hex(),
            prev.hex(),
        )
    computed = _sha256(
        hashing.ENTRY_PREFIX + prev + digest + chain_seq.to_bytes(8, "big") + policy
    ).digest()
    if computed != stated:
        raise _fail(
            FailureKind.ENTRY_HASH_MISMATCH,
            "the entry hash does not match its prev hash, digest, seq and policy",
            None,
            computed.hex(),
            stated.hex(),
        )
    return computed


def _origin_partition(origin: str) -> tuple[str, int] | None:
    """(topic, partition) from ``<base>/<topic>/<partition>``."""
    parts = origin.rsplit("/", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


# -- bundles --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Log:
    partition: int
    origin: str
    topic: str
    sizes: list[int]
    roots: dict[int, bytes]
    memos: dict[int, PathMemo]


def _trust(registry: KeyRegistry | None, vkeys: Sequence[str] | None) -> str:
    seals = "auditor registry" if registry is not None else "keys inside the bundle (self-asserted)"
    cps = (
        "auditor checkpoint keys"
        if vkeys is not None
        else "auditor registry"
        if registry is not None
        else "keys inside the bundle (self-asserted)"
    )
    return f"seal keys: {seals}; checkpoint keys: {cps}"


def verify_bundle(
    bundle: Mapping[str, Any],
    *,
    registry: KeyRegistry | None = None,
    trusted_checkpoint_vkeys: Sequence[str] | None = None,
    workflow_id: str | None = None,
) -> Report:
    """Verify an evidence bundle document (as returned by ``read_bundle``).

    ``registry`` is the key registry the auditor trusts for seal keys, and
    ``trusted_checkpoint_vkeys`` the processor verifier keys they trust; when ``registry`` is
    given and vkeys are not, its unrevoked processor keys are used. Without either, the bundle's
    own keys are used and the report's ``trust`` says the result is only self-consistency.
    ``workflow_id``, when given, must be the bundle's workflow.
    """
    started = time.perf_counter()
    proven = Proven()
    report = Report("bundle", _trust(registry, trusted_checkpoint_vkeys), None, proven)
    if registry is None:
        report.warnings.append(
            "seal keys were taken from the bundle itself; pass --registry "
            "with keys you trust to verify who signed"
        )
    if registry is None and trusted_checkpoint_vkeys is None:
        report.warnings.append(
            "checkpoint keys were taken from the bundle itself; pass "
            "--checkpoint-key or --registry to verify the processor's signature"
        )
    try:
        try:
            parsed = parse_bundle(bundle)
        except BundleFormatError as exc:
            raise _fail(FailureKind.UNUSABLE_INPUT, str(exc)) from None
        if registry is not None:
            keys = registry
            vkeys = _parse_vkeys(
                trusted_checkpoint_vkeys
                if trusted_checkpoint_vkeys is not None
                else checkpoint_vkeys(registry)
            )
        else:
            keys = parsed.keys
            vkeys = (
                _parse_vkeys(trusted_checkpoint_vkeys)
                if trusted_checkpoint_vkeys is not None
                else list(parsed.checkpoint_keys)
            )
            if not vkeys:
                raise _fail(FailureKind.UNUSABLE_INPUT, "the bundle names no checkpoint key")
        if workflow_id is not None and parsed.workflow_id != workflow_id:
            raise _fail(
                FailureKind.WORKFLOW_MISMATCH,
                "the bundle proves another workflow",
                {"workflow_id": parsed.workflow_id},
                workflow_id,
                parsed.workflow_id,
            )
        with _gc_paused():
            _verify_parsed(parsed, _Checker(keys, vkeys, proven))
    except _Fail as exc:
        report.failure = exc.failure
    report.elapsed_s = time.perf_counter() - started
    return report


def _verify_log(section: LogSection, checker: _Checker) -> _Log:
    located = _origin_partition(section.origin)
    if located is None or located[1] != section.partition:
        raise _fail(
            FailureKind.CHECKPOINT_ORIGIN,
            "the log origin names another partition",
            None,
            f"<base>/<topic>/{section.partition}",
            section.origin,
        )
    log = _Log(section.partition, section.origin, located[0], [], {}, {})
    for i, text in enumerate(section.checkpoints):
        try:
            cp = checker.open_checkpoint(text)
        except _Fail as exc:
            raise exc.at({"checkpoint": i}) from None
        at: Where = {"tree_size": cp.size}
        if cp.origin != section.origin:
            raise _fail(
                FailureKind.CHECKPOINT_ORIGIN,
                "a checkpoint of another log",
                at,
                section.origin,
                cp.origin,
            )
        if log.sizes and cp.size <= log.sizes[-1]:
            raise _fail(
                FailureKind.UNUSABLE_INPUT,
                "checkpoints must be in ascending size",
                at,
                f"size > {log.sizes[-1]}",
                cp.size,
            )
        if log.sizes:
            proof = section.consistency[i - 1]
            old = log.sizes[-1]
            if (proof.old_size, proof.new_size) != (old, cp.size) or not merkle.verify_consistency(
                old, cp.size, log.roots[old], cp.root_hash, proof.path
            ):
                raise _fail(
                    FailureKind.CHECKPOINT_INCONSISTENT,
                    "the log at this checkpoint does not extend the earlier one (fork or "
                    "rewritten history)",
                    at,
                    f"an append-only extension of size {old} root {log.roots[old].hex()}",
                    f"root {cp.root_hash.hex()} with no valid consistency proof",
                )
        log.sizes.append(cp.size)
        log.roots[cp.size] = cp.root_hash
        log.memos[cp.size] = PathMemo(cp.size, cp.root_hash)
        checker.proven.checkpoints.append(f"{cp.origin} size {cp.size} root {cp.root_hash.hex()}")
    return log


def _verify_parsed(parsed: Bundle, checker: _Checker) -> None:
    logs: dict[int, _Log] = {}
    for section in parsed.logs:
        try:
            logs[section.partition] = _verify_log(section, checker)
        except _Fail as exc:
            raise exc.at({"partition": section.partition, "origin": section.origin}) from None
    wf = parsed.workflow_id
    head: bytes = hashing.genesis_hash(wf)
    record: dict[str, Any] = {}
    for k, e in enumerate(parsed.entries):
        try:
            log = logs.get(e.partition)
            if log is None:
                raise _fail(
                    FailureKind.MISSING_CHECKPOINT,
                    "the bundle has no log for the entry's partition",
                    None,
                    f"a log for partition {e.partition}",
                    "none",
                )
            digest, record = checker.event(e.event, e.event_digest)
            checker.bind(record, e.event_id, wf, e.partition)
            if record["topic"] != log.topic:
                raise _fail(
                    FailureKind.PARTITION_MISMATCH,
                    "the event was written to another topic than its log's",
                    None,
                    log.topic,
                    record["topic"],
                )
            seal = e.seal
            checker.seal(
                record,
                digest,
                seal.record if seal else b"",
                seal.index if seal else 0,
                seal.path if seal else (),
            )
            head = _chain_step(
                k, head, e.chain_seq, e.prev_hash, digest, e.policy_digest, e.entry_hash
            )
            _check_inclusion(e, head, log)
        except _Fail as exc:
            raise exc.at({"entry": k, "chain_seq": e.chain_seq, "event_id": e.event_id}) from None
        checker.note_event(record)
        checker.proven.policy_digests.add(e.policy_digest.hex())
    stated = {d.hex() for d in parsed.policy_digests}
    if stated != checker.proven.policy_digests:
        raise _fail(
            FailureKind.POLICY_DIGESTS,
            "policy_digests does not list the entries' policy digests",
            {"workflow_id": wf},
            sorted(checker.proven.policy_digests),
            sorted(stated),
        )
    if parsed.entry_count != len(parsed.entries):
        raise _fail(
            FailureKind.CHAIN_TRUNCATED,
            "the bundle holds fewer or more entries than it was exported with",
            {"workflow_id": wf},
            f"{parsed.entry_count} entries",
            f"{len(parsed.entries)} entries",
        )
    _verify_tail(parsed, logs, head, checker)
    if record.get("kind") == "WORKFLOW_COMPLETED":
        checker.proven.completed_workflows.add(wf)


def _check_inclusion(e: BundleEntry, entry_hash: bytes, log: _Log) -> None:
    size = e.inclusion.tree_size
    memo = log.memos.get(size)
    if memo is None:
        raise _fail(
            FailureKind.MISSING_CHECKPOINT,
            "the inclusion proof names a checkpoint the bundle does not hold",
            None,
            f"one of sizes {log.sizes}",
            size,
        )
    if size <= e.log_index:
        raise _fail(
            FailureKind.STALE_CHECKPOINT,
            "the checkpoint predates the entry it should cover",
            None,
            f"tree size > {e.log_index}",
            f"tree size {size}",
        )
    if not memo.verify(_sha256(_LEAF + entry_hash).digest(), e.log_index, e.inclusion.path):
        raise _fail(
            FailureKind.LOG_INCLUSION,
            "the entry is not in the signed partition log at this index",
            None,
            f"inclusion at index {e.log_index} under root {memo.root.hex()} (size {size})",
            f"path of {len(e.inclusion.path)} nodes that does not lead there",
        )


def _verify_tail(
    parsed: Bundle, logs: dict[int, _Log], last_hash: bytes, checker: _Checker
) -> None:
    tail = parsed.tail
    last = parsed.entries[-1]
    where: Where = {
        "partition": tail.partition,
        "tree_size": tail.tree_size,
        "log_index": tail.log_index,
    }
    log = logs[last.partition]
    newest = log.sizes[-1]
    if (tail.partition, tail.log_index, tail.tree_size) != (last.partition, last.log_index, newest):
        raise _fail(
            FailureKind.TAIL_PROOF_MISMATCH,
            "the tail proof does not start at the last "
            "entry or does not reach the newest checkpoint",
            where,
            f"partition {last.partition} log index {last.log_index} to size {newest}",
            f"partition {tail.partition} log index {tail.log_index} to size {tail.tree_size}",
        )
    cr = merkle.CompactRange.from_bytes(tail.log_index.to_bytes(8, "big") + b"".join(tail.prefix))
    cr.append(last_hash)
    successor: tuple[int, int] | None = None
    for j, rec in enumerate(tail.following):
        if successor is None and rec[:32] == last_hash:
            successor = (tail.log_index + 1 + j, int.from_bytes(rec[64:72], "big"))
        cr.append(_sha256(hashing.ENTRY_PREFIX + rec).digest())
    if cr.size != tail.tree_size or cr.root() != log.roots[tail.tree_size]:
        raise _fail(
            FailureKind.TAIL_PROOF_MISMATCH,
            "the log after the last entry does not reproduce the signed checkpoint",
            where,
            f"size {tail.tree_size} root {log.roots[tail.tree_size].hex()}",
            f"size {cr.size} root {cr.root().hex()}",
        )
    if successor is not None:
        raise _fail(
            FailureKind.CHAIN_TRUNCATED,
            "the signed log holds a later entry of this workflow that the bundle leaves out",
            {"partition": tail.partition, "log_index": successor[0]},
            f"no entry after chain_seq {last.chain_seq}",
            f"chain_seq {successor[1]} at log index {successor[0]}",
        )
    checker.proven.complete_as_of.append(f"{log.origin} size {tail.tree_size}")


# -- stored entries (ClickHouse) ------------------------------------------------------------


def _stored_checkpoints(
    checkpoints: Iterable[Checkpoint], partitions: Iterable[int], checker: _Checker
) -> dict[int, list[tuple[int, bytes, str]]]:
    """Verified (size, root, origin) per partition, ascending; rows must match their notes."""
    out: dict[int, dict[int, tuple[bytes, str]]] = {p: {} for p in partitions}
    for cp in checkpoints:
        if cp.partition not in out:
            continue
        where: Where = {"partition": cp.partition, "origin": cp.origin, "tree_size": cp.tree_size}
        try:
            signed = checker.open_checkpoint(cp.note)
        except _Fail as exc:
            raise exc.at(where) from None
        if (signed.origin, signed.size, signed.root_hash) != (
            cp.origin,
            cp.tree_size,
            cp.root_hash,
        ):
            raise _fail(
                FailureKind.CHECKPOINT_ROW_MISMATCH,
                "the stored checkpoint columns differ from its signed note",
                where,
                f"{signed.origin} size {signed.size} root {signed.root_hash.hex()}",
                f"{cp.origin} size {cp.tree_size} root {cp.root_hash.hex()}",
            )
        located = _origin_partition(signed.origin)
        if located is None or located[1] != cp.partition:
            raise _fail(
                FailureKind.CHECKPOINT_ORIGIN,
                "the checkpoint's origin names another partition",
                where,
                f"<base>/<topic>/{cp.partition}",
                signed.origin,
            )
        seen = out[cp.partition].get(cp.tree_size)
        if seen is not None and seen[0] != cp.root_hash:
            raise _fail(
                FailureKind.CHECKPOINT_INCONSISTENT,
                "two signed checkpoints of one size with different roots (fork)",
                where,
                seen[0].hex(),
                cp.root_hash.hex(),
            )
        origins = {o for _, o in out[cp.partition].values()}
        if origins and signed.origin not in origins:
            raise _fail(
                FailureKind.CHECKPOINT_ORIGIN,
                "checkpoints of two logs for one partition",
                where,
                sorted(origins)[0],
                signed.origin,
            )
        out[cp.partition][cp.tree_size] = (cp.root_hash, signed.origin)
    return {p: [(s, r, o) for s, (r, o) in sorted(v.items())] for p, v in out.items()}


def verify_entries(
    logs: Mapping[int, Iterable[ChainEntry]],
    checkpoints: Iterable[Checkpoint],
    *,
    registry: KeyRegistry,
    trusted_checkpoint_vkeys: Sequence[str] | None = None,
    workflow_id: str | None = None,
    check_columns: ColumnCheck | None = None,
    source: str = "entries",
) -> Report:
    """Verify stored partition logs: every leaf, every chain, every signed checkpoint root.

    ``logs`` maps each partition to *all* its entries in log order (a lazy iterable is fine);
    checkpoints of partitions not in ``logs`` are ignored. Each partition's log is rebuilt from
    recomputed entry hashes and its root compared with every signed checkpoint; all workflow
    chains are checked link by link. Entries of ``workflow_id`` (all when None) are verified in
    full: event digest from the exact bytes, decoding, the seal, and ``check_columns`` (stored
    derived columns against the decoded event). Entries past the newest checkpoint are checked
    the same way but counted as ``unanchored``: no signature covers them yet.
    """
    started = time.perf_counter()
    proven = Proven()
    vkeys_given = trusted_checkpoint_vkeys is not None
    report = Report(
        source,
        f"seal keys: auditor registry; checkpoint keys: "
        f"{'auditor checkpoint keys' if vkeys_given else 'auditor registry'}",
        None,
        proven,
    )
    try:
        vkeys = _parse_vkeys(
            trusted_checkpoint_vkeys
            if trusted_checkpoint_vkeys is not None
            else checkpoint_vkeys(registry)
        )
        checker = _Checker(registry, vkeys, proven)
        signed = _stored_checkpoints(checkpoints, logs, checker)
        with _gc_paused():
            for p, entries in logs.items():
                _verify_partition(p, entries, signed[p], checker, workflow_id, check_columns)
                checker.seals.clear()
    except _Fail as exc:
        report.failure = exc.failure
    report.elapsed_s = time.perf_counter() - started
    if proven.unanchored:
        report.warnings.append(
            f"{proven.unanchored} entries after the newest checkpoint are "
            "sealed and chained but not yet covered by a signed checkpoint"
        )
    return report


def _verify_partition(
    p: int,
    entries: Iterable[ChainEntry],
    signed: list[tuple[int, bytes, str]],
    checker: _Checker,
    workflow_id: str | None,
    check_columns: ColumnCheck | None,
) -> None:
    heads: dict[str, tuple[int, bytes]] = {}
    last_kind: dict[str, str] = {}
    policies: set[bytes] = set()
    proven = checker.proven
    cr = merkle.CompactRange()
    pending = iter(signed)
    nxt = next(pending, None)
    genesis = hashing.genesis_hash
    rows = iter(entries)
    following = next(rows, None)
    i = -1
    while following is not None:
        e, following = following, next(rows, None)
        i += 1
        wf = e.workflow_id
        if following is not None and following.log_index == e.log_index:
            raise _fail(
                FailureKind.LOG_INDEX,
                "two stored entries claim one log position",
                {"partition": p, "log_index": e.log_index},
                f"one entry at log index {e.log_index}",
                "two or more",
            )
        try:
            if e.log_index != i or e.source_partition != p:
                raise _fail(
                    FailureKind.LOG_INDEX,
                    "log entries are missing, duplicated or out of place",
                    None,
                    f"partition {p} log index {i}",
                    f"partition {e.source_partition} log index {e.log_index}",
                )
            if workflow_id is None or wf == workflow_id:
                digest, record = checker.event(e.event_bytes, e.event_digest)
                checker.bind(record, e.event_id, wf, p)
                if check_columns is not None:
                    mismatch = check_columns(e, record)
                    if mismatch is not None:
                        column, expected, found = mismatch
                        raise _fail(
                            FailureKind.COLUMN_MISMATCH,
                            f"stored column {column} differs from the signed event bytes",
                            {"column": column},
                            expected,
                            found,
                        )
                checker.seal(record, digest, e.seal_bytes, e.seal_index, e.seal_path)
                checker.note_event(record)
                policies.add(e.policy_digest)
                last_kind[wf] = record["kind"]
            seq, head = heads.get(wf) or (0, genesis(wf))
            entry = _chain_step(
                seq, head, e.chain_seq, e.prev_hash, e.event_digest, e.policy_digest, e.entry_hash
            )
        except _Fail as exc:
            raise exc.at(
                {
                    "partition": p,
                    "log_index": e.log_index,
                    "workflow_id": wf,
                    "chain_seq": e.chain_seq,
                    "event_id": e.event_id,
                }
            ) from None
        heads[wf] = (seq + 1, entry)
        cr.append_hash(_sha256(_LEAF + entry).digest())
        while nxt is not None and nxt[0] == cr.size:
            size, root, origin = nxt
            if cr.root() != root:
                raise _fail(
                    FailureKind.LOG_ROOT_MISMATCH,
                    "the stored log does not reproduce the signed checkpoint",
                    {"partition": p, "origin": origin, "tree_size": size},
                    root.hex(),
                    cr.root().hex(),
                )
            proven.checkpoints.append(f"{origin} size {size} root {root.hex()}")
            nxt = next(pending, None)
    if nxt is not None:
        size, root, origin = nxt
        raise _fail(
            FailureKind.LOG_TRUNCATED,
            "a signed checkpoint covers entries the store no longer holds",
            {"partition": p, "origin": origin, "tree_size": size},
            f"at least {size} entries",
            f"{cr.size} entries",
        )
    proven.log_entries += cr.size
    proven.policy_digests.update(d.hex() for d in policies)
    if signed:
        proven.unanchored += cr.size - signed[-1][0]
        proven.complete_as_of.append(f"{signed[-1][2]} size {signed[-1][0]}")
    else:
        proven.unanchored += cr.size
    for wf, kind in last_kind.items():
        if kind == "WORKFLOW_COMPLETED":
            proven.completed_workflows.add(wf)
