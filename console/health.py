"""Infrastructure health: per-partition lag, rates and checkpoint age, sampled into 15-minute series."""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SAMPLE_S = 2.0
WINDOW_S = 15 * 60
STALL_S = 8.0
"""A group with lag whose committed offsets have not moved for this long is reported as stalled."""


@dataclass
class Component:
    """A part of the stack the dashboard reports on; ``probe`` returns (ok, detail)."""

    name: str
    probe: Callable[[], tuple[bool, str]]


@dataclass
class Sample:
    t: float
    ok: dict[str, bool]
    partitions: dict[int, dict[str, float]]


@dataclass
class HealthMonitor:
    """Samples Kafka watermarks and group offsets every ``SAMPLE_S`` seconds in a thread."""

    settings: Any
    bootstrap: str
    components: list[Component] = field(default_factory=list)
    interval: float = SAMPLE_S
    samples: collections.deque[Sample] = field(
        default_factory=lambda: collections.deque(maxlen=int(WINDOW_S / SAMPLE_S) + 1)
    )
    errors: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _clients: dict[str, Any] = field(default_factory=dict)
    _prev: dict[tuple[str, int], tuple[float, int]] = field(default_factory=dict)
    _moved: dict[tuple[str, int], tuple[float, int]] = field(default_factory=dict)
    _status: dict[str, tuple[bool, str]] = field(default_factory=dict)

    def start(self) -> HealthMonitor:
        self._thread = threading.Thread(target=self._run, name="console-health", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        for c in self._clients.values():
            with contextlib.suppress(Exception):
                c.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample()
            except Exception as exc:
                self.errors["monitor"] = str(exc)
            self._stop.wait(max(0.1, self.interval - (time.monotonic() - started)))

    def _client(self, group: str) -> Any:
        from confluent_kafka import Consumer

        if group not in self._clients:
            self._clients[group] = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": group,
                    "enable.auto.commit": False,
                    "socket.timeout.ms": 2000,
                }
            )
        return self._clients[group]

    def _broker_reachable(self) -> tuple[bool, str]:
        host, _, port = self.bootstrap.split(",")[0].rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), 1.0).close()
        except (OSError, ValueError) as exc:
            return False, f"cannot connect to {self.bootstrap}: {exc}"
        return True, f"listening at {self.bootstrap}"

    def sample(self) -> Sample:
        """Take one sample now (also called by tests)."""
        from confluent_kafka import TopicPartition

        now = time.time()
        status: dict[str, tuple[bool, str]] = {"broker": self._broker_reachable()}
        for comp in self.components:
            try:
                status[comp.name] = comp.probe()
            except Exception as exc:
                status[comp.name] = (False, str(exc))
        parts: dict[int, dict[str, float]] = {}
        topics = self.settings.topics
        if status["broker"][0]:
            try:
                mon = self._client(self.settings.processor_group)
                sink = self._client(self.settings.sink_group)
                n = self.settings.partitions
                high: dict[tuple[str, int], int] = {}
                for topic in (
                    topics.events,
                    topics.chain,
                    topics.violations,
                    topics.quarantine,
                    topics.checkpoints,
                ):
                    for p in range(n):
                        _, hi = mon.get_watermark_offsets(
                            TopicPartition(topic, p), timeout=2, cached=False
                        )
                        high[(topic, p)] = hi
                proc = {
                    tp.partition: tp.offset
                    for tp in mon.committed(
                        [TopicPartition(topics.events, p) for p in range(n)], timeout=3
                    )
                }
                sunk = {
                    tp.partition: tp.offset
                    for tp in sink.committed(
                        [TopicPartition(topics.chain, p) for p in range(n)], timeout=3
                    )
                }
                for p in range(n):
                    row: dict[str, float] = {}
                    row["processor_lag"] = max(0, high[(topics.events, p)] - max(proc[p], 0))
                    row["sink_lag"] = max(0, high[(topics.chain, p)] - max(sunk[p], 0))
                    row["in_per_s"] = self._rate((topics.events, p), now, high[(topics.events, p)])
                    row["out_per_s"] = self._rate((topics.chain, p), now, high[(topics.chain, p)])
                    row["violations_per_s"] = self._rate(
                        (topics.violations, p), now, high[(topics.violations, p)]
                    )
                    row["quarantine_per_s"] = self._rate(
                        (topics.quarantine, p), now, high[(topics.quarantine, p)]
                    )
                    row["checkpoint_age_s"] = self._age((topics.checkpoints, p), now, high)
                    row["processor_stalled_s"] = self._stalled(
                        ("proc", p), now, proc[p], row["processor_lag"]
                    )
                    row["sink_stalled_s"] = self._stalled(
                        ("sink", p), now, sunk[p], row["sink_lag"]
                    )
                    parts[p] = row
                self.errors.pop("kafka", None)
            except Exception as exc:
                self.errors["kafka"] = str(exc)
        for name, key in (("processor", "processor_stalled_s"), ("sink", "sink_stalled_s")):
            stalled = [p for p, r in parts.items() if r[key] >= STALL_S]
            if stalled:
                _, detail = status.get(name, (True, ""))
                status[name] = (
                    False,
                    f"no progress on partition(s) {stalled} for ≥ {STALL_S:.0f} s with lag"
                    + (f"; {detail}" if detail else ""),
                )
        sample = Sample(now, {k: v[0] for k, v in status.items()}, parts)
        with self._lock:
            self.samples.append(sample)
            self._status = status
        return sample

    def _rate(self, key: tuple[str, int], now: float, value: int) -> float:
        prev = self._prev.get(key)
        self._prev[key] = (now, value)
        if prev is None or now <= prev[0]:
            return 0.0
        return max(0.0, (value - prev[1]) / (now - prev[0]))

    def _age(self, key: tuple[str, int], now: float, high: dict[tuple[str, int], int]) -> float:
        value = high[key]
        seen = self._moved.get(key)
        if seen is None or seen[1] != value:
            self._moved[key] = (now, value)
            seen = self._moved[key]
        return now - seen[0]

    def _stalled(self, key: tuple[str, int], now: float, committed: int, lag: float) -> float:
        k = (f"stall-{key[0]}", key[1])
        seen = self._moved.get(k)
        if seen is None or seen[1] != committed or lag == 0:
            self._moved[k] = (now, committed)
            return 0.0
        return now - seen[0]

    def snapshot(self) -> dict[str, Any]:
        """Current status per component and partition, plus the 15-minute series."""
        with self._lock:
            samples = list(self.samples)
            status = dict(self._status)
        latest = samples[-1] if samples else None
        series: dict[str, Any] = {"t": [s.t for s in samples]}
        for metric in ("processor_lag", "sink_lag", "in_per_s", "out_per_s", "violations_per_s"):
            series[metric] = [sum(r[metric] for r in s.partitions.values()) for s in samples]
        for name in ("broker", "clickhouse", "processor", "sink"):
            if name in status:
                series[f"{name}_up"] = [int(s.ok.get(name, False)) for s in samples]
        return {
            "sampled_at": latest.t if latest else None,
            "interval_s": self.interval,
            "components": {
                k: {"ok": ok, "detail": detail} for k, (ok, detail) in sorted(status.items())
            },
            "partitions": [
                {"partition": p, **{k: round(v, 2) for k, v in r.items()}}
                for p, r in sorted((latest.partitions if latest else {}).items())
            ],
            "errors": dict(self.errors),
            "series": series,
        }
