"""Per-item checks shared by bundle and stored-entry verification: events, seals, keys, links."""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lineage import codec, hashing, merkle, note
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
)
from lineage.model import ChainEntry, Seal
from lineage.verify.report import Failure, FailureKind, Proven, Where, time_text

MAX_CACHED_SEALS = 4096
MAX_TIME_US = 253_402_300_799_999_999
"""9999-12-31T23:59:59.999999Z: event times must lie in [0, MAX_TIME_US] (the RFC 3339 range)."""
MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
MAX_LP_BYTES = 65_535
"""A length-prefixed string of the seal message holds at most this many UTF-8 bytes."""

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,9}", re.ASCII)

ColumnCheck = Callable[[ChainEntry, Mapping[str, Any]], tuple[str, object, object] | None]
"""Compares a stored entry's derived columns with its decoded event: (column, expected, found)."""


class Fail(Exception):
    """A check failed; carries the Failure (located by the caller with ``at``)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure

    def at(self, where: Where) -> Fail:
        """The same failure, located at ``where`` (keys it already has win)."""
        f = self.failure
        return Fail(Failure(f.kind, f.message, {**where, **f.where}, f.expected, f.found))


def fail(
    kind: FailureKind,
    message: str,
    where: Where | None = None,
    expected: object = "",
    found: object = "",
) -> Fail:
    """A Fail to raise: ``expected`` and ``found`` are turned into text."""
    return Fail(Failure(kind, message, dict(where or {}), str(expected), str(found)))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cycle collector: decoding allocates many short-lived, acyclic objects."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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


def parse_vkeys(vkeys: Iterable[str]) -> list[tuple[str, bytes]]:
    """Parse trusted verifier keys; none at all is unusable input (there is no fallback)."""
    out = []
    for vkey in vkeys:
        try:
            out.append(note.parse_verifier_key(vkey))
        except (note.NoteError, ValueError) as exc:
            raise fail(FailureKind.UNUSABLE_INPUT, f"checkpoint key: {exc}") from None
    if not out:
        raise fail(
            FailureKind.UNUSABLE_INPUT,
            "no trusted checkpoint key: pass --checkpoint-key or a registry holding a "
            "processor key",
        )
    return out


def origin_partition(origin: str) -> tuple[str, int] | None:
    """(topic, partition) from ``<base>/<topic>/<partition>``; ASCII decimal digits only."""
    parts = origin.rsplit("/", 2)
    if len(parts) != 3 or not parts[0] or not parts[1] or not _DECIMAL.fullmatch(parts[2]):
        return None
    return parts[1], int(parts[2])


def chain_step(
    seq: int, head: bytes, chain_seq: int, prev: bytes, digest: bytes, policy: bytes, stated: bytes
) -> bytes:
    """Check one link of a workflow chain; returns the recomputed entry hash."""
    if chain_seq != seq:
        raise fail(
            FailureKind.CHAIN_SEQUENCE,
            "entries are missing, inserted or reordered",
            None,
            f"chain_seq {seq}",
            f"chain_seq {chain_seq}",
        )
    if prev != head:
        raise fail(
            FailureKind.CHAIN_LINK,
            "prev_hash does not link to the previous entry",
            None,
            head.hex(),
            prev.hex(),
        )
    computed = hashing.entry_hash(prev, digest, chain_seq, policy)
    if computed != stated:
        raise fail(
            FailureKind.ENTRY_HASH_MISMATCH,
            "the entry hash does not match its prev hash, digest, seq and policy",
            None,
            computed.hex(),
            stated.hex(),
        )
    return computed


@dataclass(slots=True)
class _SealInfo:
    seal: Seal
    message: bytes
    paths: merkle.PathMemo
    signature_ok: bool = False
    role: Role | None = None
    not_before_us: int = 0
    not_after_us: int = -1


def _lp_ok(text: str) -> bool:
    try:
        return len(text.encode("utf-8")) <= MAX_LP_BYTES
    except UnicodeEncodeError:
        return False


def seal_binds(record: Mapping[str, Any], s: Seal, index: int) -> bool:
    """The seal is the event's emitter's seal over its sequence number, at leaf ``index``."""
    return (
        record["emitter_seq"] == s.first_seq + index
        and record["emitter_id"] == s.emitter_id
        and record["partition"] == s.partition
        and record["topic"] == s.topic
        and index < s.count
    )


class Checker:
    """Per-entry checks with caches; they raise ``Fail`` without a location (callers add it).

    ``decisions_fail``: an AUTHORIZATION_DECISION sealed by a key without the authorizer role
    fails with AUTHORIZER_ROLE (bundles); when false it is listed in ``unauthorized_decisions``
    instead (stored logs, which also hold the attacks the processor recorded as violations).
    """

    def __init__(
        self,
        registry: KeyRegistry,
        vkeys: list[tuple[str, bytes]],
        proven: Proven,
        *,
        decisions_fail: bool = True,
    ) -> None:
        self.registry = registry
        self.vkeys = vkeys
        self.proven = proven
        self.decisions_fail = decisions_fail
        self.unauthorized_decisions: list[str] = []
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
            raise fail(
                FailureKind.CHECKPOINT_SIGNATURE,
                f"checkpoint note: {exc}",
                None,
                f"a valid signature by {names}",
                "none that verifies",
            ) from None
        try:
            cp = note.parse_checkpoint(body)
        except note.NoteError as exc:
            raise fail(
                FailureKind.CHECKPOINT_ORIGIN, f"signed note is not a checkpoint: {exc}"
            ) from None
        for name, key in self.vkeys:
            self.proven.keys.add(f"{name}+{note.key_id(name, key).hex()}")
        return cp

    # -- events --

    def event(self, data: bytes, stated_digest: bytes) -> tuple[bytes, dict[str, Any]]:
        """Recompute the event digest from the exact bytes and decode the event."""
        digest = hashing.event_digest(data)
        if digest != stated_digest:
            raise fail(
                FailureKind.EVENT_DIGEST_MISMATCH,
                "the event bytes do not hash to the digest the chain commits to",
                None,
                stated_digest.hex(),
                digest.hex(),
            )
        if data[: codec.HEADER_LEN] != self.event_header:
            raise fail(
                FailureKind.EVENT_MALFORMED,
                "not a single-object ExecutionEvent",
                None,
                self.event_header.hex(),
                data[: codec.HEADER_LEN].hex(),
            )
        try:
            record = self.event_schema.decode_body(data)
        except (LineageError, ValueError, TypeError, IndexError, OverflowError) as exc:
            raise fail(FailureKind.EVENT_MALFORMED, f"event does not decode: {exc}") from None
        t = record["event_time"]
        if not 0 <= t <= MAX_TIME_US:
            raise fail(
                FailureKind.UNUSABLE_INPUT,
                "the event time is outside the range a verifier accepts",
                None,
                f"0 <= event_time <= {MAX_TIME_US} (µs, up to 9999-12-31)",
                t,
            )
        return digest, record

    @staticmethod
    def bind(record: Mapping[str, Any], event_id: str, workflow_id: str, partition: int) -> None:
        """The decoded event must be the one the entry names, in its workflow and partition."""
        if record["event_id"] != event_id:
            raise fail(
                FailureKind.EVENT_ID_MISMATCH,
                "the event bytes hold another event id",
                None,
                event_id,
                record["event_id"],
            )
        if record["workflow_id"] != workflow_id:
            raise fail(
                FailureKind.WORKFLOW_MISMATCH,
                "the event belongs to another workflow",
                None,
                workflow_id,
                record["workflow_id"],
            )
        if record["partition"] != partition:
            raise fail(
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
            raise fail(
                FailureKind.SEAL_MALFORMED,
                "not a single-object Seal record",
                None,
                self.seal_header.hex(),
                data[: codec.HEADER_LEN].hex(),
            )
        try:
            raw = self.seal_schema.decode_body(data)
        except (LineageError, ValueError, TypeError, IndexError, OverflowError) as exc:
            raise fail(FailureKind.SEAL_MALFORMED, f"seal does not decode: {exc}") from None
        self._seal_ranges(raw)
        try:
            seal = Seal.from_record(raw)
        except (LineageError, TypeError, ValueError) as exc:
            raise fail(FailureKind.SEAL_MALFORMED, f"seal does not decode: {exc}") from None
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
        info = _SealInfo(seal, message, merkle.PathMemo(seal.count, seal.merkle_root))
        self.seals[data] = info
        return info

    @staticmethod
    def _seal_ranges(raw: Mapping[str, Any]) -> None:
        """Fields the signed seal message cannot represent make the seal unusable input."""
        problems = [
            f"{name} {raw[name]!r:.40} is not in [0, {top}]"
            for name, top in (("partition", MAX_U32), ("first_seq", MAX_U64), ("last_seq", MAX_U64))
            if not 0 <= raw[name] <= top
        ]
        problems += [
            f"{name} is not text of at most {MAX_LP_BYTES} UTF-8 bytes"
            for name in ("emitter_id", "key_id", "topic")
            if not _lp_ok(raw[name])
        ]
        if not problems and raw["first_seq"] > raw["last_seq"]:
            problems.append(f"first_seq {raw['first_seq']} > last_seq {raw['last_seq']}")
        if problems:
            raise fail(
                FailureKind.UNUSABLE_INPUT,
                "the seal holds values its signed message cannot encode",
                None,
                "fields within the seal message layout (docs/integrity.md)",
                "; ".join(problems),
            )

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
                FailureKind.KEY_EXPIRED: f"a key valid at {time_text(at_us)}",
                FailureKind.BAD_SEAL_SIGNATURE: "a valid Ed25519 signature over the seal message",
            }[kind]
            raise fail(kind, f"seal by {s.key_id}: {exc}", None, expected, s.key_id) from None
        info.role = record.role
        info.not_before_us, info.not_after_us = record.trusted_window()

    def seal(
        self,
        record: Mapping[str, Any],
        digest: bytes,
        data: bytes,
        index: int,
        path: Sequence[bytes],
    ) -> None:
        """Check the seal covers this event: binding, key trust, signature, path, signer role."""
        if not data:
            raise fail(
                FailureKind.MISSING_SEAL,
                "no seal authenticates this event",
                None,
                "a seal record",
                "none",
            )
        info = self.seals.get(data) or self._parse_seal(data)
        s = info.seal
        if not seal_binds(record, s, index):
            raise fail(
                FailureKind.SEAL_MISMATCH,
                "the seal is not the event's emitter's seal over its sequence number",
                None,
                f"{record['emitter_id']} {record['topic']}[{record['partition']}] "
                f"seq {record['emitter_seq']}",
                f"{s.emitter_id} {s.topic}[{s.partition}] seqs {s.first_seq}..{s.last_seq}"
                f" index {index}",
            )
        self._key(s, info, record["event_time"])
        if not info.paths.verify(merkle.leaf_hash(digest), index, path):
            raise fail(
                FailureKind.SEAL_INCLUSION,
                "the seal path does not lead from the event digest to the seal's root",
                None,
                s.merkle_root.hex(),
                f"path of {len(path)} nodes at index {index}",
            )
        if record["kind"] == "AUTHORIZATION_DECISION" and info.role is not Role.AUTHORIZER:
            role = info.role.value if info.role is not None else "none"
            if self.decisions_fail:
                raise fail(
                    FailureKind.AUTHORIZER_ROLE,
                    "an authorization decision sealed by a key without the authorizer role "
                    "is not an authorization",
                    None,
                    "a seal by an authorizer key",
                    f"{s.key_id} (role {role})",
                )
            self.unauthorized_decisions.append(
                f"{record['workflow_id']} event {record['event_id']}: decision sealed by "
                f"{s.key_id} (role {role}), not an authorizer"
            )
