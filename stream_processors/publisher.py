"""Publishes a batch's outputs with confluent-kafka and waits for the broker's acknowledgement."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Producer

from lineage import codec
from lineage.config import Settings
from stream_processors import chain_rows
from stream_processors.records import Outputs

log = logging.getLogger("lineage.processor")
MAX_CONTAINER_BYTES = 700_000  # under Kafka's default 1 MB message size, with room to spare


class Publisher:
    """Publishes stage outputs with confluent-kafka and waits for the broker's acknowledgement."""

    def __init__(self, bootstrap: str, settings: Settings, *, entry_rows: bool = True) -> None:
        """``entry_rows``: chain output as row containers (``chain_rows``), one record per batch
        and partition; otherwise one ``ChainEntry`` record per entry (the earlier framing)."""
        self.topics = settings.topics
        self.entry_rows = entry_rows
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 1,
                "logger": logging.getLogger("lineage.processor.kafka"),
            }
        )
        self._entry = codec.load("chain_entry")
        self._violation = codec.load("violation")
        self._quarantine = codec.load("quarantine")
        self._checkpoint = codec.load("checkpoint")
        self._containment = codec.load("containment")
        self.failed = 0

    def _cb(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def publish(self, out: Outputs) -> None:
        p = self.producer
        if self.entry_rows:
            by_partition: dict[int, list[dict[str, Any]]] = {}
            for row in out.rows:
                by_partition.setdefault(row["source_partition"], []).append(row)
            for partition, rows in by_partition.items():
                for part in chain_rows.split(rows, MAX_CONTAINER_BYTES):
                    p.produce(
                        self.topics.chain,
                        chain_rows.encode(part),
                        key=f"rows:{partition}".encode(),
                        partition=partition,
                        on_delivery=self._cb,
                    )
        for e in out.entries if not self.entry_rows else ():
            p.produce(
                self.topics.chain,
                self._entry.encode(e.to_record(), check=False),
                key=e.workflow_id.encode(),
                partition=e.source_partition,
                on_delivery=self._cb,
            )
        for v in out.violations:
            p.produce(
                self.topics.violations,
                self._violation.encode(v.to_record(), check=False),
                key=v.workflow_id.encode(),
                on_delivery=self._cb,
            )
        for q in out.quarantine:
            p.produce(
                self.topics.quarantine,
                self._quarantine.encode(q.to_record(), check=False),
                key=q.raw_key,
                partition=q.source_partition,
                on_delivery=self._cb,
            )
        for k in out.containments:
            p.produce(
                self.topics.control,
                self._containment.encode(k.to_record(), check=False),
                key=k.workflow_id.encode(),
                on_delivery=self._cb,
            )
        for c in out.checkpoints:
            p.produce(
                self.topics.checkpoints,
                self._checkpoint.encode(c.to_record(), check=False),
                key=str(c.partition).encode(),
                partition=c.partition,
                on_delivery=self._cb,
            )
        self.confirm()

    def confirm(self) -> None:
        """Block until every output is acknowledged; a failure stops the worker (state not advanced)."""
        while self.producer.flush(10.0):
            log.warning("outputs not yet acknowledged by the broker; waiting")
        if self.failed:
            raise RuntimeError(
                f"{self.failed} outputs were not delivered; stopping before state advances"
            )
