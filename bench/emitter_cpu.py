"""The SDK's own CPU per event, without the scenario generator: ``python -m bench.emitter_cpu``.

Runs ``producers.Emitter`` unchanged except for the Kafka client, which is replaced by one that
accepts records and does nothing (librdkafka's own cost per record is the broker client's, paid
once per batch with sealed-batch records). The arguments of every ``emit()`` are built before the
clock starts, so what is measured is the SDK: validation, encoding, digest, numbering, sealing.

``--compare`` measures the reference path in the same run as well (``Emitter(reference_encoding=True)``:
fastavro validates and writes every event, ``lineage.ids.uuid7``, murmur2 per event), the SDK's
per-event path before the direct writer; both send the same bytes.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace
from typing import Any

from lineage.keys import Role, Signer
from lineage.model import EventKind, Runtime
from producers import emitter as emitter_module

RT = Runtime(host="node-1", image_digest="sha256:" + "ab" * 32)


class _NullProducer:
    """Takes records, delivers nothing, costs nothing: confluent-kafka's place in the SDK."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.records = 0

    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = SimpleNamespace(partitions=dict.fromkeys(range(4)), error=None)
        return SimpleNamespace(topics={topic: meta})

    def produce(self, topic: str, **kw: Any) -> None:
        self.records += 1

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class _CountingSigner:
    """The emitter's signer, counting signatures (the SDK sees the same interface)."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.key_id = signer.key_id
        self.subject = signer.subject
        self.count = 0

    def sign(self, message: bytes) -> bytes:
        self.count += 1
        return self.signer.sign(message)


def _arguments(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        wf = f"wf-{i // 25:06d}"
        out.append(
            {
                "workflow_id": wf,
                "kind": EventKind.RESOURCE_ACCESS if i % 25 else EventKind.WORKFLOW_STARTED,
                "principal": "agent:planner",
                "action": "tool.call:search",
                "resource": "web:search",
                "agent_id": "agent:planner",
                "parent_event_id": None,
                "runtime": RT,
                "trace_id": "0af7651916cd43dd8448eb211c80319c",
                "span_id": "b7ad6b7169203331",
                "attributes": {"step": str(i % 25)},
            }
        )
    return out


def measure(
    events: int, seal_every: int, batch_records: bool, reference: bool = False
) -> dict[str, Any]:
    """CPU µs per event of ``Emitter.emit`` (sealing included) over ``events`` events."""
    module: Any = emitter_module  # the Kafka client is swapped for the run, then put back
    real = module.Producer
    module.Producer = _NullProducer
    try:
        signer, _ = Signer.generate_ephemeral("bench-emitter", Role.EMITTER)
        counting = _CountingSigner(signer)
        em = emitter_module.Emitter(
            bootstrap="unused:9092",
            topic="lineage.events",
            signer=counting,
            seal_every=seal_every,
            seal_ms=10**9,
            batch_records=batch_records,
            reference_encoding=reference,
        )
        args = _arguments(events)
        t0 = time.process_time()
        for a in args:
            em.emit(**a)
        em.seal_all()
        cpu = time.process_time() - t0
        t1 = time.process_time()
        for _ in range(200):
            signer.sign(b"x" * 180)
        sign_us = (time.process_time() - t1) / 200 * 1e6
        producer: Any = em._producer
        records = producer.records
        em.close(0)
    finally:
        module.Producer = real
    signs = [counting.count]
    per_event = cpu / events * 1e6
    return {
        "events": events,
        "seal_every": seal_every,
        "batch_records": batch_records,
        "path": "reference" if reference else "sdk",
        "records": records,
        "signatures": signs[0],
        "us_per_event": round(per_event, 1),
        "us_per_signature": round(sign_us, 1),
        "us_per_event_without_signatures": round(per_event - signs[0] * sign_us / events, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.emitter_cpu", description=__doc__)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--seal-every", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--compare", action="store_true", help="also measure the reference (fastavro) path"
    )
    args = ap.parse_args(argv)
    paths = (False, True) if args.compare else (False,)
    results = [
        min(
            (measure(args.events, args.seal_every, batch, ref) for _ in range(3)),
            key=lambda r: r["us_per_event"],
        )
        for ref in paths
        for batch in (True, False)
    ]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        framing = "sealed batches" if r["batch_records"] else "record per event"
        print(
            f"{r['path']:>9} {framing:>16}: {r['us_per_event']:6.1f} µs/event CPU "
            f"({r['us_per_event_without_signatures']:.1f} without the "
            f"{r['signatures']} signatures at {r['us_per_signature']:.0f} µs), "
            f"{r['records']} records for {r['events']} events, N = {r['seal_every']}"
        )


if __name__ == "__main__":
    main()
