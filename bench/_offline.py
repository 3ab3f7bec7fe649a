"""The SDK's emitter with Kafka replaced by an in-memory log, to build benchmark inputs without a broker."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from lineage import codec
from lineage.keys import KeyRecord, KeyRegistry, Role, Signer
from lineage.policy import PolicySet
from producers.emitter import (
    BATCH_KEY_PREFIX,
    SEAL_KEY_PREFIX,
    Emitter,
    FlushReport,
    SignerLike,
    now_us,
)
from producers.gate import Gate
from producers.scenario import Emitters, Scenario
from stream_processors.records import RawRecord

SUBJECTS = (
    ("orchestrator", Role.AUTHORIZER),
    ("tool-runner", Role.EMITTER),
    ("subagents", Role.EMITTER),
)


DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "policies" / "default.toml"


class OfflineLog:
    """A topic's partitions as lists: offsets are assigned in append order, like a broker would."""

    def __init__(self, topic: str, partitions: int = 1) -> None:
        self.topic = topic
        self.partitions = partitions
        self.records: list[RawRecord] = []
        self._next = [0] * partitions

    def append(self, partition: int, key: bytes, value: bytes) -> None:
        offset = self._next[partition]
        self._next[partition] = offset + 1
        self.records.append(RawRecord(self.topic, partition, offset, key, value, 0))

    def take(self) -> list[RawRecord]:
        """The records appended since the last call (frees them here)."""
        out, self.records = self.records, []
        return out


class _NullProducer:
    """Stands in for confluent-kafka's Producer: everything is "delivered" at once."""

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class OfflineEmitter(Emitter):
    """``producers.Emitter`` unchanged except where it talks to Kafka: same encoding, numbering, seals.

    Seals are cut every ``seal_every`` events and on ``flush()``; there is no timer thread, so the
    T-ms seal never fires (the benchmarks control N exactly).
    """

    def __init__(
        self,
        *,
        log: OfflineLog,
        signer: SignerLike,
        seal_every: int = 100,
        instance: str | None = None,
        clock: Callable[[], int] = now_us,
        batch_records: bool = True,
    ) -> None:
        # Emitter.__init__ is skipped on purpose: it opens a producer and reads topic metadata.
        self.topic = log.topic
        self.signer = signer
        self.emitter_id = f"{signer.subject}#{instance or 'bench'}"
        self.seal_every = seal_every
        self.seal_ms = 10**9
        self.batch_records = batch_records
        self.max_batch_bytes = 900_000
        self.block_timeout_s = 0.0
        self.clock = clock
        self._event_schema = codec.load("execution_event")
        self._seal_schema = codec.load("seal")
        self._batch_schema = codec.load("sealed_batch")
        self._batch_key = f"{BATCH_KEY_PREFIX}{self.emitter_id}".encode()
        self._seal_key = f"{SEAL_KEY_PREFIX}{self.emitter_id}".encode()
        self._lock = threading.RLock()
        self._closed = False
        self.delivered = 0
        self.delivered_events = 0
        self.emitted = 0
        self.failed = 0
        self.errors = []
        self.fatal = None
        self._producer = _NullProducer()  # type: ignore[assignment]  # duck-typed stand-in, no broker
        self.partitions = log.partitions
        self._state = {}
        self._log = log

    def _produce(self, key: bytes, value: bytes, partition: int, events: int) -> None:
        self._log.append(partition, key, value)
        self.delivered += 1
        self.delivered_events += events

    def close(self, timeout: float = 0.0) -> FlushReport:
        report = self.flush(timeout)
        self._closed = True
        return report


class OfflineWorld:
    """Keys, registry, policy and the scenario's emitters writing to one in-memory topic."""

    def __init__(
        self,
        *,
        seal_every: int = 100,
        partitions: int = 1,
        topic: str = "bench.events",
        batch_records: bool = True,
        policy_file: str | Path = DEFAULT_POLICY,
    ) -> None:
        self.log = OfflineLog(topic, partitions)
        self.policy = PolicySet.load(policy_file)
        records: list[KeyRecord] = []
        self.signers: dict[str, Signer] = {}
        for subject, role in (*SUBJECTS, ("lineage-processor", Role.PROCESSOR)):
            signer, record = Signer.generate_ephemeral(subject, role)
            self.signers[subject] = signer
            records.append(record)
        self.registry = KeyRegistry(records)
        self.rogue, _ = Signer.generate_ephemeral("tool-runner", Role.EMITTER)

        def em(signer: Signer, name: str) -> OfflineEmitter:
            return OfflineEmitter(
                log=self.log,
                signer=signer,
                seal_every=seal_every,
                instance=name,
                batch_records=batch_records,
            )

        self.emitters = Emitters(
            em(self.signers["orchestrator"], "o"),
            em(self.signers["tool-runner"], "t"),
            em(self.signers["subagents"], "s"),
            em(self.rogue, "r"),
        )
        self.gate = Gate(self.emitters.orchestrator, self.policy, confirm_timeout_s=None)
        self.scenario = Scenario(self.emitters, self.gate)

    @property
    def all_emitters(self) -> list[Emitter]:
        e = self.emitters
        return [e.orchestrator, e.tools, e.subagents, *([e.rogue] if e.rogue else [])]

    def flush(self) -> None:
        """Seal every open batch of every emitter."""
        for e in self.all_emitters:
            e.flush(0)

    def workflows(
        self, events: int, *, budget: int = 30, misbehaviour: str | None = None
    ) -> list[RawRecord]:
        """About ``events`` events of realistic workflows, sealed, in log order."""
        start = sum(e.emitted for e in self.all_emitters)
        while sum(e.emitted for e in self.all_emitters) - start < events:
            self.scenario.workflow(budget, misbehaviour)
        self.flush()
        return self.log.take()
