"""Realistic lineage test data: keys, sealed events from two emitters, a processor run, checkpoints."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lineage import codec, hashing, merkle, note
from lineage.bundle import build_bundle, leaf_record
from lineage.keys import KeyRecord, KeyRegistry, Role, Signer, key_id_for
from lineage.model import (
    ChainEntry,
    Checkpoint,
    EventKind,
    ExecutionEvent,
    Runtime,
    Seal,
    Violation,
)
from lineage.policy import REQUEST_ATTRIBUTE, PolicySet, evaluate
from producers.partitioner import partition_for
from stream_processors.pipeline import PartitionPipeline, PipelineConfig
from stream_processors.records import RawRecord
from stream_processors.state import DictStore

REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = REPO / "policies" / "default.toml"
CRITICAL_FORBIDDEN_POLICY = Path(__file__).resolve().parent / "policies" / "critical_forbidden.toml"
"""The demo's policy set with FORBIDDEN_RESOURCE raised to CRITICAL (contains the workflow)."""
TOPIC = "lineage.events"
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in µs
RUNTIME_SUBJECT = "agent-runtime"
GATE_SUBJECT = "policy-gate"
PROCESSOR_SUBJECT = "lineage-processor"
RUNTIME_ID = f"{RUNTIME_SUBJECT}#i1"
GATE_ID = f"{GATE_SUBJECT}#g1"

_EVENTS = codec.load("execution_event")
_SEALS = codec.load("seal")


def event_id_for(workflow_index: int, n: int) -> str:
    """A deterministic UUIDv7-shaped event id."""
    return f"0195{workflow_index:04x}-{n >> 12 & 0xFFFF:04x}-7{n & 0xFFF:03x}-8000-{n:012x}"


def encode_event(event: ExecutionEvent) -> bytes:
    """The exact single-object-encoded bytes an emitter would send."""
    return _EVENTS.encode(event.to_record())


def decode_event(data: bytes) -> ExecutionEvent:
    """Decode exact event bytes into the typed model."""
    return ExecutionEvent.from_record(_EVENTS.decode_body(data))


def make_seal(
    signer: Signer,
    emitter_id: str,
    partition: int,
    first_seq: int,
    digests: Sequence[bytes],
    prev_seal_hash: bytes,
    *,
    topic: str = TOPIC,
) -> bytes:
    """The exact seal record bytes an emitter produces for ``digests`` (seqs from ``first_seq``)."""
    last_seq = first_seq + len(digests) - 1
    root = merkle.root(list(digests))
    message = hashing.seal_message(
        emitter_id, signer.key_id, topic, partition, first_seq, last_seq, root, prev_seal_hash
    )
    seal = Seal(
        emitter_id=emitter_id,
        key_id=signer.key_id,
        topic=topic,
        partition=partition,
        first_seq=first_seq,
        last_seq=last_seq,
        merkle_root=root,
        prev_seal_hash=prev_seal_hash,
        signature=signer.sign(message),
    )
    return _SEALS.encode(seal.to_record(), check=False)


@dataclass
class _EmitterStream:
    """One emitter's numbering and open seal batch in one partition."""

    next_seq: int = 0
    first_seq: int = 0
    digests: list[bytes] = field(default_factory=list)
    prev_seal_hash: bytes = hashing.ZERO_HASH


@dataclass
class Dataset:
    """Everything a verifier test needs: keys, the processor's entries and signed checkpoints."""

    registry: KeyRegistry
    signers: dict[str, Signer]
    processor: Signer
    policy: PolicySet
    partitions: int
    workflows: list[str]
    entries: list[ChainEntry]
    checkpoints: list[Checkpoint]
    violations: int = 0
    violation_records: list[Violation] = field(default_factory=list)
    policy_file: Path = POLICY_FILE

    @property
    def checkpoint_vkey(self) -> str:
        """The processor's checkpoint key in C2SP verifier-key form."""
        return note.verifier_key(PROCESSOR_SUBJECT, self.processor.public_key)

    def workflow_entries(self, workflow_id: str) -> list[ChainEntry]:
        """A workflow's entries in chain order."""
        chosen = [e for e in self.entries if e.workflow_id == workflow_id]
        return sorted(chosen, key=lambda e: e.chain_seq)

    def partition_entries(self, partition: int) -> list[ChainEntry]:
        """A partition's entries in log order."""
        chosen = [e for e in self.entries if e.source_partition == partition]
        return sorted(chosen, key=lambda e: e.log_index)

    def partition_leaves(self) -> dict[int, list[bytes]]:
        """Every partition's leaf records (entry hash preimages) in log order."""
        return {
            p: [leaf_record(e) for e in self.partition_entries(p)]
            for p in sorted({e.source_partition for e in self.entries})
        }

    def partition_checkpoints(self, partition: int) -> list[Checkpoint]:
        """A partition's checkpoints, smallest first."""
        chosen = [c for c in self.checkpoints if c.partition == partition]
        return sorted(chosen, key=lambda c: c.tree_size)

    def bundle(self, workflow_id: str) -> dict[str, Any]:
        """An honest evidence bundle for one workflow."""
        return build_bundle(
            workflow_id,
            self.workflow_entries(workflow_id),
            self.partition_leaves(),
            self.checkpoints,
            self.registry,
            self.checkpoint_vkey,
            policy_sets=[self.policy_files],
            violations=self.violation_records,
        )

    @property
    def policy_files(self) -> tuple[bytes, bytes]:
        """The (TOML, Cedar) bytes of the dataset's policy set."""
        return PolicySet.files(self.policy_file)


def _workflow_events(
    w: int,
    workflow_id: str,
    steps: int,
    policy: PolicySet,
    clock: list[int],
    shape: WorkflowShape | None = None,
) -> list[tuple[str, ExecutionEvent]]:
    """(emitter id, event) pairs of one workflow; emitter seqs and partition are filled in later."""
    shape = shape or WorkflowShape()
    n = 0
    out: list[tuple[str, ExecutionEvent]] = []

    def tick() -> int:
        clock[0] += 1_000
        return clock[0]

    def add(emitter: str, kind: EventKind, parent: str | None, **extra: Any) -> str:
        nonlocal n
        eid = event_id_for(w, n)
        n += 1
        principal = f"user:{('alice', 'bob', 'carol')[w % 3]}"
        fields: dict[str, Any] = {
            "agent_id": f"agent:{('planner', 'researcher')[w % 2]}",
            "model_id": "gpt-5",
            "model_version": "2026-01",
            "trace_id": f"{w:032x}",
            "span_id": f"{n:016x}",
        }
        fields.update(extra)
        event = ExecutionEvent(
            event_id=eid,
            workflow_id=workflow_id,
            kind=kind,
            event_time=tick(),
            principal=principal,
            action=fields.pop("action", "workflow.step"),
            emitter_id=emitter,
            emitter_seq=0,
            topic=TOPIC,
            partition=0,
            parent_event_id=parent,
            **fields,
        )
        out.append((emitter, event))
        return eid

    runtime = Runtime(
        host=f"host-{w % 4}",
        image_digest="sha256:" + "ab" * 32,
        attestation_type="tpm2",
        measurement="sha256:" + "cd" * 32,
    )
    root = add(RUNTIME_ID, EventKind.WORKFLOW_STARTED, None, action="workflow.start")
    for step in range(steps):
        resource = ("crm:accounts", "search:web", "docs:handbook")[step % 3]
        action = ("tool.call:crm.read", "tool.call:search", "tool.call:docs.read")[step % 3]
        if step == 0 and shape.denied:
            action = "tool.call:delete_records"  # the default Cedar set denies it
        if step == 0 and shape.resource is not None:
            resource = shape.resource
        decision_time = clock[0] + 1_000
        decided = evaluate(
            policy,
            principal=f"user:{('alice', 'bob', 'carol')[w % 3]}",
            action=action,
            resource=resource,
            context={"step": step},
        )
        auth = add(
            RUNTIME_ID if step == 0 and shape.runtime_decides else GATE_ID,
            EventKind.AUTHORIZATION_DECISION,
            root,
            action=action,
            resource=resource,
            authorization=decided.to_authorization(expires_at=decision_time + 60_000_000),
            attributes={REQUEST_ATTRIBUTE: decided.request.decode()},
        )
        if step == 0 and shape.tamper is not None:
            emitter, event = out[-1]
            out[-1] = (emitter, shape.tamper(event))
        run = add(
            RUNTIME_ID,
            EventKind.EXECUTION_STARTED,
            auth,
            action=action,
            resource=resource,
            authorization_id=auth,
            runtime=runtime,
            input_digest="sha256:" + "01" * 32,
        )
        add(
            RUNTIME_ID,
            EventKind.RESOURCE_ACCESS,
            run,
            action=action,
            resource=resource,
            authorization_id=auth,
            runtime=runtime,
            attributes={"rows": str(10 + step)},
        )
        add(
            RUNTIME_ID,
            EventKind.EXECUTION_COMPLETED,
            run,
            action=action,
            resource=resource,
            authorization_id=auth,
            runtime=runtime,
            output_digest="sha256:" + "02" * 32,
        )
    add(RUNTIME_ID, EventKind.WORKFLOW_COMPLETED, root, action="workflow.complete")
    return out


def seeded_signer(subject: str, role: Role, seed: bytes) -> tuple[Signer, KeyRecord]:
    """A deterministic key for ``subject`` and ``role`` derived from ``seed`` (fixtures only)."""
    private = Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(seed + b"/" + subject.encode() + b"/" + role.value.encode()).digest()
    )
    public = private.public_key().public_bytes_raw()
    record = KeyRecord(key_id_for(public), public, role, subject, 0, None)
    return Signer(record.key_id, private, subject, role), record


def _signer(subject: str, role: Role, seed: bytes | None) -> tuple[Signer, KeyRecord]:
    if seed is None:
        return Signer.generate_ephemeral(subject, role)
    return seeded_signer(subject, role, seed)


@dataclass(frozen=True)
class WorkflowShape:
    """How one workflow of a dataset departs from the clean shape (for findings and replays).

    ``denied``: its first step asks for an action Cedar denies (the gate records the DENY, the
    runtime runs it anyway); ``runtime_decides``: its first decision is sealed by the runtime's
    emitter key (CRITICAL: untrusted authorizer, contains the workflow); ``tamper``: rewrites its
    first decision event before it is sealed (a lying gate with a genuine key); ``resource``:
    its first step touches this resource (e.g. a forbidden one).
    """

    denied: bool = False
    runtime_decides: bool = False
    tamper: Callable[[ExecutionEvent], ExecutionEvent] | None = None
    resource: str | None = None


def _interleave(
    streams: list[list[tuple[str, ExecutionEvent]]],
) -> Iterable[tuple[str, ExecutionEvent]]:
    longest = max((len(s) for s in streams), default=0)
    for i in range(longest):
        for s in streams:
            if i < len(s):
                yield s[i]


def build_dataset(
    *,
    workflows: int = 6,
    steps: int = 2,
    partitions: int = 2,
    seal_every: int = 4,
    checkpoint_every: int = 12,
    long_workflow_steps: int = 0,
    seed: bytes | None = None,
    bind_partitions: bool = True,
    shapes: Mapping[int, WorkflowShape] | None = None,
    policy_file: Path = POLICY_FILE,
) -> Dataset:
    """Run a real PartitionPipeline over sealed events from a runtime and a gate emitter.

    Workflows are interleaved round-robin, so each spans several checkpoints; a checkpoint is
    forced after every ``checkpoint_every`` input records and once at the end of each partition.
    ``long_workflow_steps`` adds one workflow with that many authorize/execute steps.
    ``seed`` makes the keys (hence every byte of the output) deterministic.
    ``bind_partitions`` signs the partition count into checkpoints (False: the older format).
    ``shapes`` changes workflows by index (``WorkflowShape``); ``policy_file`` is the policy set
    the gate and the processor apply.
    """
    runtime, runtime_rec = _signer(RUNTIME_SUBJECT, Role.EMITTER, seed)
    gate, gate_rec = _signer(GATE_SUBJECT, Role.AUTHORIZER, seed)
    processor, processor_rec = _signer(PROCESSOR_SUBJECT, Role.PROCESSOR, seed)
    registry = KeyRegistry([runtime_rec, gate_rec, processor_rec])
    signers = {RUNTIME_ID: runtime, GATE_ID: gate}
    policy = PolicySet.load(policy_file)

    names = [f"wf-{w:04d}" for w in range(workflows)]
    plans = [(w, names[w], steps) for w in range(workflows)]
    if long_workflow_steps:
        names.append(f"wf-long-{workflows:04d}")
        plans.append((workflows, names[-1], long_workflow_steps))
    clock = [T0]
    streams = [
        _workflow_events(w, name, s, policy, clock, (shapes or {}).get(w)) for w, name, s in plans
    ]

    records: dict[int, list[RawRecord]] = {p: [] for p in range(partitions)}
    emitters: dict[tuple[str, int], _EmitterStream] = {}

    def seal(emitter_id: str, p: int, st: _EmitterStream) -> None:
        if not st.digests:
            return
        data = make_seal(
            signers[emitter_id], emitter_id, p, st.first_seq, st.digests, st.prev_seal_hash
        )
        records[p].append(RawRecord(TOPIC, p, len(records[p]), f"seal:{emitter_id}".encode(), data))
        st.prev_seal_hash = hashing.seal_hash(data)
        st.first_seq = st.next_seq
        st.digests = []

    for emitter_id, template in _interleave(streams):
        p = partition_for(template.workflow_id.encode(), partitions)
        st = emitters.setdefault((emitter_id, p), _EmitterStream())
        record = template.to_record()
        record.update(emitter_seq=st.next_seq, partition=p)
        data = _EVENTS.encode(record)
        records[p].append(RawRecord(TOPIC, p, len(records[p]), template.workflow_id.encode(), data))
        st.digests.append(hashing.event_digest(data))
        st.next_seq += 1
        if len(st.digests) >= seal_every:
            seal(emitter_id, p, st)
    for (emitter_id, p), st in sorted(emitters.items()):
        seal(emitter_id, p, st)

    entries: list[ChainEntry] = []
    checkpoints: list[Checkpoint] = []
    violations = 0
    violation_records: list[Violation] = []
    for p in range(partitions):
        pipe = PartitionPipeline(
            topic=TOPIC,
            partition=p,
            store=DictStore(),
            registry=registry,
            policy=policy,
            checkpoint_signer=processor,
            config=PipelineConfig(partitions=partitions if bind_partitions else None),
        )
        batch = records[p]
        for start in range(0, len(batch), checkpoint_every):
            out, seek = pipe.process(batch[start : start + checkpoint_every])
            if seek is not None or out.quarantine:
                raise AssertionError(f"partition {p}: unexpected seek {seek} or {out.quarantine}")
            entries += out.entries
            violations += len(out.violations)
            violation_records += out.violations
            cp = pipe.maybe_checkpoint(force=True)
            if cp is not None:
                checkpoints.append(cp)
        cp = pipe.maybe_checkpoint(force=True)
        if cp is not None:
            checkpoints.append(cp)
    return Dataset(
        registry,
        signers,
        processor,
        policy,
        partitions,
        names,
        entries,
        checkpoints,
        violations,
        violation_records,
        policy_file,
    )


def sign_checkpoint(signer: Signer, origin: str, size: int, root: bytes) -> str:
    """A checkpoint note signed by ``signer`` under the processor's key name (to forge in tests)."""
    body = note.checkpoint_body(origin, size, root)
    return note.sign_note(body, PROCESSOR_SUBJECT, signer._private_key)
