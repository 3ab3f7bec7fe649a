"""One input partition's pipeline: decode → authenticate → order → chain → policy → log, with state."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from lineage import binding, codec
from lineage.errors import DecodeError
from lineage.keys import KeyRegistry, Signer
from lineage.model import (
    ChainEntry,
    Checkpoint,
    Containment,
    EventKind,
    ExecutionEvent,
    QuarantineReason,
    QuarantineRecord,
    Severity,
    Violation,
    ViolationType,
)
from lineage.policy import PolicySet
from stream_processors import chain, chain_rows, order, placement
from stream_processors.authenticate import Authenticator, AuthResult
from stream_processors.checkpoint import PartitionLog, origin_for
from stream_processors.decode import Decoder, Limits
from stream_processors.findings import integrity_violation, quarantine_event, violation_id
from stream_processors.findings_log import STATE_KEY as FINDINGS_KEY
from stream_processors.findings_log import FindingsLog
from stream_processors.order import OrderLimits
from stream_processors.policy_stage import PolicyStage, WorkflowPolicyState
from stream_processors.records import DecodedBatch, DecodedSeal, Outputs, PendingEvent, RawRecord
from stream_processors.state import EmitterState, PartitionMeta, StateStore, WorkflowState

EXPIRY_EVERY = 64
CONTAINED = "CONTAINED"


@dataclass(frozen=True)
class PipelineConfig:
    limits: Limits = field(default_factory=Limits)
    order_limits: OrderLimits = field(default_factory=OrderLimits)
    window_offsets: int = 20_000
    checkpoint_every_s: float = 2.0
    origin_base: str = "lineage.local"
    checkpoint_key_name: str = "lineage-processor"
    max_unsealed_per_emitter: int = 10_000
    cache_workflows: int = 10_000
    # A completed workflow keeps only its chain head (and policy state) once this many input
    # offsets passed its WORKFLOW_COMPLETED: state then tracks open workflows, not history.
    completed_grace_offsets: int = 1_000
    partitions: int | None = None
    """The input topic's partition count: events outside their workflow's partition are refused,
    and every checkpoint signs the count (lineage.binding). None: neither (older behaviour)."""


def _decode_event(data: bytes) -> ExecutionEvent:
    return ExecutionEvent.from_record(codec.load("execution_event").decode_body(data))


class PartitionPipeline:
    """Deterministic processing of one partition; state goes to and comes from a StateStore."""

    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        store: StateStore,
        registry: KeyRegistry,
        policy: PolicySet,
        checkpoint_signer: Signer,
        config: PipelineConfig = PipelineConfig(),
        start_offset: int = 0,
    ) -> None:
        """``start_offset`` is where a partition with no saved state begins: its log start offset."""
        self.topic = topic
        self.partition = partition
        self.store = store
        self.config = config
        self.policy = policy
        self.policy_digest = policy.digest
        self.policy_hex = policy.digest_hex
        self.signer = checkpoint_signer
        self.registry = registry
        self.decoder = Decoder(config.limits)
        self.policy_stage = PolicyStage(policy, lambda _emitter: True)
        self.origin = origin_for(config.origin_base, topic, partition)
        self._prefix = f"{partition}|"
        raw_meta = store.get(self._prefix + "meta")
        self.meta = (
            PartitionMeta.from_bytes(raw_meta)
            if raw_meta
            else PartitionMeta(next_offset=start_offset)
        )
        self.log = PartitionLog(self.meta.log)
        self.findings_log = FindingsLog(store.get(self._prefix + FINDINGS_KEY) or b"")
        self.emitters: dict[str, EmitterState] = {}
        self.workflows: OrderedDict[str, WorkflowState] = OrderedDict()
        self.dirty_emitters: set[str] = set()
        self.dirty_workflows: set[str] = set()
        self.shrunk: set[str] = set()  # shrunk since the last write: leave the cache once written
        self.auth = Authenticator(
            topic, partition, registry, self.policy_hex, self._emitter, policy.severity_for
        )
        self._last_checkpoint = time.monotonic()
        self.counters = self.meta.counters

    # -- state access ----------------------------------------------------

    def _emitter(self, emitter_id: str) -> EmitterState:
        st = self.emitters.get(emitter_id)
        if st is None:
            st = EmitterState.load(self.store, f"{self._prefix}e|{emitter_id}", _decode_event)
            self.emitters[emitter_id] = st
        self.dirty_emitters.add(emitter_id)
        return st

    def _workflow(self, workflow_id: str) -> WorkflowState:
        st = self.workflows.get(workflow_id)
        if st is None:
            st = WorkflowState.load(
                self.store, f"{self._prefix}w|{workflow_id}", workflow_id, _decode_event
            )
            self.workflows[workflow_id] = st
        else:
            self.workflows.move_to_end(workflow_id)
        self.dirty_workflows.add(workflow_id)
        return st

    def _policy_state(self, wf: WorkflowState) -> WorkflowPolicyState:
        return wf.rules()

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # -- processing ------------------------------------------------------

    def process(self, records: list[RawRecord]) -> tuple[Outputs, int | None]:
        """Process records of this partition in offset order.

        Returns the outputs and, when an offset was skipped by the consumer, the offset to seek
        back to (the rest of the batch is left unprocessed so nothing is passed over). Every
        violation is appended to the partition's findings log; its id names its position.
        """
        out, seek = self._process(records)
        out.violations, out.containments = self.findings_log.record(
            out.violations, out.containments
        )
        return out, seek

    def _process(self, records: list[RawRecord]) -> tuple[Outputs, int | None]:
        out = Outputs()
        for raw in records:
            if raw.offset < self.meta.next_offset:
                self._count("replayed")
                continue
            if raw.offset > self.meta.next_offset:
                self._count("offset_gaps")
                return out, self.meta.next_offset
            self.meta.next_offset = raw.offset + 1
            self._process_one(raw, out)
            if raw.offset % EXPIRY_EVERY == 0:
                self._expire(raw.offset, out)
        return out, None

    def _process_one(self, raw: RawRecord, out: Outputs) -> None:
        self._count("records")
        try:
            decoded = self.decoder.decode(raw)
        except DecodeError as exc:
            self._count("quarantined")
            out.quarantine.append(
                QuarantineRecord(
                    reason_code=QuarantineReason(exc.code),
                    reason=str(exc),
                    raw_value=raw.value or b"",
                    source_topic=raw.topic,
                    source_partition=raw.partition,
                    source_offset=raw.offset,
                    raw_key=raw.key,
                )
            )
            return
        if isinstance(decoded, DecodedBatch):
            self._count("batches")
            for data, code, reason in decoded.rejected:
                self._count("quarantined")
                out.quarantine.append(
                    QuarantineRecord(
                        reason_code=QuarantineReason(code),
                        reason=reason,
                        raw_value=data,
                        source_topic=raw.topic,
                        source_partition=raw.partition,
                        source_offset=raw.offset,
                        raw_key=raw.key,
                    )
                )
            for p in decoded.events:
                self._count("events")
                self._take(self.auth.on_event(p), out)
            self._on_seal(decoded.seal, out)
        elif isinstance(decoded, DecodedSeal):
            self._on_seal(decoded, out)
        else:
            self._count("events")
            res = self.auth.on_event(decoded)
            self._take(res, out)
            st = self.emitters[decoded.event.emitter_id]
            if len(st.pending) > self.config.max_unsealed_per_emitter:
                oldest = min(p.offset for p in st.pending.values())
                self._take(self.auth.expire(st, oldest + 1), out)
            self._note_pending(decoded.event.emitter_id)

    def _on_seal(self, decoded: DecodedSeal, out: Outputs) -> None:
        self._count("seals")
        res = self.auth.on_seal(decoded)
        self._take(res, out)
        self._note_pending(decoded.seal.emitter_id)
        for p in res.released:
            self._admit(p, out)

    def _note_pending(self, emitter_id: str) -> None:
        st = self.emitters[emitter_id]
        listed = emitter_id in self.meta.pending_emitters
        if st.pending and not listed:
            self.meta.pending_emitters.append(emitter_id)
        elif not st.pending and listed:
            self.meta.pending_emitters.remove(emitter_id)

    def _note_waiting(self, wf: WorkflowState) -> None:
        listed = wf.workflow_id in self.meta.waiting_workflows
        if wf.waiting and not listed:
            self.meta.waiting_workflows.append(wf.workflow_id)
        elif not wf.waiting and listed:
            self.meta.waiting_workflows.remove(wf.workflow_id)

    def _contain(self, violations: list[Violation], out: Outputs) -> None:
        """Integrity failures are critical too: they contain their workflow like policy findings do."""
        if not self.policy.critical_contains:
            return
        for v in violations:
            if (
                v.severity is not Severity.CRITICAL
                or not v.workflow_id
                or v.workflow_id.startswith("emitter:")
            ):
                continue
            ps = self._policy_state(self._workflow(v.workflow_id))
            if ps.contained:
                continue
            ps.contained = True
            ps.contained_by = v.violation_type.value
            ps.contained_at = v.event_id
            out.containments.append(
                Containment(
                    workflow_id=v.workflow_id,
                    violation_id=v.violation_id,
                    violation_type=v.violation_type.value,
                    event_id=v.event_id or "",
                    policy_digest=self.policy_hex,
                    source_partition=self.partition,
                    source_offset=v.source_offset,
                )
            )

    def _take(self, res: AuthResult, out: Outputs) -> None:
        self._contain(res.violations, out)
        out.violations += res.violations
        out.quarantine += res.quarantine
        if res.quarantine:
            self._count("quarantined", len(res.quarantine))
        if res.duplicates:
            self._count("duplicates", res.duplicates)

    def _admit(self, p: PendingEvent, out: Outputs) -> None:
        misplaced = placement.misplaced(p.event, self.partition, self.config.partitions)
        if misplaced is not None:
            self._reject(p, placement.VIOLATION, placement.REASON, placement.RULE, misplaced, out)
            return
        wf = self._workflow(p.event.workflow_id)
        before = len(wf.waiting)
        before_bytes = sum(w.size for w in wf.waiting)
        adm = order.offer(wf, p)
        if adm.duplicates:
            self._count("duplicates", len(adm.duplicates))
        for bad, reason in adm.conflicts:
            self._reject(
                bad,
                ViolationType.DUPLICATE_CONFLICT,
                "DUPLICATE_CONFLICT",
                "equivocation",
                reason,
                out,
            )
        for ready in adm.ready:
            self._commit(wf, ready, out)
        self.meta.counters["waiting"] = (
            self.meta.counters.get("waiting", 0) + len(wf.waiting) - before
        )
        self._count("waiting_bytes", sum(w.size for w in wf.waiting) - before_bytes)
        self._note_waiting(wf)
        self._enforce_bounds(wf, out)

    def _reject(
        self, p: PendingEvent, vtype: ViolationType, code: str, rule: str, reason: str, out: Outputs
    ) -> None:
        self._count("quarantined")
        v = integrity_violation(
            vtype,
            rule=rule,
            explanation=reason,
            workflow_id=p.event.workflow_id,
            partition=self.partition,
            offset=p.offset,
            event_time=p.event.event_time,
            policy_digest=self.policy_hex,
            event_id=p.event.event_id,
            severity=self.policy.severity_for(vtype),
        )
        self._contain([v], out)
        out.violations.append(v)
        out.quarantine.append(quarantine_event(p, self.topic, self.partition, code, reason))

    def _commit(self, wf: WorkflowState, p: PendingEvent, out: Outputs) -> None:
        seq, prev, entry_hash = chain.link(wf, p.digest, self.policy_digest)
        ps = self._policy_state(wf)
        contained_before = ps.contained
        findings = self.policy_stage.check(p.event, ps, authorizer_trusted=p.authorizer)
        log_index = self.log.append(entry_hash)
        entry = ChainEntry(
            workflow_id=wf.workflow_id,
            chain_seq=seq,
            event_id=p.event.event_id,
            event_digest=p.digest,
            prev_hash=prev,
            entry_hash=entry_hash,
            policy_digest=self.policy_digest,
            event_bytes=p.data,
            source_partition=self.partition,
            source_offset=p.offset,
            log_index=log_index,
            seal_bytes=p.seal_bytes,
            seal_index=p.seal_index,
            seal_path=p.seal_path,
            flags=(CONTAINED,) if contained_before else (),
        )
        out.entries.append(entry)
        out.rows.append(chain_rows.entry_record(entry, p.event))
        if p.event.kind is EventKind.WORKFLOW_COMPLETED:
            self.meta.completed.append((p.offset, wf.workflow_id))
        self._count("chained")
        for f in findings:
            out.violations.append(
                Violation(
                    violation_id=violation_id(
                        f.violation_type,
                        wf.workflow_id,
                        p.event.event_id,
                        self.partition,
                        p.offset,
                        f.rule,
                    ),
                    violation_type=f.violation_type,
                    rule=f.rule,
                    severity=f.severity,
                    workflow_id=wf.workflow_id,
                    policy_digest=self.policy_hex,
                    explanation=f.explanation,
                    source_partition=self.partition,
                    source_offset=p.offset,
                    event_time=p.event.event_time,
                    event_id=p.event.event_id,
                    related_event_ids=tuple(f.related_event_ids),
                )
            )
        if findings:
            self._count("violations", len(findings))
        if ps.contained and not contained_before:
            cause = next((v for v in out.violations[::-1] if v.event_id == p.event.event_id), None)
            out.containments.append(
                Containment(
                    workflow_id=wf.workflow_id,
                    violation_id=cause.violation_id if cause else "",
                    violation_type=cause.violation_type.value if cause else "",
                    event_id=p.event.event_id,
                    policy_digest=self.policy_hex,
                    source_partition=self.partition,
                    source_offset=p.offset,
                )
            )

    def _enforce_bounds(self, wf: WorkflowState, out: Outputs) -> None:
        lim = self.config.order_limits
        while len(wf.waiting) > lim.max_events_per_workflow:
            self._orphan(wf, wf.waiting[0], "the workflow's reorder buffer is full", out)
        while (
            self.meta.counters.get("waiting", 0) > lim.max_events_per_partition
            or self.meta.counters.get("waiting_bytes", 0) > lim.max_bytes_per_partition
        ):
            oldest = self._oldest_waiting()
            if oldest is None:
                break
            self._orphan(oldest[0], oldest[1], "the partition's reorder buffer is full", out)

    def _oldest_waiting(self) -> tuple[WorkflowState, PendingEvent] | None:
        # Events of one sealed batch share an offset: (emitter, seq) breaks the tie, so the choice
        # never depends on the order of waiting_workflows in memory (a restart reads it sorted).
        best: tuple[WorkflowState, PendingEvent] | None = None
        best_key: tuple[int, str, int] | None = None
        for wid in self.meta.waiting_workflows:
            wf = self._workflow(wid)
            for p in wf.waiting:
                key = (p.offset, p.event.emitter_id, p.event.emitter_seq)
                if best_key is None or key < best_key:
                    best, best_key = (wf, p), key
        return best

    def _orphan(self, wf: WorkflowState, p: PendingEvent, why: str, out: Outputs) -> None:
        wf.waiting.remove(p)
        self.meta.counters["waiting"] = self.meta.counters.get("waiting", 0) - 1
        self._count("waiting_bytes", -p.size)
        self._reject(
            p,
            ViolationType.ORPHAN_EVENT,
            "ORPHAN_EVENT",
            "causal-order",
            f"parent {p.event.parent_event_id} was not chained: {why}",
            out,
        )
        self._note_waiting(wf)

    def _shrink_completed(self, offset: int) -> None:
        """Drop the causal bookkeeping of workflows completed long enough ago.

        What stays is the chain head and sequence (a late event can never restart a chain) and
        the containment; an event arriving later finds no parent and is orphaned, so the rules'
        per-event memory (authorizations, depths, fan-out, measurements) is dropped with it.
        """
        done = self.meta.completed
        cut = 0
        while cut < len(done) and done[cut][0] < offset - self.config.completed_grace_offsets:
            cut += 1
        for _, wid in done[:cut]:
            wf = self._workflow(wid)
            if wf.chained and not wf.waiting:
                ps = self._policy_state(wf)
                wf.reset(
                    WorkflowPolicyState(
                        contained=ps.contained,
                        contained_by=ps.contained_by,
                        contained_at=ps.contained_at,
                    )
                )
                self.shrunk.add(wid)
                self._count("workflows_shrunk")
        del done[:cut]

    def _expire(self, offset: int, out: Outputs) -> None:
        self._shrink_completed(offset)
        horizon = offset - self.config.window_offsets
        if horizon <= 0:
            return
        # Sorted: a restart reads these lists back sorted, and expiry order decides which
        # violation contains a workflow, so it must not depend on arrival order in memory.
        for emitter_id in sorted(self.meta.pending_emitters):
            st = self._emitter(emitter_id)
            if any(p.offset < horizon for p in st.pending.values()):
                self._take(self.auth.expire(st, horizon), out)
                self._note_pending(emitter_id)
        for wid in sorted(self.meta.waiting_workflows):
            wf = self._workflow(wid)
            for p in [p for p in wf.waiting if p.offset < horizon]:
                self._orphan(
                    wf, p, f"it did not arrive within {self.config.window_offsets} offsets", out
                )

    # -- checkpoints and state -------------------------------------------

    def maybe_checkpoint(self, *, force: bool = False) -> Checkpoint | None:
        """Sign a checkpoint when the log grew and the interval passed (or when forced)."""
        now = time.monotonic()
        if self.log.size <= self.meta.checkpoint_size:
            return None
        if not force and now - self._last_checkpoint < self.config.checkpoint_every_s:
            return None
        self._last_checkpoint = now
        self.meta.checkpoint_size = self.log.size
        return self.log.sign(
            self.origin,
            self.signer,
            self.config.checkpoint_key_name,
            self.partition,
            self.meta.next_offset,
            self._checkpoint_extensions(),
        )

    def _checkpoint_extensions(self) -> tuple[str, ...]:
        """Extension lines every checkpoint signs: the partition binding (when configured) and
        the findings log's size and root."""
        findings = (self.findings_log.checkpoint_line(),)
        if self.config.partitions is None:
            return findings
        return (binding.partitions_line(self.config.partitions), *findings)

    def dirty_state(self) -> list[tuple[str, bytes]]:
        """Serialized state changed since the last call (write to the changelog after the outputs)."""
        items: list[tuple[str, bytes]] = []
        deleted: list[str] = []
        for emitter_id in sorted(self.dirty_emitters):
            records, gone = self.emitters[emitter_id].records(f"{self._prefix}e|{emitter_id}")
            items += records
            deleted += gone
        for wid in sorted(self.dirty_workflows):
            records, gone = self.workflows[wid].records(f"{self._prefix}w|{wid}")
            items += records
            deleted += gone
        self.meta.log = self.log.to_bytes()
        items.append((self._prefix + FINDINGS_KEY, self.findings_log.to_bytes()))
        items.append((self._prefix + "meta", self.meta.to_bytes()))
        self.dirty_emitters.clear()
        self.dirty_workflows.clear()
        for key, value in items:
            self.store.put(key, value)
        for key in deleted:  # after the meta: the committed heads no longer list them
            self.store.delete(key)
        self._evict()
        return items

    def _evict(self) -> None:
        """Shrunk workflows leave the cache once written (their head stays in the table, read
        back if a late event comes); then the least recently used beyond ``cache_workflows``."""
        for wid in self.shrunk:
            self.workflows.pop(wid, None)
        self.shrunk.clear()
        while len(self.workflows) > self.config.cache_workflows:
            self.workflows.popitem(last=False)
