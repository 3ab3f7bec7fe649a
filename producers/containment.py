"""Watches lineage.control so a gate refuses further executions of contained workflows."""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import Consumer

from lineage import codec
from lineage.model import Containment


class ContainmentWatcher:
    """Background consumer of containment records; ``is_contained(workflow_id)`` is thread-safe."""

    def __init__(
        self, bootstrap: str, control_topic: str, *, group: str, session_timeout_ms: int = 6000
    ) -> None:
        self._contained: dict[str, Containment] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._schema = codec.load("containment")
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": 1000,
                "fetch.wait.max.ms": 50,
            }
        )
        self._consumer.subscribe([control_topic])
        self._thread = threading.Thread(target=self._run, name="containment-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self._consumer.consume(100, 0.2):
                value = m.value()
                if m.error() or value is None:
                    continue
                self.record(Containment.from_record(self._schema.decode_body(value)))

    def record(self, c: Containment) -> None:
        with self._lock:
            self._contained.setdefault(c.workflow_id, c)

    def is_contained(self, workflow_id: str) -> Containment | None:
        with self._lock:
            return self._contained.get(workflow_id)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()

    def __enter__(self) -> ContainmentWatcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
