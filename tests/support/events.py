"""Realistic processor inputs: an in-memory emitter that encodes and seals exactly like the SDK."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lineage import codec, hashing, merkle
from lineage.keys import KeyRecord, KeyRegistry, Role, Signer
from lineage.model import ChainEntry, EventKind, ExecutionEvent, Seal
from lineage.policy import PolicySet
from stream_processors.pipeline import PartitionPipeline, PipelineConfig
from stream_processors.records import Outputs, RawRecord
from stream_processors.state import DictStore, StateStore

TOPIC = "lineage.events"
T0 = 1_700_000_000_000_000
POLICY_FILE = Path(__file__).resolve().parents[2] / "policies" / "default.toml"

EVENT_SCHEMA = codec.load("execution_event")
SEAL_SCHEMA = codec.load("seal")
BATCH_SCHEMA = codec.load("sealed_batch")


@dataclass(frozen=True)
class Message:
    """One record an emitter produced, before the broker gives it an offset."""

    key: bytes | None
    value: bytes
    event: ExecutionEvent | None = None
    seal: Seal | None = None

    @property
    def digest(self) -> bytes:
        return hashing.event_digest(self.value)


def encode_event(event: ExecutionEvent) -> bytes:
    """The exact bytes the SDK writes for ``event``."""
    return EVENT_SCHEMA.encode(event.to_record())


def encode_seal(seal: Seal) -> bytes:
    """The exact bytes the SDK writes for ``seal``."""
    return SEAL_SCHEMA.encode(seal.to_record(), check=False)


class SimEmitter:
    """Numbers events per partition and seals every ``seal_every`` events, like producers.Emitter.

    ``event()`` returns the records produced by that call: the event, followed by a seal when the
    batch is full. Event ids default to ``<emitter_id>/<seq>`` so tests are reproducible.
    """

    def __init__(
        self,
        subject: str = "svc-a",
        instance: str = "1",
        *,
        partition: int = 0,
        topic: str = TOPIC,
        seal_every: int = 1,
        keypair: tuple[Signer, KeyRecord] | None = None,
    ) -> None:
        self.signer, self.record = keypair or Signer.generate_ephemeral(subject, Role.EMITTER)
        self.emitter_id = f"{subject}#{instance}"
        self.topic = topic
        self.partition = partition
        self.seal_every = seal_every
        self.next_seq = 0
        self.prev_seal_hash = hashing.ZERO_HASH
        self._first = 0
        self._digests: list[bytes] = []

    def build(self, workflow_id: str, **fields: Any) -> ExecutionEvent:
        """The next event of this emitter (numbered, but not yet counted as emitted)."""
        seq = self.next_seq
        values: dict[str, Any] = {
            "event_id": f"{self.emitter_id}/{seq}",
            "workflow_id": workflow_id,
            "kind": EventKind.WORKFLOW_STARTED,
            "event_time": T0 + 1000 * (seq + 1),
            "principal": "user:alice",
            "action": "workflow.step",
            "emitter_id": self.emitter_id,
            "emitter_seq": seq,
            "topic": self.topic,
            "partition": self.partition,
        }
        values.update(fields)
        return ExecutionEvent(**values)

    def event(self, workflow_id: str, *, seal: bool = True, **fields: Any) -> list[Message]:
        """Emit one event (fields override the defaults); seal if the batch is full."""
        return self.emit_bytes(self.build(workflow_id, **fields), seal=seal)

    def emit_bytes(
        self, event: ExecutionEvent, data: bytes | None = None, *, seal: bool = True
    ) -> list[Message]:
        """Emit ``event`` (or exactly ``data`` for it) under the next sequence number."""
        assert event.emitter_seq == self.next_seq, "events must be emitted in sequence"
        data = encode_event(event) if data is None else data
        msg = Message(event.workflow_id.encode(), data, event=event)
        if not self._digests:
            self._first = self.next_seq
        self._digests.append(msg.digest)
        self.next_seq += 1
        out = [msg]
        if seal and len(self._digests) >= self.seal_every:
            out += self.seal()
        return out

    def seal(self) -> list[Message]:
        """Seal the open batch (nothing if it is empty)."""
        if not self._digests:
            return []
        msg = self.make_seal(self._first, self._first + len(self._digests) - 1, self._digests)
        self.prev_seal_hash = hashing.seal_hash(msg.value)
        self._digests = []
        return [msg]

    def make_seal(
        self,
        first_seq: int,
        last_seq: int,
        digests: Sequence[bytes],
        *,
        prev_seal_hash: bytes | None = None,
        signer: Signer | None = None,
        key_id: str | None = None,
        emitter_id: str | None = None,
    ) -> Message:
        """A seal over ``digests`` for ``first_seq..last_seq`` (does not change this emitter)."""
        signer = signer or self.signer
        key_id = key_id or signer.key_id
        emitter_id = emitter_id or self.emitter_id
        prev = self.prev_seal_hash if prev_seal_hash is None else prev_seal_hash
        root = merkle.root(list(digests))
        message = hashing.seal_message(
            emitter_id, key_id, self.topic, self.partition, first_seq, last_seq, root, prev
        )
        seal = Seal(
            emitter_id=emitter_id,
            key_id=key_id,
            topic=self.topic,
            partition=self.partition,
            first_seq=first_seq,
            last_seq=last_seq,
            merkle_root=root,
            prev_seal_hash=prev,
            signature=signer.sign(message),
        )
        return Message(f"seal:{emitter_id}".encode(), encode_seal(seal), seal=seal)

    # -- workflow shapes -------------------------------------------------

    def chain(self, workflow_id: str, n: int, *, first_parent: str | None = None) -> list[Message]:
        """``n`` events of one workflow, each the causal child of the one before."""
        out: list[Message] = []
        parent = first_parent
        for i in range(n):
            kind = (
                EventKind.WORKFLOW_STARTED
                if i == 0 and parent is None
                else EventKind.EXECUTION_COMPLETED
            )
            msgs = self.event(workflow_id, kind=kind, parent_event_id=parent)
            parent = msgs[0].event.event_id  # type: ignore[union-attr]
            out += msgs
        return out


def batch_message(seal: Message, events: Sequence[Message], *, version: int = 1) -> Message:
    """The sealed-batch record the SDK writes for ``seal`` and the events it covers."""
    assert seal.seal is not None
    value = BATCH_SCHEMA.encode(
        {"format_version": version, "seal": seal.value, "events": [m.value for m in events]},
        check=False,
    )
    return Message(f"batch:{seal.seal.emitter_id}".encode(), value, seal=seal.seal)


def batched(messages: Iterable[Message]) -> list[Message]:
    """Per-event messages regrouped as the SDK's batch mode sends them: one record per seal.

    Events no seal covers yet are left out (the SDK holds them until it seals).
    """
    open_events: dict[str, list[Message]] = {}
    out: list[Message] = []
    for m in messages:
        if m.event is not None:
            open_events.setdefault(m.event.emitter_id, []).append(m)
        elif m.seal is not None:
            held = open_events.pop(m.seal.emitter_id, [])
            seal = m.seal
            covered = [
                e
                for e in held
                if e.event is not None and seal.first_seq <= e.event.emitter_seq <= seal.last_seq
            ]
            out.append(batch_message(m, covered))
    return out


def event_ids(messages: Iterable[Message]) -> list[str]:
    """The event ids among ``messages``, in order."""
    return [m.event.event_id for m in messages if m.event is not None]


def to_records(
    messages: Iterable[Message], *, topic: str = TOPIC, partition: int = 0, start: int = 0
) -> list[RawRecord]:
    """Place messages in a partition at consecutive offsets from ``start``."""
    return [
        RawRecord(topic, partition, start + i, m.key, m.value, timestamp_ms=0)
        for i, m in enumerate(messages)
    ]


def replace_value(record: RawRecord, value: bytes | None = None, **changes: Any) -> RawRecord:
    """A copy of ``record`` with another value (and any other field)."""
    if value is not None:
        changes["value"] = value
    return dataclasses.replace(record, **changes)


def registry_for(*emitters: SimEmitter, extra: Iterable[KeyRecord] = ()) -> KeyRegistry:
    """A key registry trusting every emitter's key."""
    return KeyRegistry([e.record for e in emitters] + list(extra))


@cache
def default_policy() -> PolicySet:
    """policies/default.toml, loaded once."""
    return PolicySet.load(POLICY_FILE)


@cache
def checkpoint_signer() -> Signer:
    """The processor's checkpoint key, generated once per test session."""
    return Signer.generate_ephemeral("lineage-processor", Role.PROCESSOR)[0]


def make_pipeline(
    registry: KeyRegistry,
    store: StateStore | None = None,
    *,
    config: PipelineConfig | None = None,
    topic: str = TOPIC,
    partition: int = 0,
) -> PartitionPipeline:
    """A partition pipeline with the default policy on ``store`` (a fresh DictStore by default)."""
    return PartitionPipeline(
        topic=topic,
        partition=partition,
        store=store if store is not None else DictStore(),
        registry=registry,
        policy=default_policy(),
        checkpoint_signer=checkpoint_signer(),
        config=config or PipelineConfig(),
    )


@dataclass
class Run:
    """Outputs of one or more process() calls on a pipeline, with the seek offsets returned."""

    outputs: Outputs = field(default_factory=Outputs)
    seeks: list[int | None] = field(default_factory=list)

    def add(self, result: tuple[Outputs, int | None]) -> None:
        out, seek = result
        self.outputs.extend(out)
        self.seeks.append(seek)


def run(pipeline: PartitionPipeline, *batches: Sequence[RawRecord], persist: bool = True) -> Run:
    """Process each batch in turn, persisting state after each one like the worker does."""
    result = Run()
    for batch in batches:
        result.add(pipeline.process(list(batch)))
        if persist:
            pipeline.dirty_state()
    return result


def entry_bytes(entries: Iterable[ChainEntry]) -> list[bytes]:
    """Each entry as the exact record the processor publishes."""
    schema = codec.load("chain_entry")
    return [schema.encode(e.to_record()) for e in entries]


def chain_keys(entries: Iterable[ChainEntry]) -> set[tuple[str, int, bytes]]:
    """(workflow, chain position, entry hash) of each entry."""
    return {(e.workflow_id, e.chain_seq, e.entry_hash) for e in entries}


def chained_ids(entries: Iterable[ChainEntry]) -> list[str]:
    return [e.event_id for e in entries]


def reasons(outputs: Outputs) -> list[str]:
    """Quarantine reason codes in output order."""
    return [q.reason_code for q in outputs.quarantine]


def violation_types(outputs: Outputs) -> list[str]:
    """Violation types in output order."""
    return [v.violation_type.value for v in outputs.violations]


@dataclass(frozen=True)
class WorkflowPlan:
    """One workflow to emit: which emitter writes each event, and each event's causal parent.

    ``parents[i]`` is the index of an earlier event of this workflow, or None for a root; a root
    may name a parent in another workflow through ``caller`` (workflow id, event id).
    """

    workflow_id: str
    emitters: Sequence[int]
    parents: Sequence[int | None]
    caller: tuple[str, str] | None = None

    def event_id(self, i: int) -> str:
        return f"{self.workflow_id}/{i}"


def emit_plans(
    emitters: Sequence[SimEmitter], plans: Sequence[WorkflowPlan], schedule: Iterable[int]
) -> list[list[Message]]:
    """Emit the plans' events in ``schedule`` order, then seal every emitter.

    Each schedule entry names a plan whose next event is emitted (plans already complete are
    skipped; the rest of every plan follows in plan order). Returns each emitter's records in
    the order it produced them: events, with seals after the events they cover.
    """
    streams: list[list[Message]] = [[] for _ in emitters]
    cursor = [0] * len(plans)

    def step(k: int) -> None:
        plan = plans[k]
        i = cursor[k]
        cursor[k] += 1
        parent = plan.parents[i]
        fields: dict[str, Any] = {
            "event_id": plan.event_id(i),
            "kind": EventKind.WORKFLOW_STARTED if i == 0 else EventKind.EXECUTION_COMPLETED,
        }
        if parent is not None:
            fields["parent_event_id"] = plan.event_id(parent)
        elif plan.caller is not None:
            fields["parent_workflow_id"], fields["parent_event_id"] = plan.caller
        e = plan.emitters[i]
        streams[e] += emitters[e].event(plan.workflow_id, **fields)

    for k in schedule:
        if cursor[k] < len(plans[k].parents):
            step(k)
    for k, plan in enumerate(plans):
        while cursor[k] < len(plan.parents):
            step(k)
    for e, em in enumerate(emitters):
        streams[e] += em.seal()
    return streams


def interleave(streams: Sequence[Sequence[Message]], picks: Iterable[int]) -> list[Message]:
    """Merge streams keeping each one's own order; each pick chooses among the streams not yet
    exhausted (modulo their number), and whatever is left follows in stream order."""
    cursors = [0] * len(streams)
    out: list[Message] = []
    for pick in picks:
        live = [s for s in range(len(streams)) if cursors[s] < len(streams[s])]
        if not live:
            break
        s = live[pick % len(live)]
        out.append(streams[s][cursors[s]])
        cursors[s] += 1
    for s, stream in enumerate(streams):
        out += stream[cursors[s] :]
    return out
