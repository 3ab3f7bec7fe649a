"""Authenticate stage: hold each emitter's events until a seal covers them, then verify it once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lineage import hashing
from lineage.errors import IntegrityError
from lineage.keys import KeyRecord, KeyRegistry, Role
from lineage.model import QuarantineRecord, Seal, Severity, Violation, ViolationType
from stream_processors.findings import integrity_violation, quarantine_event
from stream_processors.records import DecodedSeal, PendingEvent
from stream_processors.sealproofs import root_and_paths
from stream_processors.state import EmitterState

RECENT_DIGESTS = 256  # per emitter and partition: duplicates of older events are replays


@dataclass
class AuthResult:
    released: list[PendingEvent] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    quarantine: list[QuarantineRecord] = field(default_factory=list)
    duplicates: int = 0


def emitter_subject(emitter_id: str) -> str:
    """An emitter id is ``<subject>#<instance>``; keys are issued to the subject."""
    return emitter_id.split("#", 1)[0]


class Authenticator:
    """Checks sequence numbers, seal signatures, seal chains and seal Merkle roots (fail closed)."""

    def __init__(
        self,
        topic: str,
        partition: int,
        registry: KeyRegistry,
        policy_digest: str,
        get_state: Callable[[str], EmitterState],
        severity_for: Callable[[ViolationType], Severity] = lambda _t: Severity.CRITICAL,
    ) -> None:
        self.severity_for = severity_for
        self.topic = topic
        self.partition = partition
        self.registry = registry
        self.policy_digest = policy_digest
        self.get_state = get_state

    def _violation(
        self,
        vtype: ViolationType,
        p: PendingEvent | None,
        offset: int,
        rule: str,
        explanation: str,
        workflow_id: str = "",
        event_time: int = 0,
    ) -> Violation:
        return integrity_violation(
            vtype,
            rule=rule,
            explanation=explanation,
            workflow_id=p.event.workflow_id if p else workflow_id,
            partition=self.partition,
            offset=p.offset if p else offset,
            event_time=p.event.event_time if p else event_time,
            policy_digest=self.policy_digest,
            event_id=p.event.event_id if p else None,
            severity=self.severity_for(vtype),
        )

    def _reject(
        self,
        out: AuthResult,
        events: list[PendingEvent],
        vtype: ViolationType,
        code: str,
        rule: str,
        reason: str,
    ) -> None:
        for p in events:
            out.violations.append(self._violation(vtype, p, p.offset, rule, reason))
            out.quarantine.append(quarantine_event(p, self.topic, self.partition, code, reason))

    def on_event(self, p: PendingEvent) -> AuthResult:
        out = AuthResult()
        st = self.get_state(p.event.emitter_id)
        seq = p.event.emitter_seq
        earlier = st.pending.get(seq)
        known = earlier.digest if earlier else st.recent.get(seq)
        if known is not None or seq < st.expected_seq:
            if known == p.digest:
                out.duplicates += 1
                return out
            reason = (
                f"emitter {p.event.emitter_id} seq {seq}: expected digest {known.hex()[:16]}…, found {p.digest.hex()[:16]}…"
                if known is not None
                else f"emitter {p.event.emitter_id} seq {seq} is below the next expected {st.expected_seq}"
            )
            self._reject(
                out,
                [p],
                ViolationType.DUPLICATE_CONFLICT,
                "DUPLICATE_CONFLICT",
                "equivocation",
                reason,
            )
            return out
        st.pending[seq] = p
        return out

    def on_seal(self, s: DecodedSeal) -> AuthResult:
        out = AuthResult()
        seal = s.seal
        st = self.get_state(seal.emitter_id)
        this_hash = hashing.seal_hash(s.data)
        # The range is untrusted until the signature is checked: walk what is pending, never
        # the range itself (a forged seal for 0..2**62 must cost no more than a real one).
        present = [
            st.pending[q] for q in sorted(st.pending) if seal.first_seq <= q <= seal.last_seq
        ]
        wf = present[0].event.workflow_id if present else ""
        if seal.last_seq < st.expected_seq:
            self._on_old_seal(out, s, st, this_hash)
            return out
        try:
            record = self._verify(seal, max((p.event.event_time for p in present), default=0))
        except IntegrityError as exc:
            vtype = ViolationType(getattr(exc, "code", "BAD_SIGNATURE"))
            self._drop(st, present)
            self._reject(out, present, vtype, vtype.value, "seal", f"seal by {seal.key_id}: {exc}")
            if not present:
                out.violations.append(
                    self._violation(
                        vtype,
                        None,
                        s.offset,
                        "seal",
                        str(exc),
                        workflow_id=f"emitter:{seal.emitter_id}",
                    )
                )
            return out
        if st.seen and seal.prev_seal_hash != st.prev_seal_hash:
            out.violations.append(
                self._violation(
                    ViolationType.SEQUENCE_GAP,
                    None,
                    s.offset,
                    "seal-chain",
                    f"seal {seal.first_seq}..{seal.last_seq} of {seal.emitter_id} links to {seal.prev_seal_hash.hex()[:16]}…, "
                    f"expected the previous seal {st.prev_seal_hash.hex()[:16]}…",
                    workflow_id=wf or f"emitter:{seal.emitter_id}",
                )
            )
        if seal.first_seq > st.expected_seq:
            gap = [p for q, p in sorted(st.pending.items()) if q < seal.first_seq]
            out.violations.append(
                self._violation(
                    ViolationType.SEQUENCE_GAP,
                    None,
                    s.offset,
                    "emitter-sequence",
                    f"{seal.emitter_id}: expected the next seal to start at seq {st.expected_seq}, found {seal.first_seq}",
                    workflow_id=wf or f"emitter:{seal.emitter_id}",
                )
            )
            self._drop(st, gap)
            self._reject(
                out,
                gap,
                ViolationType.UNSEALED_EVENT,
                "UNSEALED_EVENT",
                "seal",
                "no seal ever covered this event",
            )
        st.seen = True
        st.prev_seal_hash = this_hash
        st.expected_seq = seal.last_seq + 1
        self._drop(st, present)
        if len(present) != seal.count:
            first_missing = seal.first_seq + next(
                (i for i, p in enumerate(present) if p.event.emitter_seq != seal.first_seq + i),
                len(present),
            )
            reason = f"seal covers seqs {seal.first_seq}..{seal.last_seq} but {seal.count - len(present)} never arrived (first {first_missing})"
            out.violations.append(
                self._violation(
                    ViolationType.SEQUENCE_GAP,
                    None,
                    s.offset,
                    "seal",
                    reason,
                    workflow_id=wf or f"emitter:{seal.emitter_id}",
                )
            )
            self._reject(
                out, present, ViolationType.SEQUENCE_GAP, "SEAL_INCOMPLETE", "seal", reason
            )
            return out
        root, paths = root_and_paths([p.digest for p in present])
        if root != seal.merkle_root:
            self._reject(
                out,
                present,
                ViolationType.BAD_SIGNATURE,
                "DIGEST_MISMATCH",
                "seal",
                f"seal root {seal.merkle_root.hex()[:16]}… does not match the events' digests {root.hex()[:16]}…",
            )
            return out
        authorizer = record is not None and record.role is Role.AUTHORIZER
        for i, p in enumerate(present):
            p.seal_bytes = s.data
            p.seal_index = i
            p.seal_path = tuple(paths[i])
            p.authorizer = authorizer
            st.remember(p.event.emitter_seq, p.digest, RECENT_DIGESTS)
        out.released = present
        return out

    @staticmethod
    def _drop(st: EmitterState, events: list[PendingEvent]) -> None:
        for p in events:
            st.pending.pop(p.event.emitter_seq, None)

    def _verify(self, seal: Seal, at_us: int) -> KeyRecord | None:
        """Check the seal's key and signature; raises IntegrityError (with a ``code``) if bad."""
        record = self.registry.get(seal.key_id)
        role = (
            record.role
            if record and record.role in (Role.EMITTER, Role.AUTHORIZER)
            else Role.EMITTER
        )
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
        self.registry.verify(
            seal.key_id,
            message,
            seal.signature,
            role=role,
            subject=emitter_subject(seal.emitter_id),
            at_us=at_us or (record.not_before_us if record else 0),
        )
        return record

    @staticmethod
    def _released_digests(st: EmitterState, seal: Seal) -> list[bytes] | None:
        """Digests of the seal's range as released before, if all are still remembered."""
        if seal.count > len(st.recent):
            return None
        digests: list[bytes] = []
        for q in range(seal.first_seq, seal.last_seq + 1):
            digest = st.recent.get(q)
            if digest is None:
                return None
            digests.append(digest)
        return digests

    def _on_old_seal(
        self, out: AuthResult, s: DecodedSeal, st: EmitterState, this_hash: bytes
    ) -> None:
        """A seal for seqs already sealed: a redelivery, or equivocation if it is validly signed
        over other events. A seal that does not verify accuses nobody of equivocating."""
        seal = s.seal
        if this_hash == st.prev_seal_hash:
            out.duplicates += 1
            return
        emitter = f"emitter:{seal.emitter_id}"
        try:
            self._verify(seal, 0)
        except IntegrityError as exc:
            vtype = ViolationType(getattr(exc, "code", "BAD_SIGNATURE"))
            out.violations.append(
                self._violation(vtype, None, s.offset, "seal", str(exc), workflow_id=emitter)
            )
            return
        released = self._released_digests(st, seal)
        if released is not None and root_and_paths(released)[0] == seal.merkle_root:
            out.duplicates += 1  # an older seal delivered again: it commits to the same events
            return
        out.violations.append(
            self._violation(
                ViolationType.DUPLICATE_CONFLICT,
                None,
                s.offset,
                "equivocation",
                f"second seal for {seal.emitter_id} seqs {seal.first_seq}..{seal.last_seq} differs from the first",
                workflow_id=emitter,
            )
        )

    def expire(self, st: EmitterState, before_offset: int) -> AuthResult:
        """Fail closed on events that waited for a seal past the window."""
        out = AuthResult()
        stale = [p for p in st.pending.values() if p.offset < before_offset]
        for p in stale:
            del st.pending[p.event.emitter_seq]
        self._reject(
            out,
            sorted(stale, key=lambda p: (p.offset, p.event.emitter_seq)),
            ViolationType.UNSEALED_EVENT,
            "UNSEALED_EVENT",
            "seal-window",
            "no seal covered this event within the window",
        )
        return out
